package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/gpunode"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/gpu"
)

// reconcileHealth replaces crashed, stalled and looping agent workers and those on a failing GPU,
// as the supervisor decides. A failing GPU is read from the worker pod's condition
// agentfleet.dev/GPUHealthy=False (the GPU health agent's) or, for workers that request GPUs, from
// their node (gpunode.WorkerFault: a fault condition or the unhealthy label of a node without the
// agent). Replacements land on other nodes: rayspecs gives workers a required node affinity away from
// agentfleet.dev/gpu-health=unhealthy.
//
// The restart ledger: a replacement is written to status.recentRestarts (and status.restarts) before
// the worker is handed to KubeRay, in a status write with an optimistic lock. If that write fails,
// nothing was handed over and nothing is counted; the next reconcile decides again. If the process
// dies or the handover write fails after it, the next reconcile finds the record of a worker that
// still exists and is not pending deletion, and hands it over without recording it again. So the
// ledger over-counts by at most the replacements in flight, never under-counts, never counts one
// worker twice, and the budget, read from it, is never exceeded. Events and
// agentfleet_worker_restarts_total follow the record, once.
func (r *Reconciler) reconcileHealth(ctx context.Context, s *scope) error {
	rc, f := s.cluster, s.fleet
	if rc == nil || f.Spec.Suspend {
		return nil
	}
	nodes, err := r.observeGPUNodes(ctx, s.pods)
	if err != nil {
		return err
	}
	s.gpuNodes = nodes
	recorded := recordedWorkers(f.Status.RecentRestarts)
	var workers []corev1.Pod
	for _, p := range s.pods {
		switch {
		case !p.DeletionTimestamp.IsZero() || s.pending.Has(p.Name):
		case recorded.Has(p.Name):
			s.inflight = append(s.inflight, p.Name)
		default:
			workers = append(workers, p)
		}
	}
	leases, err := r.heartbeatLeases(ctx, s)
	if err != nil {
		return err
	}
	prices, _ := r.scopePrices(ctx, s)
	taskBudget, err := supervisor.TaskBudgetOf(f, tokenPrice(prices, f.Spec.Model.Name))
	if err != nil {
		// The fleet's error, not the reconcile's (the CRD's pattern makes it unreachable).
		s.block(blocker{reason: v1alpha1.ReasonInvalidSpec, message: err.Error(), degraded: true, stalled: true})
		return nil //nolint:nilerr // reported in the fleet's status
	}
	d := supervisor.Decide(supervisor.Observation{
		Now: s.now, Workers: workers, Leases: leases, Heartbeat: f.Spec.Health.Heartbeat, TaskBudget: taskBudget,
		Budget: f.Spec.Health.RestartBudget, Recent: f.Status.RecentRestarts, Replicas: int(f.WorkerReplicas()),
		FaultyNodes: nodes.faulty,
	})
	s.requeue(d.RecheckAfter)
	if d.BudgetExhausted && len(d.Held) > 0 {
		s.budgetExhausted = budgetMessage(f.Spec.Health.RestartBudget, d.Held)
		r.event(f, corev1.EventTypeWarning, EventRestartBudgetExhausted, "%s", s.budgetExhausted)
	}
	if len(d.Replace) == 0 {
		return nil
	}
	if err := r.recordRestarts(ctx, s, d.Replace); err != nil {
		return err
	}
	s.replaced = d.Replace
	// Every recorded replacement gets its Event and its count, whatever happens to the Leases.
	for _, rep := range d.Replace {
		restartsTotal.WithLabelValues(f.Namespace, f.Name, rep.Reason).Inc()
		if !rep.Since.IsZero() {
			detectionLatency.WithLabelValues(rep.Reason).Observe(max(s.now.Sub(rep.Since).Seconds(), 0))
		}
		r.event(f, corev1.EventTypeWarning, EventWorkerReplaced, "Replacing agent worker %s: %s (%s)", rep.Worker, rep.Reason, rep.Evidence)
	}
	return nil
}

