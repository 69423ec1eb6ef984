package fleet_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/test/builder"
)

// installGPUPolicy applies config/policy/gpu-policy.yaml to the API server, once per test binary, and
// waits (with a deadline: the API server loads policies asynchronously) until it is enforced.
func installGPUPolicy(t *testing.T, e *env) {
	t.Helper()
	data, err := os.ReadFile("../../config/policy/gpu-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var obj client.Object
		switch {
		case bytes.Contains(doc, []byte("kind: ValidatingAdmissionPolicyBinding")):
			obj = &admissionv1.ValidatingAdmissionPolicyBinding{}
		case bytes.Contains(doc, []byte("kind: ValidatingAdmissionPolicy")):
			obj = &admissionv1.ValidatingAdmissionPolicy{}
		default:
			t.Fatalf("unexpected document in gpu-policy.yaml:\n%s", doc)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("decoding %T: %v", obj, err)
		}
		if err := k8s.Create(e.ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	probe := e.namespace(map[string]string{v1alpha1.LabelGPUAllowed: "false"}, nil)
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		f := builder.MakeAgentFleet("probe", probe).GPUs(1, "").Obj()
		err := k8s.Create(ctx, f, client.DryRunAll)
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), nil
	})
	if err != nil {
		t.Fatalf("the GPU policy is not enforced 30 s after it was created: %v", err)
	}
}

// namespace makes a namespace with labels and annotations and returns its name.
func (e *env) namespace(labels, annotations map[string]string) string {
	e.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "gpu-policy-", Labels: labels, Annotations: annotations}}
	if err := k8s.Create(e.ctx, ns); err != nil {
		e.t.Fatal(err)
	}
	return ns.Name
}

// The admission policy and the operator apply the same rules with the same messages: each case is
// refused (or admitted) by the real API server exactly as the operator's verdict says.
func TestGPUPolicyAtAdmissionAgreesWithTheOperator(t *testing.T) {
	e := newEnv(t)
	installGPUPolicy(t, e)
	headGPU := &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"name":"ray-head","resources":{"limits":{"nvidia.com/gpu":"1"}}}]}}`)}
	noGPUs := map[string]string{v1alpha1.LabelGPUAllowed: "false"}
	capped := map[string]string{v1alpha1.AnnotationMaxGPUs: "8"}
	for name, tc := range map[string]struct {
		labels, annotations map[string]string
		fleet               *builder.FleetWrapper
		gpus                int64
		refused             bool
	}{
		"dev: a CPU fleet is admitted":                    {labels: noGPUs, fleet: builder.MakeAgentFleet("cpu", "").Replicas(3)},
		"dev: worker GPUs are refused":                    {labels: noGPUs, fleet: builder.MakeAgentFleet("gpu", "").Replicas(2).GPUs(1, ""), gpus: 2, refused: true},
		"dev: a GPU in the head's podTemplate is refused": {labels: noGPUs, fleet: builder.MakeAgentFleet("head", "").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Head.PodTemplate = headGPU }), gpus: 1, refused: true},
		"prod: under the cap is admitted":                 {annotations: capped, fleet: builder.MakeAgentFleet("fits", "").Replicas(4).GPUs(2, ""), gpus: 8},
		"prod: over the cap is refused":                   {annotations: capped, fleet: builder.MakeAgentFleet("big", "").Replicas(8).GPUs(2, ""), gpus: 16, refused: true},
		"prod: an invalid cap refuses":                    {annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "lots"}, fleet: builder.MakeAgentFleet("any", "").GPUs(1, ""), gpus: 1, refused: true},
		"no policy on the namespace":                      {fleet: builder.MakeAgentFleet("free", "").Replicas(8).GPUs(8, ""), gpus: 64},
	} {
		t.Run(name, func(t *testing.T) {
			ns := e.namespace(tc.labels, tc.annotations)
			f := tc.fleet.Mutate(func(f *v1alpha1.AgentFleet) { f.Namespace = ns }).Obj()
			want := fleet.GPUPolicyVerdict(ns, tc.labels, tc.annotations, tc.gpus)
			if (want != "") != tc.refused {
				t.Fatalf("the operator's verdict %q, want refused: %v", want, tc.refused)
			}
			err := k8s.Create(e.ctx, f, client.DryRunAll)
			switch {
			case !tc.refused && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused && err == nil:
				t.Fatalf("admitted; the operator would say %q", want)
			case tc.refused && !strings.Contains(err.Error(), want):
				t.Errorf("the API server says\n  %v\nthe operator says\n  %s", err, want)
			}
		})
	}
}

// A fleet stored before the policy (or past it) is held by the operator: Degraded and Stalled,
// GPUNotAllowed, and no RayCluster.
func TestOperatorHoldsAFleetThePolicyWouldRefuse(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).GPUs(1, "").Obj())
	ns := &corev1.Namespace{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Name: e.ns}, ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels[v1alpha1.LabelGPUAllowed] = "false"
	if err := k8s.Update(e.ctx, ns); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.noRayCluster("agents")
	msg := "namespace " + e.ns + " does not allow GPUs (label agentfleet.dev/gpu-allowed=false) and this fleet asks for 2"
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonGPUNotAllowed, msg)
	e.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonGPUNotAllowed, msg)

	// The label goes: the fleet runs.
	delete(ns.Labels, v1alpha1.LabelGPUAllowed)
	if err := k8s.Update(e.ctx, ns); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.rayCluster("agents")
}
