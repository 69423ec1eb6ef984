package cost

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
)

func TestBurnRate(t *testing.T) {
	fleet := func(ns, name, costCenter, product string) v1alpha1.AgentFleet {
		f := v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		f.Spec.CostCenter, f.Spec.Worker.GPUProduct = costCenter, product
		return f
	}
	pod := func(ns, fleet, node string, gpus int64, phase corev1.PodPhase) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Labels: map[string]string{v1alpha1.LabelFleet: fleet}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{gpu.Resource: *resource.NewQuantity(gpus, resource.DecimalSI)}}}}},
			Status: corev1.PodStatus{Phase: phase},
		}
	}
	prices, err := ParsePrices([]byte("currency: USD\ngpuHourly: {NVIDIA-H100-80GB-HBM3: \"3.50\", NVIDIA-L4: \"0.70\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	fleets := []v1alpha1.AgentFleet{
		fleet("a", "coders", "research", "NVIDIA-H100-80GB-HBM3"),
		fleet("a", "reviewers", "research", ""),
		fleet("b", "planners", "", ""),
	}
	pods := []corev1.Pod{
		pod("a", "coders", "h100-0", 2, corev1.PodRunning),
		pod("a", "coders", "h100-1", 2, corev1.PodRunning),
		pod("a", "coders", "", 2, corev1.PodPending), // holds nothing yet
		pod("a", "reviewers", "l4-0", 1, corev1.PodRunning),
		pod("b", "planners", "b300-0", 4, corev1.PodRunning),
		pod("c", "coders", "h100-0", 8, corev1.PodRunning), // another namespace's pod of the same name: not a's
	}
	nodes := map[string]string{"h100-0": "NVIDIA-H100-80GB-HBM3", "h100-1": "NVIDIA-H100-80GB-HBM3", "l4-0": "NVIDIA-L4", "b300-0": "NVIDIA-B300"}
	cases := map[string]Burn{
		ByFleet: {By: ByFleet, Currency: "USD", UnpricedGPUs: map[string]int32{"NVIDIA-B300": 4},
			Rows:  []BurnRow{{Group: "a/coders", GPUs: 4, PerHour: 14}, {Group: "a/reviewers", GPUs: 1, PerHour: 0.7}, {Group: "b/planners", GPUs: 4, UnpricedGPUs: 4}},
			Total: BurnRow{Group: "TOTAL", GPUs: 9, UnpricedGPUs: 4, PerHour: 14.7}},
		ByCostCenter: {By: ByCostCenter, Currency: "USD", UnpricedGPUs: map[string]int32{"NVIDIA-B300": 4},
			Rows:  []BurnRow{{Group: "research", GPUs: 5, PerHour: 14.7}, {Group: "", GPUs: 4, UnpricedGPUs: 4}},
			Total: BurnRow{Group: "TOTAL", GPUs: 9, UnpricedGPUs: 4, PerHour: 14.7}},
	}
	for by, want := range cases {
		t.Run(by, func(t *testing.T) {
			got := BurnRate(fleets, pods, nodes, prices, by)
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
				t.Errorf("burn rate (-want +got):\n%s", diff)
			}
		})
	}
}