// reconcileLeases deletes the heartbeat Leases of replaced workers and of workers that are gone
// (rolled, scaled down, deleted by KubeRay), best effort: a Lease left behind is deleted by a later
// reconcile, and errors are joined, never stopping the others. A Lease of a worker the cache does
// not show yet is kept until it is stale (older than the progress deadline), so that a Lease
// written by a new worker is never taken for a gone one's.
func (r *Reconciler) reconcileLeases(ctx context.Context, s *scope) error {
	f := s.fleet
	if s.cluster == nil || f.Spec.Health.Heartbeat == nil {
		return nil
	}
	leases, err := r.heartbeatLeases(ctx, s)
	if err != nil {
		return err
	}
	existing := sets.New[string]()
	for _, p := range s.pods {
		existing.Insert(p.Name)
	}
	replaced := sets.New[string]()
	for _, rep := range s.replaced {
		replaced.Insert(rep.Worker)
	}
	deadline := time.Duration(f.Spec.Health.Heartbeat.ProgressDeadlineSeconds) * time.Second
	var errs []error
	for _, l := range leases {
		if !replaced.Has(l.Name) && (existing.Has(l.Name) || !leaseStale(l, s.now, deadline)) {
			continue
		}
		if err := r.Delete(ctx, l, client.Preconditions{UID: ptr.To(l.UID)}); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting the heartbeat Lease %s: %w", klog.KObj(l), err))
		}
	}
	return errors.Join(errs...)
}

// heartbeatLeases are the heartbeat Leases of the fleet's workers, by name (the pod's), listed once
// per reconcile from the cache for the supervisor and the Lease cleanup alike; none without a
// heartbeat contract.
func (r *Reconciler) heartbeatLeases(ctx context.Context, s *scope) (map[string]*coordinationv1.Lease, error) {
	f := s.fleet
	if s.leases != nil || f.Spec.Health.Heartbeat == nil {
		return s.leases, nil
	}
	var list coordinationv1.LeaseList
	if err := r.List(ctx, &list, client.InNamespace(f.Namespace), client.MatchingFields{fleetIndex: f.Name}); err != nil {
		return nil, fmt.Errorf("listing heartbeat Leases: %w", err)
	}
	s.leases = make(map[string]*coordinationv1.Lease, len(list.Items))
	for i := range list.Items {
		s.leases[list.Items[i].Name] = &list.Items[i]
	}
	return s.leases, nil
}

// leaseStale says whether a Lease was last renewed longer than deadline ago.
func leaseStale(l *coordinationv1.Lease, now time.Time, deadline time.Duration) bool {
	renewed := l.CreationTimestamp.Time
	if l.Spec.RenewTime != nil {
		renewed = l.Spec.RenewTime.Time
	}
	return now.Sub(renewed) >= deadline
}

// nodeGPUs is what the nodes of a fleet's GPU workers say about their GPUs.
type nodeGPUs struct {
	// faulty are the nodes with a GPU fault no pod condition attributes (gpunode.WorkerFault), by
	// name, with the evidence.
	faulty map[string]string
	// products are the nodes' GPU products (the nvidia.com/gpu.product label), by name; nil until
	// the nodes were read.
	products map[string]string
}

// observeGPUNodes reads the nodes of the worker pods that request GPUs, each once, from the cache
// (Nodes are watched): as many reads as the fleet has GPU nodes. A node that is gone says nothing.
func (r *Reconciler) observeGPUNodes(ctx context.Context, pods []corev1.Pod) (nodeGPUs, error) {
	g := nodeGPUs{faulty: map[string]string{}, products: map[string]string{}}
	seen := sets.New[string]()
	for i := range pods {
		p := &pods[i]
		name := p.Spec.NodeName
		if name == "" || seen.Has(name) || !p.DeletionTimestamp.IsZero() || !supervisor.RequestsGPU(p) {
			continue
		}
		seen.Insert(name)
		var n corev1.Node
		if err := r.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return g, fmt.Errorf("reading node %s of agent worker %s: %w", name, klog.KObj(p), err)
		}
		if product := n.Labels[gpu.ProductLabel]; product != "" {
			g.products[name] = product
		}
		if evidence := gpunode.WorkerFault(&n, r.GPUFaultConditions); evidence != "" {
			g.faulty[name] = evidence
		}
	}
	return g, nil
}

