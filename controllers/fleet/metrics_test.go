package fleet

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/internal/cost"
)

// The fleet gauges say what the status says, replace a fleet's old series when its labels change,
// and go with the fleet.
func TestFleetMetrics(t *testing.T) {
	f := testFleet(4) // 2 GPUs per worker, NVIDIA-H100-80GB-HBM3
	f.Namespace, f.Name, f.Spec.CostCenter = "metrics-test", "agents", "research"
	f.Status = v1alpha1.AgentFleetStatus{
		ReadyReplicas: 3, UpdatedReplicas: 2,
		GPUs: v1alpha1.GPUStatus{Requested: 8, Allocated: 6, Product: "NVIDIA-H100-80GB-HBM3"},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse},
			{Type: v1alpha1.ConditionProgressing, Status: metav1.ConditionTrue},
			{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionFalse},
		},
	}
	recordFleetMetrics(f, map[string]int32{"NVIDIA-H100-80GB-HBM3": 6})
	defer forgetFleetGauges(types.NamespacedName{Namespace: f.Namespace, Name: f.Name})

	// Only this test's fleet's series are looked at: envtest reconciles in this binary set others.
	for state, want := range map[string]float64{"desired": 4, "ready": 3, "updated": 2} {
		if got := testutil.ToFloat64(workersGauge.WithLabelValues(f.Namespace, f.Name, state)); got != want {
			t.Errorf("agentfleet_workers{state=%q} = %g, want %g", state, got, want)
		}
	}
	if got := testutil.ToFloat64(gpusAllocatedGauge.WithLabelValues(f.Namespace, f.Name, "research", "NVIDIA-H100-80GB-HBM3")); got != 6 {
		t.Errorf("agentfleet_gpus_allocated = %g, want 6 (the GPUs Running pods hold, not the 8 requested)", got)
	}
	for _, c := range []struct {
		typ, status string
		want        float64
	}{
		{v1alpha1.ConditionReady, "False", 1}, {v1alpha1.ConditionReady, "True", 0},
		{v1alpha1.ConditionProgressing, "True", 1}, {v1alpha1.ConditionStalled, "Unknown", 1}, {v1alpha1.ConditionStalled, "True", 0},
	} {
		if got := testutil.ToFloat64(conditionGauge.WithLabelValues(f.Namespace, f.Name, c.typ, c.status)); got != c.want {
			t.Errorf("agentfleet_fleet_condition{type=%q,status=%q} = %g, want %g", c.typ, c.status, got, c.want)
		}
	}

	// A new cost center: the old series goes, not kept beside the new one.
	f.Spec.CostCenter = "platform"
	recordFleetMetrics(f, map[string]int32{"NVIDIA-H100-80GB-HBM3": 6})
	if n := seriesOf(t, gpusAllocatedGauge, f.Namespace); n != 1 {
		t.Errorf("%d agentfleet_gpus_allocated series after the cost center changed, want 1", n)
	}

	forgetFleetGauges(types.NamespacedName{Namespace: f.Namespace, Name: f.Name})
	for name, c := range map[string]prometheus.Collector{"workers": workersGauge, "condition": conditionGauge, "gpus": gpusAllocatedGauge} {
		if n := seriesOf(t, c, f.Namespace); n != 0 {
			t.Errorf("%d %s series left after the fleet went", n, name)
		}
	}
}

// gather gathers one collector through a pedantic registry (which also checks its metrics are
// consistent).
func gather(t *testing.T, c prometheus.Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// seriesOf counts a collector's series in a namespace.
func seriesOf(t *testing.T, c prometheus.Collector, namespace string) int {
	t.Helper()
	n := 0
	for _, mf := range gather(t, c) {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == namespace {
					n++
				}
			}
		}
	}
	return n
}

// The metric names and help follow Prometheus' conventions.
func TestFleetMetricsLint(t *testing.T) {
	f := testFleet(1)
	f.Namespace, f.Name = "lint", "agents"
	recordFleetMetrics(f, map[string]int32{"NVIDIA-L4": 1})
	restartsTotal.WithLabelValues("lint", "agents", "Crashed").Add(0)
	detectionLatency.WithLabelValues("Crashed").Observe(0.5)
	tasksTotal.WithLabelValues("lint", "agents", "succeeded").Add(0)
	tokensTotal.WithLabelValues("lint", "agents", "claude-sonnet-4-5", "in").Add(0)
	defer forgetFleetGauges(types.NamespacedName{Namespace: "lint", Name: "agents"})
	meter := newGPUMeter(clocktesting.NewFakePassiveClock(time.Unix(0, 0)), nil)
	meter.observe(types.NamespacedName{Namespace: "lint", Name: "agents"}, "research", "",
		map[string]int32{"NVIDIA-L4": 1, "NVIDIA-B300": 2}, cost.DefaultPrices(), nil)
	for _, c := range []prometheus.Collector{restartsTotal, workersGauge, conditionGauge, gpusAllocatedGauge, detectionLatency, meter, tasksTotal, tokensTotal} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}
