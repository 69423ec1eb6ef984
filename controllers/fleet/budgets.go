package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/internal/cost"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// usageRefresh is how often status.usage is refreshed at the most: its figures move with every
// task and token, and a status write per heartbeat would cost more than the heartbeats.
const usageRefresh = time.Minute

// decideBudget reads the fleet's use over the last hour and day from the windows (seeded from its
// status once per process, so that an operator restart does not reset a budget), decides whether
// it is over a fleet budget, and computes status.usage. Crossing into and out of a budget is an
// Event.
func (r *Reconciler) decideBudget(ctx context.Context, s *scope) error {
	f := s.fleet
	key := client.ObjectKeyFromObject(f)
	fleetWindows.Seed(key, func(add func(time.Time, usage.Use)) { seedFromStatus(f.Status.Usage, s.now, add) })
	prices, _ := r.scopePrices(ctx, s)
	buckets := fleetWindows.Buckets(key, s.now)
	var unpriced []string
	if _, _, ok := prices.TokenMillion(f.Spec.Model.Name); !ok && usage.Sum(buckets, s.now, usage.Day).Tokens() > 0 {
		unpriced = append(unpriced, "model "+f.Spec.Model.Name)
	}
	v, err := usage.DecideFleet(usage.FleetObservation{
		Now: s.now, Budgets: f.Spec.Budgets, Buckets: buckets, Currency: prices.Currency, Unpriced: unpriced,
	})
	if err != nil {
		s.block(blocker{reason: v1alpha1.ReasonInvalidSpec, message: err.Error(), degraded: true, stalled: true})
		return nil //nolint:nilerr // the fleet's error, reported in its status (the CRD's pattern makes it unreachable)
	}
	s.budget = &v
	s.requeue(v.RecheckAfter)
	was := meta.IsStatusConditionTrue(f.Status.Conditions, v1alpha1.ConditionBudgetExceeded)
	switch {
	case v.Exceeded && !was:
		r.eventAfterStatus(s, corev1.EventTypeWarning, EventBudgetExceeded, "%s", v.Evidence)
	case !v.Exceeded && was && v.Budgeted:
		r.eventAfterStatus(s, corev1.EventTypeNormal, EventWithinBudget, "The fleet is within its budgets again")
	}
	return nil
}

// observeUsage computes status.usage once the phases observed the workers, and asks for the
// reconcile that refreshes it: while it shows use, and while the fleet holds GPUs or has a cost
// budget (GPU cost accrues with time alone).
func (r *Reconciler) observeUsage(ctx context.Context, s *scope) {
	if s.budget == nil {
		return // not decided: the status keeps what it said
	}
	f := s.fleet
	prices, _ := r.scopePrices(ctx, s)
	hours := usage.Hours(fleetWindows.Buckets(client.ObjectKeyFromObject(f), s.now))
	s.usage = usageStatus(f.Status.Usage, *s.budget, hours, s.now, prices.Currency, unpricedUse(s, prices))
	holdsGPUs := len(cost.Allocation(s.pods, s.gpuNodes.products, f.Spec.Worker.GPUProduct)) > 0
	costBudget := f.Spec.Budgets != nil && f.Spec.Budgets.MaxCostPerDay != ""
	if (s.usage != nil && s.usage.LastDay != v1alpha1.UsageWindow{}) || holdsGPUs || costBudget {
		next := s.now.Add(usageRefresh)
		if s.usage != nil {
			next = s.usage.UpdatedAt.Add(usageRefresh)
		}
		s.requeue(max(next.Sub(s.now), time.Second))
	}
}

// unpricedUse names what the fleet used, or budgets, that the price table does not price: its
// model, once it reported tokens or when it has a cost budget per task, and the GPU products its
// Running workers hold.
func unpricedUse(s *scope, prices cost.Prices) []string {
	f := s.fleet
	var names []string
	maxCost := f.Spec.Budgets != nil && f.Spec.Budgets.MaxCost != ""
	if _, _, ok := prices.TokenMillion(f.Spec.Model.Name); !ok && (s.budget.Day.Tokens() > 0 || maxCost) {
		if maxCost {
			names = append(names, "model "+f.Spec.Model.Name+" (budgets.maxCost is not enforced)")
		} else {
			names = append(names, "model "+f.Spec.Model.Name)
		}
	}
	for _, product := range slices.Sorted(maps.Keys(cost.Allocation(s.pods, s.gpuNodes.products, f.Spec.Worker.GPUProduct))) {
		if _, ok := prices.GPUHour(product); !ok {
			names = append(names, "GPU "+product)
		}
	}
	return names
}

// usageStatus is status.usage: the previous one while it is younger than usageRefresh, else the
// windows' figures now; nil while the fleet never used anything.
func usageStatus(prev *v1alpha1.UsageStatus, v usage.FleetVerdict, hours []usage.Bucket, now time.Time, currency string, unpriced []string) *v1alpha1.UsageStatus {
	if prev != nil && now.Sub(prev.UpdatedAt.Time) < usageRefresh && now.Sub(prev.UpdatedAt.Time) >= 0 {
		return prev
	}
	if prev == nil && v.Day == (usage.Use{}) {
		return nil
	}
	u := &v1alpha1.UsageStatus{
		LastHour: usageWindow(v.Hour, unpriced), LastDay: usageWindow(v.Day, unpriced),
		Currency: currency, Unpriced: unpriced, UpdatedAt: metav1.NewTime(now.Truncate(time.Second)),
	}
	for _, h := range hours {
		w := usageWindow(h.Use, unpriced)
		w.CostPerSucceededTask = ""
		u.Hours = append(u.Hours, v1alpha1.UsageHour{Start: metav1.NewTime(h.Minute), UsageWindow: w})
	}
	return u
}

