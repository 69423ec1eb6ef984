package fleet

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
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
		Help: "GPUs held by a fleet's Running agent worker pods (observed, not requested), by the GPU product of their nodes.",
	}, []string{"namespace", "fleet", "cost_center", "gpu_product"})

	// detectionLatency is the time from the evidence of a fault (a container's exit, a missed
	// deadline, the heartbeat reporting a loop, the GPU condition) to the replacement being recorded.
	// Replacements whose evidence has no time (a node's GPU fault) are not observed.
	detectionLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentfleet_detection_latency_seconds",
		Help:    "Time from the evidence of a worker's fault to its replacement being requested, by reason.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"reason"})

	// gpuUsage meters GPU-seconds and cost (gpucost.go).
	gpuUsage = newGPUMeter(clock.RealClock{}, fleetWindows)
	// fleetWindows is each fleet's use by minute over the last day: fleet budgets and status.usage.
	fleetWindows = usage.NewWindows()

	fleetInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentfleet_fleet_info",
		Help: "1 for each fleet, with its cost center and model: for joins with the series that lack them (tokens, tasks).",
	}, []string{"namespace", "fleet", "cost_center", "model"})
)

func init() {
	metrics.Registry.MustRegister(restartsTotal, workersGauge, conditionGauge, gpusAllocatedGauge, detectionLatency, gpuUsage, fleetInfo)
}

// fleetConditionTypes are the conditions reported as agentfleet_fleet_condition.
var fleetConditionTypes = []string{v1alpha1.ConditionReady, v1alpha1.ConditionProgressing, v1alpha1.ConditionDegraded,
	v1alpha1.ConditionReconciling, v1alpha1.ConditionStalled, v1alpha1.ConditionBudgetExceeded}

// recordFleetMetrics sets a fleet's gauges from its status and its GPU allocation by product
// (cost.Allocation; nil when the pods could not be observed), at every reconcile. The workers and condition series of a fleet are a fixed
// set, overwritten in place; only the GPU series, whose cost center and product labels can change,
// are replaced, so that none goes stale.
func recordFleetMetrics(f *v1alpha1.AgentFleet, alloc map[string]int32) {
	st := f.Status
	setFleetInfo(f)
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
	if alloc == nil {
		return // not observed in this reconcile: the last allocation stands
	}
	gpusAllocatedGauge.DeletePartialMatch(prometheus.Labels{"namespace": f.Namespace, "fleet": f.Name})
	for product, n := range alloc {
		gpusAllocatedGauge.WithLabelValues(f.Namespace, f.Name, f.Spec.CostCenter, product).Set(float64(n))
	}
}

// fleetInfoLabels are the cost center and model each fleet's agentfleet_fleet_info carries, so that
// the series is replaced only when they change: a delete and re-add at every reconcile would leave
// a scrape between the two without it.
var (
	fleetInfoMu     sync.Mutex
	fleetInfoLabels = map[types.NamespacedName][2]string{}
)

func setFleetInfo(f *v1alpha1.AgentFleet) {
	key, labels := types.NamespacedName{Namespace: f.Namespace, Name: f.Name}, [2]string{f.Spec.CostCenter, f.Spec.Model.Name}
	fleetInfoMu.Lock()
	defer fleetInfoMu.Unlock()
	if old, ok := fleetInfoLabels[key]; ok && old == labels {
		return
	}
	fleetInfo.DeletePartialMatch(prometheus.Labels{"namespace": f.Namespace, "fleet": f.Name})
	fleetInfo.WithLabelValues(f.Namespace, f.Name, labels[0], labels[1]).Set(1)
	fleetInfoLabels[key] = labels
}

// forgetFleetGauges deletes a fleet's gauges and ends its GPU use (its counters stay: a counter's
// history is the point of it, and Prometheus handles a series that stops).
func forgetFleetGauges(key types.NamespacedName) {
	labels := prometheus.Labels{"namespace": key.Namespace, "fleet": key.Name}
	workersGauge.DeletePartialMatch(labels)
	conditionGauge.DeletePartialMatch(labels)
	gpusAllocatedGauge.DeletePartialMatch(labels)
	fleetInfoMu.Lock()
	fleetInfo.DeletePartialMatch(labels)
	delete(fleetInfoLabels, key)
	fleetInfoMu.Unlock()
	gpuUsage.forget(key)
	fleetWindows.Forget(key)
}
