package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
)

// A misspelt field in a podTemplate is refused at admission (a sync error in ArgoCD), naming the
// field, where the operator would otherwise hold the fleet Stalled; a good template is admitted.
func TestPodTemplateTyposAreRefusedAtAdmission(t *testing.T) {
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	ctx := context.Background()
	apply(t, ctx, "../../config/policy/podtemplate-policy.yaml")
	template := func(raw string) *runtime.RawExtension { return &runtime.RawExtension{Raw: []byte(raw)} }
	worker := func(raw string) *v1alpha1.AgentFleet {
		return builder.MakeAgentFleet("agents", "default").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Worker.PodTemplate = template(raw) }).Obj()
	}
	head := func(raw string) *v1alpha1.AgentFleet {
		return builder.MakeAgentFleet("agents", "default").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Head.PodTemplate = template(raw) }).Obj()
	}
	// The policy is loaded asynchronously: wait until it refuses the first case.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return apierrors.IsInvalid(k8s.Create(ctx, worker(`{"sepc":{}}`), client.DryRunAll)), nil
	})
	if err != nil {
		vap := &admissionv1.ValidatingAdmissionPolicy{}
		_ = k8s.Get(ctx, client.ObjectKey{Name: "agentfleet-podtemplate"}, vap)
		t.Fatalf("the podTemplate policy is not enforced 30 s after it was created: %v (last: %v; policy status: %+v)",
			err, k8s.Create(ctx, worker(`{"sepc":{}}`), client.DryRunAll), vap.Status)
	}
	for name, tc := range map[string]struct {
		fleet *v1alpha1.AgentFleet
		want  string // "" admitted
	}{
		"a good worker template": {fleet: worker(`{"metadata":{"labels":{"team":"a"}},"spec":{"nodeSelector":{"zone":"a"},"containers":[{"name":"ray-worker","env":[{"name":"X","value":"1"}]}]}}`)},
		"a good head template":   {fleet: head(`{"spec":{"priorityClassName":"high","initContainers":[{"name":"warm","image":"busybox"}]}}`)},
		"the template's top":     {fleet: worker(`{"sepc":{}}`), want: "spec.worker.podTemplate: unknown field(s) sepc: not in a Kubernetes PodTemplateSpec"},
		"metadata":               {fleet: worker(`{"metadata":{"lables":{"a":"b"}}}`), want: "spec.worker.podTemplate.metadata: unknown field(s) lables: not in a Kubernetes ObjectMeta"},
		"the pod spec":           {fleet: worker(`{"spec":{"nodeSelecter":{"a":"b"}}}`), want: "spec.worker.podTemplate.spec: unknown field(s) nodeSelecter: not in a Kubernetes PodSpec"},
		"a container":            {fleet: head(`{"spec":{"containers":[{"name":"ray-head","resourcs":{}}]}}`), want: "spec.head.podTemplate.spec.containers: unknown field(s) resourcs: not in a Kubernetes Container"},
		"an init container":      {fleet: worker(`{"spec":{"initContainers":[{"name":"w","imag":"x"}]}}`), want: "spec.worker.podTemplate.spec.initContainers: unknown field(s) imag"},
	} {
		t.Run(name, func(t *testing.T) {
			err := k8s.Create(ctx, tc.fleet, client.DryRunAll)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("admitted; want refused with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("refused with\n  %v\nwant a message containing\n  %s", err, tc.want)
			}
			// What admission lets through, the operator's strict decoding accepts too, and what it
			// refuses the operator refuses as well.
			if _, berr := rayspecs.RayCluster(tc.fleet, rayspecs.Inputs{}, rayspecs.Options{}); (berr != nil) != (tc.want != "") {
				t.Errorf("admission refused: %v; the operator's decoding says: %v", tc.want != "", berr)
			}
		})
	}
}