// usageWindow is one window's figures. The cost per succeeded task is left out while something is
// unpriced: it would be understated.
func usageWindow(u usage.Use, unpriced []string) v1alpha1.UsageWindow {
	w := v1alpha1.UsageWindow{TokensIn: u.TokensIn, TokensOut: u.TokensOut, TasksSucceeded: u.Succeeded, TasksFailed: u.Failed}
	if u.GPUCost != 0 || u.TokenCost != 0 {
		w.GPUCost, w.TokenCost = usage.Money(u.GPUCost), usage.Money(u.TokenCost)
	}
	if u.Succeeded > 0 && len(unpriced) == 0 {
		w.CostPerSucceededTask = usage.Money(u.Cost() / float64(u.Succeeded))
	}
	return w
}

// seedFromStatus adds what a fleet's status last said of its use to windows that start empty: each
// hour's at its last minute (or the status' time, if earlier), so that each stays in its window no
// shorter than it really does, and at most an hour longer. A status without hours (written before
// they were) gives the last hour's at its time and the rest of the day's an hour earlier.
func seedFromStatus(u *v1alpha1.UsageStatus, now time.Time, add func(time.Time, usage.Use)) {
	if u == nil || now.Sub(u.UpdatedAt.Time) >= usage.Day {
		return
	}
	if len(u.Hours) > 0 {
		for _, h := range u.Hours {
			at := h.Start.Add(time.Hour - time.Minute)
			if at.After(u.UpdatedAt.Time) {
				at = u.UpdatedAt.Time
			}
			add(at, useOf(h.UsageWindow))
		}
		return
	}
	hour, day := useOf(u.LastHour), useOf(u.LastDay)
	rest := usage.Use{
		Succeeded: max(day.Succeeded-hour.Succeeded, 0), Failed: max(day.Failed-hour.Failed, 0),
		TokensIn: max(day.TokensIn-hour.TokensIn, 0), TokensOut: max(day.TokensOut-hour.TokensOut, 0),
		TokenCost: max(day.TokenCost-hour.TokenCost, 0), GPUCost: max(day.GPUCost-hour.GPUCost, 0),
	}
	add(u.UpdatedAt.Time, hour)
	add(u.UpdatedAt.Add(-usage.Hour), rest)
}

func useOf(w v1alpha1.UsageWindow) usage.Use {
	money := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0
		}
		return v
	}
	return usage.Use{Succeeded: w.TasksSucceeded, Failed: w.TasksFailed, TokensIn: w.TokensIn, TokensOut: w.TokensOut,
		TokenCost: money(w.TokenCost), GPUCost: money(w.GPUCost)}
}

// reconcileLeaseDirectives writes the operator's directives on the workers' heartbeat Leases: paused
// while the fleet is paused by its budget, and the per-task budget in force when it differs from
// the one the worker's environment was given (a budget change rolls no worker). A Lease is patched
// only when what it carries differs, so nothing is written while nothing changes: not at a
// worker's start (its environment is current) nor at a renewal.
//
// It runs after the phases, whichever blocked (a paused fleet whose dependency is not ready is paused
// all the same), once the workers are observed.
func (r *Reconciler) reconcileLeaseDirectives(ctx context.Context, s *scope) error {
	f := s.fleet
	if s.cluster == nil || s.pods == nil || s.budget == nil || f.Spec.Health.Heartbeat == nil || f.Spec.Suspend {
		return nil
	}
	leases, err := r.heartbeatLeases(ctx, s)
	if err != nil {
		return err
	}
	paused := s.budget != nil && s.budget.Pause
	budgetEnv := envMap(rayspecs.BudgetEnv(f))
	var errs []error
	for i := range s.pods {
		p := &s.pods[i]
		l := leases[p.Name]
		if l == nil || !p.DeletionTimestamp.IsZero() {
			continue
		}
		want := leaseDirectives(budgetEnv, workerEnv(p), paused)
		patch := map[string]any{}
		for k, v := range want {
			if cur, ok := l.Annotations[k]; v == nil && ok {
				patch[k] = nil
			} else if v != nil && (!ok || cur != *v) {
				patch[k] = *v
			}
		}
		if len(patch) == 0 {
			continue
		}
		data, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": patch}})
		if err != nil {
			return err
		}
		if err := r.Patch(ctx, l, client.RawPatch(types.MergePatchType, data)); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("writing the directives on heartbeat Lease %s: %w", klog.KObj(l), err))
		}
	}
	return errors.Join(errs...)
}

// leaseDirectives are the directive annotations a worker's Lease must carry (nil: absent): paused,
// and the budget keys, all of them, when the budget in force differs from the worker's environment.
func leaseDirectives(budget, env map[string]string, paused bool) map[string]*string {
	want := map[string]*string{heartbeatapi.AnnotationPaused: nil}
	if paused {
		want[heartbeatapi.AnnotationPaused] = ptrTo("true")
	}
	differs := false
	for _, pair := range heartbeatapi.BudgetAnnotations {
		if budget[pair[1]] != env[pair[1]] {
			differs = true
		}
	}
	for _, pair := range heartbeatapi.BudgetAnnotations {
		want[pair[0]] = nil
		if differs {
			want[pair[0]] = ptrTo(budget[pair[1]])
		}
	}
	return want
}

func ptrTo(s string) *string { return &s }

// workerEnv is the plain environment of a worker's agent container.
func workerEnv(p *corev1.Pod) map[string]string {
	for _, c := range p.Spec.Containers {
		if c.Name == rayspecs.WorkerContainer {
			return envMap(c.Env)
		}
	}
	return nil
}

func envMap(env []corev1.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		if e.ValueFrom == nil {
			m[e.Name] = e.Value
		}
	}
	return m
}
