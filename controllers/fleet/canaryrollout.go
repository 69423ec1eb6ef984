package fleet

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// reconcileCanary observes the RayCluster's worker groups, decides the rollout's step (planCanary,
// pure) and lays the RayCluster rayspecs built out accordingly, for reconcileRayCluster to apply: a
// canary's state lives in the RayCluster (its groups' templates) and the fleet's status, so an
// operator that restarts mid-canary resumes the same one.
func (r *Reconciler) reconcileCanary(ctx context.Context, s *scope) error {
	f, desired, existing := s.fleet, s.desired, s.active
	key := client.ObjectKeyFromObject(f)
	budget, err := maxUnavailable(f)
	if err != nil {
		return err
	}
	o := canaryObservation{
		Now: s.now, Strategy: f.Spec.Rollout.Strategy, Canary: f.CanarySettings(), Replicas: f.WorkerReplicas(), MaxUnavailable: int32(budget),
		Paused: f.Spec.Suspend || (s.budget != nil && s.budget.Pause), Desired: s.built, Previous: f.Status.Rollout, Restarts: f.Status.RecentRestarts,
		Promote: f.Annotations[v1alpha1.AnnotationPromote],
	}
	if existing != nil {
		o.Stable = revisionStatus(existing, v1alpha1.WorkerGroup)
		o.CanaryGroup = rayspecs.GroupHash(existing, v1alpha1.CanaryGroup)
		for _, g := range existing.Spec.WorkerGroupSpecs {
			switch g.GroupName {
			case v1alpha1.WorkerGroup:
				o.StableReplicas = ptr.Deref(g.Replicas, 0)
			case v1alpha1.CanaryGroup:
				o.CanaryReplicas = ptr.Deref(g.Replicas, 0)
			}
		}
		// The pods are counted only for a fleet with a canary, now or before (its pods may outlive
		// their group); a fleet that never ran one lists its pods once per reconcile, in observeWorkers.
		var pods []corev1.Pod
		if o.Strategy == v1alpha1.RolloutCanary || o.CanaryGroup != "" || o.Previous != nil {
			if pods, err = r.workerPods(ctx, existing); err != nil {
				return err
			}
		}
		for i := range pods {
			p := &pods[i]
			if !p.DeletionTimestamp.IsZero() {
				continue
			}
			if groupOf(p) == v1alpha1.CanaryGroup {
				o.CanaryPods++
				continue
			}
			o.StablePods++
			if podReady(p) {
				o.StableReady++
			}
			if p.Labels[v1alpha1.LabelWorkerHash] == o.Stable.Revision {
				o.StableUpdated++
			}
		}
	}
	if o.Strategy == v1alpha1.RolloutCanary && o.Previous != nil && o.Previous.Canary != nil {
		o.Outcomes = r.outcomes.follow(key, o.Previous.CanaryID(), seedOutcomes(o.Previous))
	}
	plan := planCanary(o)
	if plan.RunChecks {
		// The outcomes passed: the checks decide, once, at this step (a check that cannot run is
		// tried again after checkRetry).
		ro := plan.Status
		o.Checks = runChecks(ctx, r.Checks, o.Canary.Analysis.Checks, f.Namespace, f.Name, ro.Canary.Revision, ro.Stable.Revision)
		plan = planCanary(o)
	}
	switch {
	case o.Strategy == v1alpha1.RolloutBlueGreen:
		// The blue-green phase follows the outcomes of its preview.
	case plan.Status != nil && plan.Status.Canary != nil && (plan.Status.Phase == v1alpha1.RolloutPhaseCanary || plan.Status.Phase == v1alpha1.RolloutPhaseWaitingForPromotion):
		r.outcomes.follow(key, plan.Status.CanaryID(), nil) // a canary that starts now counts from now
	default:
		r.outcomes.forget(key)
	}
	if o.Strategy != v1alpha1.RolloutBlueGreen {
		// Under BlueGreen status.rollout is the blue-green phase's; this one only retires a canary
		// group left from the Canary strategy.
		s.rolloutStatus, s.rolloutDecided = plan.Status, true
	}
	s.requeue(plan.RecheckAfter)
	if plan.EventReason != "" {
		eventType := corev1.EventTypeNormal
		if plan.EventWarning {
			eventType = corev1.EventTypeWarning
		}
		r.eventAfterStatus(s, eventType, plan.EventReason, "%s", plan.Message)
	}
	if existing == nil || (!plan.CanaryGroup && !plan.StableFromCluster && plan.StableReplicas == f.WorkerReplicas()) {
		return nil // the layout rayspecs built
	}
	var stable *rayv1.WorkerGroupSpec
	if plan.StableFromCluster {
		stable = rayspecs.Group(existing, v1alpha1.WorkerGroup)
	}
	if err := rayspecs.CanaryLayout(desired, stable, plan.StableReplicas, plan.CanaryGroup, plan.CanaryReplicas); err != nil {
		return err
	}
	return nil
}

