package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// The fleet metrics: bounded labels (a fleet's namespace and name, and small fixed sets), one series
// per fleet and state, condition or reason. The gauges are set from the status each reconcile
// computes, so they say what was observed, and a fleet's series go with the fleet.
var (
	// restartsTotal counts worker replacements by fleet and reason (Crashed, Stalled, Looping,
	// GPUUnhealthy), as recorded in the restart ledger.
	restartsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentfleet_worker_restarts_total",
		Help: "Agent workers replaced by the supervisor, by fleet and reason.",
	}, []string{"namespace", "fleet", "reason"})

	workersGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentfleet_workers",
		Help: "Agent workers of a fleet by state: desired (declared), ready, updated (running the current template), as observed.",
	}, []string{"namespace", "fleet", "state"})

	conditionGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentfleet_fleet_condition",
		Help: "A fleet's conditions: 1 for the status each condition has, 0 for the others.",
	}, []string{"namespace", "fleet", "type", "status"})

	gpusAllocatedGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentfleet_gpus_allocated",
		Help: "GPUs held by a fleet's Running agent worker pods (observed, not requested).",
	}, []string{"namespace", "fleet", "cost_center", "gpu_product"})
)

func init() {
	metrics.Registry.MustRegister(restartsTotal, workersGauge, conditionGauge, gpusAllocatedGauge)
}

// fleetConditionTypes are the conditions reported as agentfleet_fleet_condition.
var fleetConditionTypes = []string{v1alpha1.ConditionReady, v1alpha1.ConditionProgressing, v1alpha1.ConditionDegraded,
	v1alpha1.ConditionReconciling, v1alpha1.ConditionStalled}

// recordFleetMetrics sets a fleet's gauges from its status, at every reconcile. The workers and
// condition series of a fleet are a fixed set, overwritten in place; only the GPU series, whose
// cost center and product labels can change, are replaced, so that none goes stale.
func recordFleetMetrics(f *v1alpha1.AgentFleet) {
	st := f.Status
	for state, n := range map[string]int32{"desired": f.WorkerReplicas(), "ready": st.ReadyReplicas, "updated": st.UpdatedReplicas} {
		workersGauge.WithLabelValues(f.Namespace, f.Name, state).Set(float64(n))
	}
	for _, t := range fleetConditionTypes {
		current := metav1.ConditionUnknown
		for _, c := range st.Conditions {
			if c.Type == t {
				current = c.Status
			}
		}
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if s == current {
				v = 1
			}
			conditionGauge.WithLabelValues(f.Namespace, f.Name, t, string(s)).Set(v)
		}
	}
	product := st.GPUs.Product
	if product == "" {
		product = "any"
	}
	gpusAllocatedGauge.DeletePartialMatch(prometheus.Labels{"namespace": f.Namespace, "fleet": f.Name})
	if f.Spec.Worker.GPUs > 0 {
		gpusAllocatedGauge.WithLabelValues(f.Namespace, f.Name, f.Spec.CostCenter, product).Set(float64(st.GPUs.Allocated))
	}
}

// forgetFleetGauges deletes a fleet's gauges (its restart counter stays: a counter's history is the
// point of it, and Prometheus handles a series that stops).
func forgetFleetGauges(key types.NamespacedName) {
	labels := prometheus.Labels{"namespace": key.Namespace, "fleet": key.Name}
	workersGauge.DeletePartialMatch(labels)
	conditionGauge.DeletePartialMatch(labels)
	gpusAllocatedGauge.DeletePartialMatch(labels)
}
