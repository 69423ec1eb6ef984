package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// restartsTotal counts worker replacements by fleet and reason (Crashed, Stalled, Looping,
// GPUUnhealthy): bounded labels, one series per fleet and reason.
var restartsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "agentfleet_worker_restarts_total",
	Help: "Agent workers replaced by the supervisor, by fleet and reason.",
}, []string{"namespace", "fleet", "reason"})

func init() {
	metrics.Registry.MustRegister(restartsTotal)
}
