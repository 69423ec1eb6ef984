package cost

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentfleet/agentfleet/gpu"
)

func TestParsePrices(t *testing.T) {
	cases := map[string]struct {
		yaml    string
		want    map[string]float64
		wantErr string
	}{
		"a table":                               {yaml: "currency: EUR\ngpuHourly:\n  NVIDIA-L4: \"0.72\"\n  NVIDIA-H200: \" 4.5 \"\n", want: map[string]float64{"NVIDIA-L4": 0.72, "NVIDIA-H200": 4.5}},
		"a free GPU is priced at 0, on purpose": {yaml: "currency: USD\ngpuHourly: {Tesla-T4: \"0\"}\n", want: map[string]float64{"Tesla-T4": 0}},
		"no GPUs: every product unpriced":       {yaml: "currency: USD\n", want: map[string]float64{}},
		"no currency":                           {yaml: "gpuHourly: {NVIDIA-L4: \"0.7\"}\n", wantErr: "currency is empty"},
		"a price that is no number":             {yaml: "currency: USD\ngpuHourly: {NVIDIA-L4: cheap}\n", wantErr: `gpuHourly[NVIDIA-L4] = "cheap" is not a non-negative decimal`},
		"a negative price":                      {yaml: "currency: USD\ngpuHourly: {NVIDIA-L4: \"-1\"}\n", wantErr: `gpuHourly[NVIDIA-L4] = "-1"`},
		"an infinite price":                     {yaml: "currency: USD\ngpuHourly: {NVIDIA-L4: \"+Inf\"}\n", wantErr: `gpuHourly[NVIDIA-L4] = "+Inf"`},
		"a misspelt field":                      {yaml: "currency: USD\ngpuHourlyPrices: {NVIDIA-L4: \"1\"}\n", wantErr: `unknown field "gpuHourlyPrices"`},
		"an empty product":                      {yaml: "currency: USD\ngpuHourly: {\"\": \"1\"}\n", wantErr: "empty product name"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p, err := ParsePrices([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, product := range p.Products() {
				got[product], _ = p.GPUHour(product)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("prices (-want +got):\n%s", diff)
			}
			if _, ok := p.GPUHour("NVIDIA-B300"); ok {
				t.Error("a product not in the table is priced")
			}
		})
	}
}

func TestDefaultPrices(t *testing.T) {
	p := DefaultPrices()
	if p.Currency != "USD" {
		t.Errorf("currency %q, want USD", p.Currency)
	}
	// The local cluster's GPU products are all priced, so that its reports show cost.
	for _, product := range []string{"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"} {
		if v, ok := p.GPUHour(product); !ok || v <= 0 {
			t.Errorf("%s: %v %v, want a positive price", product, v, ok)
		}
	}
}

func TestAllocation(t *testing.T) {
	worker := func(name, node string, phase corev1.PodPhase, gpus int64) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node,
			Containers: []corev1.Container{{Name: "ray-worker"}, {Name: "sidecar"}}}, Status: corev1.PodStatus{Phase: phase}}
		if gpus > 0 {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{gpu.Resource: *resource.NewQuantity(gpus, resource.DecimalSI)}
		}
		return p
	}
	deleting := worker("d", "h100-0", corev1.PodRunning, 2)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	nodes := map[string]string{"h100-0": "NVIDIA-H100-80GB-HBM3", "l4-0": "NVIDIA-L4"}
	cases := map[string]struct {
		pods     []corev1.Pod
		declared string
		want     map[string]int32
	}{
		"Running pods, by their node's product": {
			pods: []corev1.Pod{worker("a", "h100-0", corev1.PodRunning, 2), worker("b", "h100-0", corev1.PodRunning, 2), worker("c", "l4-0", corev1.PodRunning, 1)},
			want: map[string]int32{"NVIDIA-H100-80GB-HBM3": 4, "NVIDIA-L4": 1},
		},
		"Pending, Succeeded and Failed pods hold no GPU": {
			pods: []corev1.Pod{worker("p", "", corev1.PodPending, 2), worker("s", "h100-0", corev1.PodSucceeded, 2),
				worker("f", "h100-0", corev1.PodFailed, 2)},
			want: map[string]int32{},
		},
		"a Running pod being deleted still holds its GPUs": {
			pods: []corev1.Pod{deleting},
			want: map[string]int32{"NVIDIA-H100-80GB-HBM3": 2},
		},
		"a node without the product label: the declared product": {
			pods: []corev1.Pod{worker("a", "bare-0", corev1.PodRunning, 1)}, declared: "NVIDIA-A10G",
			want: map[string]int32{"NVIDIA-A10G": 1},
		},
		"neither: unknown": {
			pods: []corev1.Pod{worker("a", "bare-0", corev1.PodRunning, 1)},
			want: map[string]int32{UnknownProduct: 1},
		},
		"CPU workers are no allocation": {
			pods: []corev1.Pod{worker("a", "h100-0", corev1.PodRunning, 0)},
			want: map[string]int32{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Allocation(tc.pods, nodes, tc.declared)); diff != "" {
				t.Errorf("allocation (-want +got):\n%s", diff)
			}
		})
	}
}

// The table config/default ships (and the chart, which `make helm` copies it into) is the
// documented default table.
func TestShippedTableIsTheDefault(t *testing.T) {
	data, err := os.ReadFile("../../config/manager/gpu-prices.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != DefaultPricesYAML {
		t.Errorf("config/manager/gpu-prices.yaml:\n%s\nwant the default table:\n%s", data, DefaultPricesYAML)
	}
}