// recordRestarts writes the replacements to the fleet's status before they are acted on, with an
// optimistic lock: a conflict means another writer (an older process, a second replica) may have
// decided too, so this pass stops and the next one decides on the newer status.
func (r *Reconciler) recordRestarts(ctx context.Context, s *scope, reps []supervisor.Replacement) error {
	revisions := map[string]string{}
	for i := range s.pods {
		revisions[s.pods[i].Name] = s.pods[i].Labels[v1alpha1.LabelWorkerHash]
	}
	records := make([]v1alpha1.RestartRecord, 0, len(reps))
	for _, rep := range reps {
		records = append(records, v1alpha1.RestartRecord{Time: metav1.NewTime(s.now), Worker: rep.Worker, Reason: rep.Reason, Evidence: rep.Evidence,
			Revision: revisions[rep.Worker]})
	}
	// The records go into a copy: if the write fails, the status this reconcile writes last must
	// not carry them.
	updated := s.fleet.DeepCopy()
	updated.Status.Restarts, updated.Status.RecentRestarts = appendRestarts(updated.Status.Restarts, updated.Status.RecentRestarts, records)
	patch := client.MergeFromWithOptions(s.fleet, client.MergeFromWithOptimisticLock{})
	if err := r.Status().Patch(ctx, updated, patch); err != nil {
		return fmt.Errorf("recording the replacement of %d workers in the status of %s: %w", len(reps), klog.KObj(s.fleet), err)
	}
	s.fleet = updated
	r.statusWritten(s, client.ObjectKeyFromObject(updated))
	return nil
}

// appendRestarts adds records to the counts and to the window's list, which keeps the latest
// maxRecentRestarts.
func appendRestarts(counts v1alpha1.RestartCounts, recent, records []v1alpha1.RestartRecord) (v1alpha1.RestartCounts, []v1alpha1.RestartRecord) {
	for _, rec := range records {
		switch rec.Reason {
		case supervisor.Crashed:
			counts.Crashed++
		case supervisor.Stalled:
			counts.Stalled++
		case supervisor.Looping:
			counts.Looping++
		case supervisor.GPUUnhealthy:
			counts.GPUUnhealthy++
		case supervisor.OverBudget:
			counts.OverBudget++
		}
	}
	recent = append(append([]v1alpha1.RestartRecord(nil), recent...), records...)
	if n := len(recent); n > maxRecentRestarts {
		recent = recent[n-maxRecentRestarts:]
	}
	return counts, recent
}

// maxRecentRestarts bounds status.recentRestarts (the CRD's maxItems).
const maxRecentRestarts = v1alpha1.MaxRecentRestarts

func recordedWorkers(recent []v1alpha1.RestartRecord) sets.Set[string] {
	names := sets.New[string]()
	for _, rec := range recent {
		names.Insert(rec.Worker)
	}
	return names
}

func budgetMessage(b v1alpha1.RestartBudget, held []supervisor.Replacement) string {
	var names []string
	for _, h := range held {
		names = append(names, fmt.Sprintf("%s (%s: %s)", h.Worker, h.Reason, h.Evidence))
	}
	return fmt.Sprintf("restart budget of %d replacements in %ds spent: not replacing %s",
		ptr.Deref(b.MaxRestarts, supervisor.DefaultMaxRestarts), b.WindowSeconds, strings.Join(names, ", "))
}