// revisionStatus is what a worker group's template runs.
func revisionStatus(rc *rayv1.RayCluster, group string) v1alpha1.RevisionStatus {
	t := rayspecs.GroupTemplate(rc, group)
	if t == nil {
		return v1alpha1.RevisionStatus{}
	}
	rs := v1alpha1.RevisionStatus{Revision: t.Labels[v1alpha1.LabelWorkerHash], PromptHash: t.Annotations[v1alpha1.AnnotationPromptHash], ModelVersion: t.Labels[v1alpha1.LabelModelVersion]}
	for _, c := range t.Spec.Containers {
		if c.Name == rayspecs.WorkerContainer {
			rs.Image = c.Image
		}
	}
	return rs
}

// groupOf is a worker pod's Ray worker group (KubeRay's ray.io/group label).
func groupOf(p *corev1.Pod) string {
	if g := p.Labels[rayGroupLabel]; g != "" {
		return g
	}
	return v1alpha1.WorkerGroup
}

// seedOutcomes are the outcomes a rollout status recorded, by revision: a new leader continues a
// canary from them.
func seedOutcomes(st *v1alpha1.RolloutStatus) map[string]usage.Counts {
	seed := map[string]usage.Counts{st.Stable.Revision: {Succeeded: st.Stable.TasksSucceeded, Failed: st.Stable.TasksFailed}}
	if st.Canary != nil {
		seed[st.Canary.Revision] = usage.Counts{Succeeded: st.Canary.TasksSucceeded, Failed: st.Canary.TasksFailed}
	}
	return seed
}

// revisionOutcomes counts the agents' task outcomes by revision for the fleets with a canary, from
// the ledger's increases (usage.go), since the canary began. It is the leader's memory; a new leader
// continues from what the fleet's status.rollout recorded.
type revisionOutcomes struct {
	mu     sync.Mutex
	fleets map[types.NamespacedName]*fleetOutcomes
}

type fleetOutcomes struct {
	id string
	// byCluster: the outcomes are counted by the worker's RayCluster (a blue-green preview's
	// analysis: its revision may be the active one's), not by its worker hash.
	byCluster bool
	counts    map[string]usage.Counts
	// revisions remembers each worker's revision (by its Lease's name, the pod's), for the counts a
	// Lease's delete event brings after its pod is gone.
	revisions map[string]string
}

// follow makes sure the fleet's outcomes are those of canary id (seeded when this process begins
// to follow it), and returns a copy of them.
func (o *revisionOutcomes) follow(fleet types.NamespacedName, id string, seed map[string]usage.Counts) map[string]usage.Counts {
	return o.followBy(fleet, id, false, seed)
}

// followClusters is follow, counting by RayCluster.
func (o *revisionOutcomes) followClusters(fleet types.NamespacedName, id string, seed map[string]usage.Counts) map[string]usage.Counts {
	return o.followBy(fleet, id, true, seed)
}

func (o *revisionOutcomes) followBy(fleet types.NamespacedName, id string, byCluster bool, seed map[string]usage.Counts) map[string]usage.Counts {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fleets == nil {
		o.fleets = map[types.NamespacedName]*fleetOutcomes{}
	}
	f := o.fleets[fleet]
	if f == nil || f.id != id || f.byCluster != byCluster {
		f = &fleetOutcomes{id: id, byCluster: byCluster, counts: map[string]usage.Counts{}, revisions: map[string]string{}}
		for rev, c := range seed {
			f.counts[rev] = c
		}
		o.fleets[fleet] = f
	}
	out := make(map[string]usage.Counts, len(f.counts))
	for rev, c := range f.counts {
		out[rev] = c
	}
	return out
}

// forget stops following a fleet.
func (o *revisionOutcomes) forget(fleet types.NamespacedName) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.fleets, fleet)
}

// add accounts a worker's outcomes under its revision ("" when its pod is gone: the one remembered)
// if the fleet is followed, and returns the revision they were counted under ("" if not counted).
func (o *revisionOutcomes) add(fleet types.NamespacedName, worker, revision string, inc usage.Counts) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.fleets[fleet]
	if f == nil {
		return ""
	}
	if revision == "" {
		revision = f.revisions[worker]
	} else {
		f.revisions[worker] = revision
	}
	if revision == "" || (inc.Succeeded == 0 && inc.Failed == 0) {
		return ""
	}
	c := f.counts[revision]
	c.Succeeded += inc.Succeeded
	c.Failed += inc.Failed
	f.counts[revision] = c
	return revision
}

// followed says whether a fleet's outcomes are counted by revision (it has a canary), and whether by
// RayCluster.
func (o *revisionOutcomes) followed(fleet types.NamespacedName) (followed, byCluster bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.fleets[fleet]
	return f != nil, f != nil && f.byCluster
}
