package fleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/internal/cost"
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
	tokenCostTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentfleet_token_cost_total",
		Help: "Cost of the tokens of agentfleet_tokens_total at the price table's price of the model when they were accounted; tokens of unpriced models are in agentfleet_tokens_unpriced_total instead.",
	}, []string{"namespace", "fleet", "model", "direction", "currency"})
	tokensUnpricedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentfleet_tokens_unpriced_total",
		Help: "The part of agentfleet_tokens_total accounted while the model had no price in the table: not in agentfleet_token_cost_total.",
	}, []string{"namespace", "fleet", "model", "direction"})
)

func init() {
	metrics.Registry.MustRegister(tasksTotal, tokensTotal, tokenCostTotal, tokensUnpricedTotal)
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
			AddFunc:    func(o any, initial bool) { r.accountLease(ctx, nil, o, initial, false) },
			UpdateFunc: func(old, o any) { r.accountLease(ctx, old, o, false, false) },
			DeleteFunc: func(o any) { r.accountLease(ctx, nil, o, false, true) },
		})
		if err != nil {
			return fmt.Errorf("watching Leases for the usage ledger: %w", err)
		}
		<-ctx.Done()
		return informer.RemoveEventHandler(reg)
	}))
}

// accountLease adds what a heartbeat Lease's counts gained to its fleet's counters and its windows
// (status.usage, fleet budgets), and wakes the fleet when the Lease's task has just passed a
// per-task budget, has just started under a duration budget, or the fleet's tokens have just passed
// its hourly budget: the reconcile that acts is not left to the next timer.
func (r *Reconciler) accountLease(ctx context.Context, old, o any, baseline, deleted bool) {
	if tomb, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	lease, ok := o.(*coordinationv1.Lease)
	if !ok {
		return
	}
	name := lease.Labels[v1alpha1.LabelFleet]
	if name == "" {
		return
	}
	key := client.ObjectKey{Namespace: lease.Namespace, Name: name}
	now := r.Clock.Now()
	var inc usage.Counts
	if deleted {
		inc = r.usage.Forget(lease, now)
	} else {
		inc = r.usage.Observe(lease, baseline)
	}
	if !r.workerLease(ctx, lease, name, deleted) {
		// Followed by the ledger (above), so that its past is never counted at once later, but
		// counted for no fleet and waking none (issue 14, "a Lease written by an agent of another
		// fleet").
		if deleted {
			r.taskTimers.stop(client.ObjectKeyFromObject(lease))
		}
		return
	}
	f := &v1alpha1.AgentFleet{}
	if err := r.Get(ctx, key, f); err != nil {
		f = nil // gone: its counts are still accounted, under the model "unknown"
	}
	if !inc.IsZero() {
		r.accountIncrease(ctx, key, f, inc, now)
		if rev := r.accountRevision(ctx, key, lease.Name, inc); rev != "" && f != nil && canaryRevision(f) == rev {
			r.wakeFleet(f) // a canary's outcome: its verdict may be due
		}
	}
	if deleted {
		r.taskTimers.stop(client.ObjectKeyFromObject(lease))
	} else if f != nil && r.leaseWakes(ctx, f, old, lease, inc, now) {
		r.wakeFleet(f)
	}
}

// workerLease says whether a Lease labelled as fleet is the heartbeat of one of that fleet's workers:
// its pod (same name, from the cache) carries the fleet's label. The agents of every fleet in a
// namespace may write any Lease there (a Role cannot restrict create by name), so a Lease labelled
// as a fleet by another fleet's agent, named after its own pod or after none, must spend nothing of
// this fleet's budgets. A delete is counted when the pod is gone too: a worker's Lease is deleted
// after its pod, and the ledger followed the Lease until then, so all a delete can add is what
// an informer missed, never a forged Lease's counts (those were followed, not counted).
func (r *Reconciler) workerLease(ctx context.Context, lease *coordinationv1.Lease, fleet string, deleted bool) bool {
	p := &corev1.Pod{}
	err := r.Get(ctx, client.ObjectKey{Namespace: lease.Namespace, Name: lease.Name}, p)
	if apierrors.IsNotFound(err) {
		return deleted
	}
	return err == nil && p.Labels[v1alpha1.LabelFleet] == fleet
}

