package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// KubeRay's labels on the pods of a RayCluster.
const (
	rayClusterLabel = "ray.io/cluster"
	rayGroupLabel   = "ray.io/group"
)

// workerPods lists the agent worker pods of a RayCluster.
func (r *Reconciler) workerPods(ctx context.Context, rc *rayv1.RayCluster) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(rc.Namespace),
		client.MatchingLabels{rayClusterLabel: rc.Name, rayGroupLabel: v1alpha1.WorkerGroup}); err != nil {
		return nil, fmt.Errorf("listing the workers of RayCluster %s: %w", klog.KObj(rc), err)
	}
	items := pods.Items
	slices.SortFunc(items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return items, nil
}

// reconcileRollout replaces workers that run an outdated template, at most maxUnavailable at a
// time, through KubeRay's scaleStrategy.workersToDelete: KubeRay deletes them and, the replica count
// unchanged, creates replacements from the current template. KubeRay has no rolling update of its
// own. Workers that are not Ready go first: replacing them costs no availability.
func (r *Reconciler) reconcileRollout(ctx context.Context, s *scope) error {
	rc := s.cluster
	if rc == nil || s.fleet.Spec.Suspend {
		return nil
	}
	pods, err := r.workerPods(ctx, rc)
	if err != nil {
		return err
	}
	s.pods = pods
	current := rayspecs.WorkerHash(rc)
	replicas := ptr.Deref(s.fleet.Spec.Replicas, 1)
	maxUnavailable := intstr.FromString("25%")
	if m := s.fleet.Spec.Rollout.MaxUnavailable; m != nil {
		maxUnavailable = *m
	}
	budget, err := intstr.GetScaledValueFromIntOrPercent(&maxUnavailable, int(replicas), false)
	if err != nil {
		return fmt.Errorf("spec.rollout.maxUnavailable: %w", err)
	}
	budget = max(budget, 1)

	// Pods already handed to KubeRay count as unavailable until they are gone, even where the cache
	// still shows them Ready.
	pending := r.pendingDeletes(rc, pods)

	var readyOutdated, unreadyOutdated []string
	available := 0
	for i := range pods {
		p := &pods[i]
		if pending.Has(p.Name) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		ready := isReady(p)
		if ready {
			available++
		}
		if p.Labels[v1alpha1.LabelWorkerHash] != current {
			if ready {
				readyOutdated = append(readyOutdated, p.Name)
			} else {
				unreadyOutdated = append(unreadyOutdated, p.Name)
			}
		}
	}
	if len(readyOutdated)+len(unreadyOutdated) == 0 {
		// Rolled: clear the names of deleted workers, so that KubeRay stops looking for them.
		if pending.Len() == 0 && hasWorkersToDelete(rc) {
			return r.setWorkersToDelete(ctx, rc, nil)
		}
		return nil
	}
	unavailable := max(int(replicas)-available, 0)
	allowed := min(max(budget-unavailable, 0), len(readyOutdated))
	batch := slices.Concat(unreadyOutdated, readyOutdated[:allowed])
	if len(batch) == 0 {
		return nil // wait for replacements to be Ready: their pod events bring us back
	}
	toDelete := sets.List(pending.Insert(batch...))
	if err := r.setWorkersToDelete(ctx, rc, toDelete); err != nil {
		return err
	}
	r.deletions.expect(rc.UID, batch)
	r.event(s.fleet, corev1.EventTypeNormal, EventRollingWorkers, "Replacing %d outdated agent workers (revision %s, maxUnavailable %d): %s",
		len(batch), current, budget, strings.Join(batch, ", "))
	return nil
}

// pendingDeletes are the workers handed to KubeRay for deletion (by this process's expectations
// or the RayCluster's workersToDelete) that still exist.
func (r *Reconciler) pendingDeletes(rc *rayv1.RayCluster, pods []corev1.Pod) sets.Set[string] {
	existing := sets.New[string]()
	for _, p := range pods {
		existing.Insert(p.Name)
	}
	pending := r.deletions.pending(rc.UID, existing)
	for _, g := range rc.Spec.WorkerGroupSpecs {
		if g.GroupName == v1alpha1.WorkerGroup {
			for _, name := range g.ScaleStrategy.WorkersToDelete {
				if existing.Has(name) {
					pending.Insert(name)
				}
			}
		}
	}
	return pending
}

// setWorkersToDelete writes the agent group's workersToDelete. The patch carries no optimistic lock:
// KubeRay writes the RayCluster's status on every pod change, which would make a locked patch of
// the spec conflict again and again just when workers are being replaced (measured: seconds of
// delay at the 99th percentile). The spec is ours alone: what the patch replaces (the worker group
// list, which has no merge key) is what this operator wrote.
func (r *Reconciler) setWorkersToDelete(ctx context.Context, rc *rayv1.RayCluster, names []string) error {
	patch := client.MergeFrom(rc.DeepCopy())
	for i := range rc.Spec.WorkerGroupSpecs {
		if rc.Spec.WorkerGroupSpecs[i].GroupName == v1alpha1.WorkerGroup {
			rc.Spec.WorkerGroupSpecs[i].ScaleStrategy.WorkersToDelete = names
		}
	}
	if err := r.Patch(ctx, rc, patch); err != nil {
		return fmt.Errorf("setting workersToDelete of RayCluster %s: %w", klog.KObj(rc), err)
	}
	return nil
}

// deletions remembers the workers handed to KubeRay for deletion until the cache shows them gone,
// so that a reconcile on a stale cache does not hand over more than maxUnavailable (the
// expectations of the ReplicaSet controller, for deletes).
type deletions struct {
	mu    sync.Mutex
	byUID map[types.UID]sets.Set[string]
}

func newDeletions() *deletions { return &deletions{byUID: map[types.UID]sets.Set[string]{}} }

func (d *deletions) expect(cluster types.UID, names []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byUID[cluster] == nil {
		d.byUID[cluster] = sets.New[string]()
	}
	d.byUID[cluster].Insert(names...)
}

// pending returns the expected deletions of cluster still among existing, forgetting the others.
func (d *deletions) pending(cluster types.UID, existing sets.Set[string]) sets.Set[string] {
	d.mu.Lock()
	defer d.mu.Unlock()
	still := d.byUID[cluster].Intersection(existing)
	if still.Len() == 0 {
		delete(d.byUID, cluster)
		return sets.New[string]()
	}
	d.byUID[cluster] = still
	return still.Clone()
}

func hasWorkersToDelete(rc *rayv1.RayCluster) bool {
	for _, g := range rc.Spec.WorkerGroupSpecs {
		if g.GroupName == v1alpha1.WorkerGroup && len(g.ScaleStrategy.WorkersToDelete) > 0 {
			return true
		}
	}
	return false
}
