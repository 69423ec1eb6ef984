package fleet

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// reconcileHandover hands KubeRay, in one write of workersToDelete, every worker the rollout and
// the supervisor chose in this reconcile, with those already pending and those recorded as replaced
// but not yet handed over (an earlier pass stopped between the two writes). KubeRay deletes them
// and creates replacements from the current template. Once none is left, the list is cleared so
// that KubeRay stops looking for them.
func (r *Reconciler) reconcileHandover(ctx context.Context, s *scope) error {
	rc := s.cluster
	if rc == nil || s.fleet.Spec.Suspend {
		return nil
	}
	handover := sets.New(s.rollout.Delete...).Insert(s.inflight...)
	for _, rep := range s.replaced {
		handover.Insert(rep.Worker)
	}
	if handover.Len() == 0 {
		if s.pending.Len() == 0 && hasWorkersToDelete(rc) && s.rollout.Outdated == 0 {
			return r.setWorkersToDelete(ctx, rc, s.pods, nil)
		}
		return nil
	}
	if err := r.setWorkersToDelete(ctx, rc, s.pods, sets.List(s.pending.Clone().Union(handover))); err != nil {
		return err
	}
	r.deletions.expect(client.ObjectKeyFromObject(s.fleet), rc.UID, sets.List(handover))
	if len(s.inflight) > 0 {
		ctrl.LoggerFrom(ctx).Info("Handed over workers whose replacement was recorded but not handed over", "workers", s.inflight)
	}
	if n := len(s.rollout.Delete); n > 0 {
		r.event(s.fleet, corev1.EventTypeNormal, EventRollingWorkers, "Replacing %d outdated agent workers (revision %s, maxUnavailable %d): %s",
			n, rayspecs.WorkerHash(rc), s.rollout.Budget, strings.Join(s.rollout.Delete, ", "))
	}
	return nil
}

// pendingDeletes are the workers handed to KubeRay for deletion (by this process's expectations
// or the RayCluster's workersToDelete) that still exist.
func (r *Reconciler) pendingDeletes(f *v1alpha1.AgentFleet, rc *rayv1.RayCluster, pods []corev1.Pod) sets.Set[string] {
	existing := sets.New[string]()
	for _, p := range pods {
		existing.Insert(p.Name)
	}
	pending := r.deletions.pending(client.ObjectKeyFromObject(f), rc.UID, existing)
	for _, g := range rc.Spec.WorkerGroupSpecs {
		for _, name := range g.ScaleStrategy.WorkersToDelete {
			if existing.Has(name) {
				pending.Insert(name)
			}
		}
	}
	return pending
}

// setWorkersToDelete hands workers to KubeRay: each worker group's workersToDelete lists the names of
// its own pods (a canary's workers are the canary group's), and a group none of whose pods are
// named gets none.
func (r *Reconciler) setWorkersToDelete(ctx context.Context, rc *rayv1.RayCluster, pods []corev1.Pod, names []string) error {
	groups := map[string]string{}
	for i := range pods {
		groups[pods[i].Name] = groupOf(&pods[i])
	}
	byGroup := map[string][]string{}
	for _, name := range names {
		g, ok := groups[name]
		if !ok {
			g = v1alpha1.WorkerGroup // a name whose pod is not observed: the stable group's, as before
		}
		byGroup[g] = append(byGroup[g], name)
	}
	patch := client.MergeFrom(rc.DeepCopy())
	for i := range rc.Spec.WorkerGroupSpecs {
		g := &rc.Spec.WorkerGroupSpecs[i]
		g.ScaleStrategy.WorkersToDelete = byGroup[g.GroupName]
	}
	if err := r.Patch(ctx, rc, patch); err != nil {
		return fmt.Errorf("setting workersToDelete of RayCluster %s: %w", klog.KObj(rc), err)
	}
	return nil
}

func hasWorkersToDelete(rc *rayv1.RayCluster) bool {
	for _, g := range rc.Spec.WorkerGroupSpecs {
		if len(g.ScaleStrategy.WorkersToDelete) > 0 {
			return true
		}
	}
	return false
}

// deletions remembers the workers handed to KubeRay for deletion until the cache shows them gone,
// so that a reconcile on a stale cache does not hand over more than maxUnavailable (the
// expectations of the ReplicaSet controller, for deletes). They are kept per fleet, for the
// fleet's current RayCluster, and forgotten when the fleet is deleted.
type deletions struct {
	mu      sync.Mutex
	byFleet map[types.NamespacedName]expected
}

type expected struct {
	cluster types.UID
	names   sets.Set[string]
}

func newDeletions() *deletions { return &deletions{byFleet: map[types.NamespacedName]expected{}} }

func (d *deletions) expect(fleet types.NamespacedName, cluster types.UID, names []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.byFleet[fleet]
	if e.cluster != cluster || e.names == nil {
		e = expected{cluster: cluster, names: sets.New[string]()}
	}
	e.names.Insert(names...)
	d.byFleet[fleet] = e
}

// pending returns the expected deletions of the fleet's cluster still among existing, forgetting
// the others (and those of a RayCluster the fleet no longer has).
func (d *deletions) pending(fleet types.NamespacedName, cluster types.UID, existing sets.Set[string]) sets.Set[string] {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.byFleet[fleet]
	if !ok || e.cluster != cluster {
		delete(d.byFleet, fleet)
		return sets.New[string]()
	}
	still := e.names.Intersection(existing)
	if still.Len() == 0 {
		delete(d.byFleet, fleet)
		return sets.New[string]()
	}
	d.byFleet[fleet] = expected{cluster: cluster, names: still}
	return still.Clone()
}

// forget drops the expectations of a fleet that is gone.
func (d *deletions) forget(fleet types.NamespacedName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.byFleet, fleet)
}

// len is the number of fleets with expectations, for tests.
func (d *deletions) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byFleet)
}