// accountIncrease adds a Lease's increase to its fleet's counters and windows, the tokens priced at
// the model's price in the table now.
func (r *Reconciler) accountIncrease(ctx context.Context, key client.ObjectKey, f *v1alpha1.AgentFleet, inc usage.Counts, now time.Time) {
	ns, fleet := key.Namespace, key.Name
	tasksTotal.WithLabelValues(ns, fleet, "succeeded").Add(float64(inc.Succeeded))
	tasksTotal.WithLabelValues(ns, fleet, "failed").Add(float64(inc.Failed))
	use := usage.Use{Succeeded: inc.Succeeded, Failed: inc.Failed, TokensIn: inc.TokensIn, TokensOut: inc.TokensOut}
	if inc.TokensIn > 0 || inc.TokensOut > 0 {
		model := "unknown"
		if f != nil && f.Spec.Model.Name != "" {
			// Tokens are labelled with the model the fleet declares when they are accounted: a
			// worker still on the old model after a change counts its last tokens under the new one.
			model = f.Spec.Model.Name
		}
		tokensTotal.WithLabelValues(ns, fleet, model, "in").Add(float64(inc.TokensIn))
		tokensTotal.WithLabelValues(ns, fleet, model, "out").Add(float64(inc.TokensOut))
		prices, _ := r.prices(ctx)
		if in, out, ok := prices.TokenMillion(model); ok {
			cin, cout := float64(inc.TokensIn)*in/1e6, float64(inc.TokensOut)*out/1e6
			tokenCostTotal.WithLabelValues(ns, fleet, model, "in", prices.Currency).Add(cin)
			tokenCostTotal.WithLabelValues(ns, fleet, model, "out", prices.Currency).Add(cout)
			use.TokenCost = cin + cout
		} else {
			tokensUnpricedTotal.WithLabelValues(ns, fleet, model, "in").Add(float64(inc.TokensIn))
			tokensUnpricedTotal.WithLabelValues(ns, fleet, model, "out").Add(float64(inc.TokensOut))
		}
	}
	if f != nil {
		// A fleet gone (a Lease's delete event after the fleet's) keeps no windows: one made again
		// under its name starts afresh.
		fleetWindows.Add(key, now, use)
	}
}

// accountRevision counts a worker's outcomes under its revision (its pod's worker hash, from the
// cache; for a blue-green preview's analysis, its RayCluster) for a fleet with a canary, and returns
// the revision ("" when not counted).
func (r *Reconciler) accountRevision(ctx context.Context, fleet client.ObjectKey, worker string, inc usage.Counts) string {
	followed, byCluster := r.outcomes.followed(fleet)
	if !followed {
		return ""
	}
	revision := ""
	p := &corev1.Pod{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: fleet.Namespace, Name: worker}, p); err == nil {
		revision = p.Labels[v1alpha1.LabelWorkerHash]
		if byCluster {
			revision = p.Labels[rayClusterLabel]
		}
	}
	return r.outcomes.add(fleet, worker, revision, inc)
}

// canaryRevision is the revision of a fleet's canary being judged (under BlueGreen, the preview's
// RayCluster: what accountRevision counts by); "" when none.
func canaryRevision(f *v1alpha1.AgentFleet) string {
	ro := f.Status.Rollout
	switch {
	case ro == nil || ro.Canary == nil:
	case ro.Strategy == v1alpha1.RolloutBlueGreen && ro.Phase == v1alpha1.RolloutPhasePreview:
		return ro.Canary.RayCluster
	case ro.Phase == v1alpha1.RolloutPhaseCanary:
		return ro.Canary.Revision
	}
	return ""
}

// leaseWakes says whether a Lease's change calls for its fleet's reconcile now (renewals mostly do
// not: leaseToFleet wakes it for loops and new or deleted Leases). A task that starts under a
// duration budget sets a timer for the moment it would pass it, not a reconcile now.
func (r *Reconciler) leaseWakes(ctx context.Context, f *v1alpha1.AgentFleet, old any, lease *coordinationv1.Lease, inc usage.Counts, now time.Time) bool {
	b := f.Spec.Budgets
	if b == nil || f.Spec.Health.Heartbeat == nil {
		return false
	}
	prev, _ := old.(*coordinationv1.Lease)
	if b.MaxDurationSeconds != nil {
		started := lease.Annotations[heartbeatapi.AnnotationTaskStarted]
		if prev == nil || prev.Annotations[heartbeatapi.AnnotationTaskStarted] != started {
			var d time.Duration
			if t, err := time.Parse(heartbeatapi.TimeFormat, started); err == nil {
				d = t.Add(time.Duration(*b.MaxDurationSeconds) * time.Second).Sub(now)
			}
			r.taskTimers.set(ctx, client.ObjectKeyFromObject(lease), started, d, r.wakeIfStillRunning)
		}
	}
	if b.MaxTokens != nil || b.MaxCost != "" {
		prices, _ := r.prices(ctx)
		tb, err := supervisor.TaskBudgetOf(f, tokenPrice(prices, f.Spec.Model.Name))
		tb.MaxDuration = 0 // timed above
		over := func(l *coordinationv1.Lease) bool {
			_, _, o := supervisor.OverTaskBudget(l, tb, now, nil)
			return o
		}
		// Once, when the task passes it: a worker the restart budget holds stays over it.
		if err == nil && over(lease) && (prev == nil || !over(prev)) {
			return true
		}
	}
	if limit := b.MaxTokensPerHour; limit != nil && inc.TokensIn+inc.TokensOut > 0 && !meta.IsStatusConditionTrue(f.Status.Conditions, v1alpha1.ConditionBudgetExceeded) {
		return fleetWindows.Sum(client.ObjectKeyFromObject(f), now, usage.Hour).Tokens() > *limit
	}
	return false
}

