package fleet

import (
	"context"
	"fmt"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
)

// Event reasons of the supervisor.
const (
	EventWorkerReplaced         = "WorkerReplaced"
	EventRestartBudgetExhausted = "RestartBudgetExhausted"
)

// reconcileHealth replaces crashed, stalled and looping agent workers, as the supervisor decides,
// through workersToDelete (as Ray's autoscaler removes workers): KubeRay deletes them and creates
// replacements, so the declared count holds. Replacements are recorded in status (the restart
// budget's window survives an operator restart) and counted in metrics.
func (r *Reconciler) reconcileHealth(ctx context.Context, s *scope) error {
	rc, f := s.cluster, s.fleet
	if rc == nil || f.Spec.Suspend {
		return nil
	}
	pending := r.pendingDeletes(rc, s.pods)
	var workers []corev1.Pod
	for _, p := range s.pods {
		if p.DeletionTimestamp.IsZero() && !pending.Has(p.Name) {
			workers = append(workers, p)
		}
	}
	leases := map[string]*coordinationv1.Lease{}
	if f.Spec.Health.Heartbeat != nil {
		var list coordinationv1.LeaseList
		if err := r.List(ctx, &list, client.InNamespace(f.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: f.Name}); err != nil {
			return fmt.Errorf("listing heartbeat Leases: %w", err)
		}
		for i := range list.Items {
			leases[list.Items[i].Name] = &list.Items[i]
		}
	}
	d := supervisor.Decide(supervisor.Observation{
		Now: s.now, Workers: workers, Leases: leases, Heartbeat: f.Spec.Health.Heartbeat,
		Budget: f.Spec.Health.RestartBudget, Recent: f.Status.RecentRestarts, Replicas: int(ptr.Deref(f.Spec.Replicas, 1)),
	})
	s.requeue(d.RecheckAfter)
	if d.BudgetExhausted && len(d.Held) > 0 {
		var held []string
		for _, h := range d.Held {
			held = append(held, fmt.Sprintf("%s (%s: %s)", h.Worker, h.Reason, h.Evidence))
		}
		maxRestarts := int32(0)
		if f.Spec.Health.RestartBudget.MaxRestarts != nil {
			maxRestarts = *f.Spec.Health.RestartBudget.MaxRestarts
		}
		s.budgetExhausted = fmt.Sprintf("restart budget of %d replacements in %ds spent: not replacing %s",
			maxRestarts, f.Spec.Health.RestartBudget.WindowSeconds, strings.Join(held, ", "))
		r.event(f, corev1.EventTypeWarning, EventRestartBudgetExhausted, "%s", s.budgetExhausted)
	}
	if len(d.Replace) == 0 {
		return nil
	}
	var names []string
	for _, rep := range d.Replace {
		names = append(names, rep.Worker)
	}
	if err := r.setWorkersToDelete(ctx, rc, sets.List(pending.Insert(names...))); err != nil {
		return err
	}
	r.deletions.expect(rc.UID, names)
	for _, rep := range d.Replace {
		s.restarts = append(s.restarts, v1alpha1.RestartRecord{Time: metav1.NewTime(s.now), Worker: rep.Worker, Reason: rep.Reason, Evidence: rep.Evidence})
		restartsTotal.WithLabelValues(f.Namespace, f.Name, rep.Reason).Inc()
		r.event(f, corev1.EventTypeWarning, EventWorkerReplaced, "Replacing agent worker %s: %s (%s)", rep.Worker, rep.Reason, rep.Evidence)
		if lease, ok := leases[rep.Worker]; ok {
			if err := r.Delete(ctx, lease); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting the heartbeat Lease %s: %w", klog.KObj(lease), err)
			}
		}
	}
	return nil
}
