package fleet

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

// The ledger of what the agents report on their heartbeat Leases (controllers/usage): tasks by
// outcome and model tokens by direction, per fleet. It is fed by the Lease informer's events, not by
// reconciles (renewals wake no fleet: a thousand workers renewing every 10 s would be 100 reconciles
// a second), so it costs no API call, and a replaced worker's last counts come with its Lease's
// delete event.
var (
	tasksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentfleet_tasks_total",
		Help: "Tasks the agent workers of a fleet finished, by outcome (succeeded, failed), as their heartbeat Leases report them.",
	}, []string{"namespace", "fleet", "outcome"})
	tokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentfleet_tokens_total",
		Help: "Model tokens the agent workers of a fleet used, by direction (in: prompt, out: completion), as their heartbeat Leases report them.",
	}, []string{"namespace", "fleet", "model", "direction"})
)

func init() {
	metrics.Registry.MustRegister(tasksTotal, tokensTotal)
}

// watchUsage feeds the ledger from the (cached, fleet-labelled) Lease informer, on the leader only:
// the other replicas' caches run too, and would export the same counts again. The handler is added
// when this process becomes the leader; the informer then replays the Leases it holds as its initial
// list, which are a baseline (an earlier leader counted them), not counted again.
func (r *Reconciler) watchUsage(mgr ctrl.Manager) error {
	r.usage = usage.NewLedger()
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		informer, err := mgr.GetCache().GetInformer(ctx, &coordinationv1.Lease{})
		if err != nil {
			return fmt.Errorf("getting the Lease informer for the usage ledger: %w", err)
		}
		reg, err := informer.AddEventHandler(toolscache.ResourceEventHandlerDetailedFuncs{
			AddFunc:    func(o any, initial bool) { r.accountLease(ctx, o, initial, false) },
			UpdateFunc: func(_, o any) { r.accountLease(ctx, o, false, false) },
			DeleteFunc: func(o any) { r.accountLease(ctx, o, false, true) },
		})
		if err != nil {
			return fmt.Errorf("watching Leases for the usage ledger: %w", err)
		}
		<-ctx.Done()
		return informer.RemoveEventHandler(reg)
	}))
}

// accountLease adds what a heartbeat Lease's counts gained to its fleet's counters.
func (r *Reconciler) accountLease(ctx context.Context, o any, baseline, deleted bool) {
	if tomb, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	lease, ok := o.(*coordinationv1.Lease)
	if !ok {
		return
	}
	fleet := lease.Labels[v1alpha1.LabelFleet]
	if fleet == "" {
		return
	}
	var inc usage.Counts
	if deleted {
		inc = r.usage.Forget(lease, r.Clock.Now())
	} else {
		inc = r.usage.Observe(lease, baseline)
	}
	if inc.IsZero() {
		return
	}
	ns := lease.Namespace
	tasksTotal.WithLabelValues(ns, fleet, "succeeded").Add(float64(inc.Succeeded))
	tasksTotal.WithLabelValues(ns, fleet, "failed").Add(float64(inc.Failed))
	if inc.TokensIn > 0 || inc.TokensOut > 0 {
		model := r.fleetModel(ctx, client.ObjectKey{Namespace: ns, Name: fleet})
		tokensTotal.WithLabelValues(ns, fleet, model, "in").Add(float64(inc.TokensIn))
		tokensTotal.WithLabelValues(ns, fleet, model, "out").Add(float64(inc.TokensOut))
	}
}

// fleetModel is the model a fleet declares now, from the cache ("unknown" when the fleet is gone):
// tokens are labelled with the model at the time they are accounted, so a worker still on the old
// model after a change counts its last tokens under the new one.
func (r *Reconciler) fleetModel(ctx context.Context, key client.ObjectKey) string {
	f := &v1alpha1.AgentFleet{}
	if err := r.Get(ctx, key, f); err != nil || f.Spec.Model.Name == "" {
		return "unknown"
	}
	return f.Spec.Model.Name
}