// wakeIfStillRunning wakes the fleet of a Lease if the Lease (read from the cache now) still runs
// the task that started at started: the supervisor times the task from that reconcile.
func (r *Reconciler) wakeIfStillRunning(ctx context.Context, key client.ObjectKey, started string) {
	l := &coordinationv1.Lease{}
	if err := r.Get(ctx, key, l); err != nil || l.Annotations[heartbeatapi.AnnotationTaskStarted] != started {
		return // gone, or on another task (or idle)
	}
	f := &v1alpha1.AgentFleet{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: l.Labels[v1alpha1.LabelFleet]}, f); err == nil {
		r.wakeFleet(f)
	}
}

// taskTimers holds at most one timer per Lease: for the moment its current task passes the fleet's
// duration budget. A task that ends, or a Lease that goes, stops it.
type taskTimers struct {
	mu     sync.Mutex
	timers map[client.ObjectKey]*time.Timer
}

// set replaces a Lease's timer by one that calls fire after d, for the task that started at
// started; "" (idle) only stops the old one.
func (t *taskTimers) set(ctx context.Context, key client.ObjectKey, started string, d time.Duration, fire func(context.Context, client.ObjectKey, string)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.timers[key]; old != nil {
		old.Stop()
		delete(t.timers, key)
	}
	if started == "" {
		return
	}
	if t.timers == nil {
		t.timers = map[client.ObjectKey]*time.Timer{}
	}
	var timer *time.Timer
	timer = time.AfterFunc(max(d, 0)+10*time.Millisecond, func() {
		t.mu.Lock()
		if t.timers[key] == timer {
			delete(t.timers, key)
		}
		t.mu.Unlock()
		if ctx.Err() == nil {
			fire(ctx, key, started)
		}
	})
	t.timers[key] = timer
}

// stop stops a Lease's timer (its Lease is gone).
func (t *taskTimers) stop(key client.ObjectKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.timers[key]; old != nil {
		old.Stop()
		delete(t.timers, key)
	}
}

// wakeFleet queues a reconcile of the fleet (the wake channel, a source of the controller).
func (r *Reconciler) wakeFleet(f *v1alpha1.AgentFleet) {
	if r.wake == nil {
		return
	}
	select {
	case r.wake <- event.TypedGenericEvent[*v1alpha1.AgentFleet]{Object: f}:
	default: // full: the fleet's timers still run; a wake is an optimisation of latency
	}
}

// tokenPrice is the price of a model in a price table.
func tokenPrice(prices cost.Prices, model string) supervisor.TokenPrice {
	in, out, ok := prices.TokenMillion(model)
	return supervisor.TokenPrice{In: in, Out: out, Currency: prices.Currency, Priced: ok}
}

// declareUsageSeries makes a fleet's task and token series exist, at 0, from its first reconcile:
// Prometheus' increase() cannot count what a counter gained before its first scrape, so a series
// born with its first tasks would lose them.
func declareUsageSeries(f *v1alpha1.AgentFleet, prices cost.Prices) {
	ns, name := f.Namespace, f.Name
	tasksTotal.WithLabelValues(ns, name, "succeeded")
	tasksTotal.WithLabelValues(ns, name, "failed")
	if f.Spec.Health.Heartbeat == nil || f.Spec.Model.Name == "" {
		return
	}
	_, _, priced := prices.TokenMillion(f.Spec.Model.Name)
	for _, direction := range []string{"in", "out"} {
		tokensTotal.WithLabelValues(ns, name, f.Spec.Model.Name, direction)
		if priced {
			tokenCostTotal.WithLabelValues(ns, name, f.Spec.Model.Name, direction, prices.Currency)
		} else {
			tokensUnpricedTotal.WithLabelValues(ns, name, f.Spec.Model.Name, direction)
		}
	}
}
