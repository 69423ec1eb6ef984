package fleet

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
)

// GPUPolicyVerdict is gpuPolicyVerdict, for the envtest that compares it with the admission policy.
var GPUPolicyVerdict = gpuPolicyVerdict

func TestClusterGPUs(t *testing.T) {
	headGPU := &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"name":"ray-head","resources":{"limits":{"nvidia.com/gpu":1}}}]}}`)}
	workerExtra := &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"name":"ray-worker","resources":{"limits":{"nvidia.com/gpu":3}}}]}}`)}
	for name, tc := range map[string]struct {
		fleet *v1alpha1.AgentFleet
		want  int64
	}{
		"CPU only":                       {builder.MakeAgentFleet("a", "ns").Replicas(4).Obj(), 0},
		"replicas x worker GPUs":         {builder.MakeAgentFleet("a", "ns").Replicas(4).GPUs(2, "").Obj(), 8},
		"zero replicas ask for nothing":  {builder.MakeAgentFleet("a", "ns").Replicas(0).GPUs(2, "").Obj(), 0},
		"a GPU set by hand for the head": {builder.MakeAgentFleet("a", "ns").Replicas(2).Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Head.PodTemplate = headGPU }).Obj(), 1},
		"the worker podTemplate wins": {builder.MakeAgentFleet("a", "ns").Replicas(2).GPUs(1, "").Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Worker.PodTemplate = workerExtra
		}).Obj(), 6},
	} {
		t.Run(name, func(t *testing.T) {
			rc, err := rayspecs.RayCluster(tc.fleet, rayspecs.Inputs{}, rayspecs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := clusterGPUs(rc); got != tc.want {
				t.Errorf("clusterGPUs = %d, want %d", got, tc.want)
			}
		})
	}
	if got := clusterGPUs(nil); got != 0 {
		t.Errorf("clusterGPUs(nil) = %d", got)
	}
}

func TestGPUPolicyVerdict(t *testing.T) {
	noGPUs := map[string]string{v1alpha1.LabelGPUAllowed: "false"}
	for name, tc := range map[string]struct {
		labels, annotations map[string]string
		gpus                int64
		want                string
	}{
		"no policy":                           {gpus: 64},
		"GPUs allowed explicitly":             {labels: map[string]string{v1alpha1.LabelGPUAllowed: "true"}, gpus: 8},
		"no GPUs allowed, none asked":         {labels: noGPUs},
		"no GPUs allowed, some asked":         {labels: noGPUs, gpus: 2, want: "namespace dev does not allow GPUs (label agentfleet.dev/gpu-allowed=false) and this fleet asks for 2: set spec.worker.gpus to 0 (and no nvidia.com/gpu in a podTemplate), or deploy it to a namespace that allows GPUs"},
		"under the cap":                       {annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "8"}, gpus: 8},
		"over the cap":                        {annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "8"}, gpus: 9, want: "namespace dev allows at most 8 GPUs per fleet (annotation agentfleet.dev/max-gpus) and this fleet asks for 9 (replicas x worker GPUs + head GPUs): lower spec.replicas or spec.worker.gpus, or raise the annotation"},
		"a cap of zero":                       {annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "0"}, gpus: 1, want: "namespace dev allows at most 0 GPUs per fleet"},
		"an invalid cap is an error, not 0":   {annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "eight"}, gpus: 1, want: "namespace dev has an invalid agentfleet.dev/max-gpus annotation eight: it must be a whole number of GPUs"},
		"a negative cap is invalid too":       {annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "-1"}, want: "has an invalid agentfleet.dev/max-gpus annotation -1"},
		"the label is checked before the cap": {labels: noGPUs, annotations: map[string]string{v1alpha1.AnnotationMaxGPUs: "8"}, gpus: 2, want: "does not allow GPUs"},
	} {
		t.Run(name, func(t *testing.T) {
			got := gpuPolicyVerdict("dev", tc.labels, tc.annotations, tc.gpus)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("verdict %q, want %q", got, tc.want)
			}
		})
	}
}
