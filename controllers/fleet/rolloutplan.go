package fleet

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// rolloutObservation is what a rollout step is planned from.
type rolloutObservation struct {
	// Pods are the agent worker pods observed, sorted by name.
	Pods []corev1.Pod
	// Revision is the worker hash of the RayCluster's current template (of its stable group);
	// CanaryRevision the canary group's ("" without one): each pod is current on its group's.
	Revision, CanaryRevision string
	// Replicas is the declared number of workers.
	Replicas int32
	// MaxUnavailable is spec.rollout.maxUnavailable (nil: 25%).
	MaxUnavailable *intstr.IntOrString
	// Pending are the workers already handed to KubeRay for deletion that still exist.
	Pending sets.Set[string]
}

// rolloutPlan is the next step of a rollout.
type rolloutPlan struct {
	// Delete are the outdated workers to hand to KubeRay now: those not Ready first (replacing them
	// costs no availability), then Ready ones within the budget.
	Delete []string
	// Budget is maxUnavailable resolved against the replicas (at least 1).
	Budget int
	// Outdated counts the workers not on Revision, pending ones left out.
	Outdated int
}

// defaultMaxUnavailable is the API's default of spec.rollout.maxUnavailable.
var defaultMaxUnavailable = intstr.FromString("25%")

// planRollout decides which outdated workers to replace now, at most Budget unavailable at a time
// (no surge: KubeRay creates a replacement only once a worker is gone). Pods handed to KubeRay count
// as unavailable until they are gone, even where the cache still shows them Ready, so that a
// reconcile on a stale cache never hands over more. A revision that flips back mid-roll (a `git
// revert`) needs nothing special: the workers on the reverted-to revision are current again, and
// those already rolled forward are the outdated ones.
func planRollout(o rolloutObservation) (rolloutPlan, error) {
	budget, err := resolveMaxUnavailable(o.MaxUnavailable, o.Replicas)
	if err != nil {
		return rolloutPlan{}, err
	}
	plan := rolloutPlan{Budget: budget}

	var readyOutdated, unreadyOutdated []string
	available := 0
	for i := range o.Pods {
		p := &o.Pods[i]
		if o.Pending.Has(p.Name) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		ready := podReady(p)
		if ready {
			available++
		}
		revision := o.Revision
		if p.Labels[rayGroupLabel] == v1alpha1.CanaryGroup {
			revision = o.CanaryRevision
		}
		if p.Labels[v1alpha1.LabelWorkerHash] == revision {
			continue
		}
		if ready {
			readyOutdated = append(readyOutdated, p.Name)
		} else {
			unreadyOutdated = append(unreadyOutdated, p.Name)
		}
	}
	plan.Outdated = len(readyOutdated) + len(unreadyOutdated)
	unavailable := max(int(o.Replicas)-available, 0)
	allowed := min(max(plan.Budget-unavailable, 0), len(readyOutdated))
	plan.Delete = slices.Concat(unreadyOutdated, readyOutdated[:allowed])
	return plan, nil
}

// resolveMaxUnavailable is rollout.maxUnavailable (nil: 25%) against replicas, rounded down, at
// least 1.
func resolveMaxUnavailable(v *intstr.IntOrString, replicas int32) (int, error) {
	maxUnavailable := defaultMaxUnavailable
	if v != nil {
		maxUnavailable = *v
	}
	budget, err := intstr.GetScaledValueFromIntOrPercent(&maxUnavailable, int(replicas), false)
	if err != nil {
		return 0, fmt.Errorf("spec.rollout.maxUnavailable: %w", err)
	}
	return max(budget, 1), nil
}

// maxUnavailable is a fleet's resolved rollout.maxUnavailable.
func maxUnavailable(f *v1alpha1.AgentFleet) (int, error) {
	return resolveMaxUnavailable(f.Spec.Rollout.MaxUnavailable, f.WorkerReplicas())
}

// podReady reports whether a pod is Ready and not being deleted.
func podReady(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
