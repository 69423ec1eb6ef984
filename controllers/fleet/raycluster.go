package fleet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// buildRayCluster builds the RayCluster the fleet wants (rayspecs, pure): the phases after it check
// and apply it.
func (r *Reconciler) buildRayCluster(_ context.Context, s *scope) error {
	desired, err := rayspecs.RayCluster(s.fleet, rayspecs.Inputs{Prompt: s.prompt}, r.Specs)
	if err != nil {
		s.block(blocker{reason: v1alpha1.ReasonInvalidSpec, degraded: true, stalled: true, message: err.Error()})
		r.event(s.fleet, corev1.EventTypeWarning, EventInvalidSpec, "%v", err)
		return nil
	}
	s.desired = desired
	s.built = revisionStatus(desired, v1alpha1.WorkerGroup)
	return nil
}

// reconcileRayCluster creates the fleet's RayCluster, or brings the existing one back to what
// rayspecs built: a change in Git updates its template (the rollout phase then replaces the
// workers), a hand edit is reverted. workersToDelete is left to the rollout phase, and KubeRay's
// status is KubeRay's.
func (r *Reconciler) reconcileRayCluster(ctx context.Context, s *scope) error {
	f, desired, existing := s.fleet, s.desired, s.active
	if existing == nil {
		err := r.Create(ctx, desired)
		if apierrors.IsAlreadyExists(err) {
			taken := &rayv1.RayCluster{}
			if err := r.Get(ctx, client.ObjectKeyFromObject(desired), taken); err == nil && !metav1.IsControlledBy(taken, f) {
				r.blockNotOwned(s, taken)
				return nil
			}
		}
		if err != nil {
			return fmt.Errorf("creating RayCluster %s: %w", klog.KObj(desired), err)
		}
		r.event(f, corev1.EventTypeNormal, EventRayClusterCreated, "Created RayCluster %s with %d agent workers", desired.Name, *desired.Spec.WorkerGroupSpecs[0].Replicas)
		s.cluster = desired
		return nil
	}

	updated := existing.DeepCopy()
	change := applyDesired(updated, desired)
	if change == "" {
		s.cluster = existing
		return nil
	}
	if err := r.Update(ctx, updated); err != nil {
		return fmt.Errorf("updating RayCluster %s: %w", klog.KObj(updated), err)
	}
	ctrl.LoggerFrom(ctx).Info("Updated RayCluster", "RayCluster", klog.KObj(updated), "change", change)
	switch change {
	case changeTemplate:
		canary := rayspecs.Group(updated, v1alpha1.CanaryGroup) != nil || rayspecs.Group(existing, v1alpha1.CanaryGroup) != nil
		switch rev := rayspecs.WorkerHash(updated); {
		case canary:
			// A canary's layout: the canary phase tells its course in its own Events.
		case rev != rayspecs.WorkerHash(existing):
			r.event(f, corev1.EventTypeNormal, EventRayClusterUpdated, "Updated the template of RayCluster %s (revision %s): rolling the agent workers", updated.Name, rev)
		default:
			// The head's template, or what is not the workers' revision (their budget): no roll.
			r.event(f, corev1.EventTypeNormal, EventRayClusterUpdated, "Updated RayCluster %s; the agent workers' revision %s is unchanged: no roll", updated.Name, rev)
		}
	case changeDrift:
		r.event(f, corev1.EventTypeWarning, EventDriftReverted, "RayCluster %s was edited outside Git: restored it", updated.Name)
	case changeSuspend:
		if f.Spec.Suspend {
			r.event(f, corev1.EventTypeNormal, EventSuspended, "Suspended RayCluster %s", updated.Name)
		} else {
			r.event(f, corev1.EventTypeNormal, EventResumed, "Resumed RayCluster %s", updated.Name)
		}
	case changeReplicas:
		r.event(f, corev1.EventTypeNormal, EventScaled, "Scaled RayCluster %s to %d agent workers", updated.Name, *desired.Spec.WorkerGroupSpecs[0].Replicas)
	}
	s.cluster = updated
	return nil
}

// What applyDesired changed, most significant first.
const (
	changeTemplate = "template" // the fleet's spec changed what the cluster runs
	changeDrift    = "drift"    // someone edited the cluster by hand
	changeSuspend  = "suspend"
	changeReplicas = "replicas"
	changeMetadata = "metadata" // an annotation of ours missing or stale (a head hash stamped)
)

// applyDesired makes rc what desired says, keeping workersToDelete (the rollout phase's), labels and
// annotations others added, and reports what kind of change that was ("" for none).
func applyDesired(rc, desired *rayv1.RayCluster) string {
	change := ""
	wantHash := desired.Annotations[v1alpha1.AnnotationTemplateHash]
	observedHash, _ := rayspecs.TemplateHash(&rc.Spec)
	switch {
	case rc.Annotations[v1alpha1.AnnotationTemplateHash] != wantHash:
		change = changeTemplate
	case observedHash != wantHash:
		change = changeDrift
	}

	spec := desired.Spec.DeepCopy()
	for i := range spec.WorkerGroupSpecs {
		for _, g := range rc.Spec.WorkerGroupSpecs {
			if g.GroupName == spec.WorkerGroupSpecs[i].GroupName {
				spec.WorkerGroupSpecs[i].ScaleStrategy = g.ScaleStrategy
			}
		}
	}
	if change == "" && !equality.Semantic.DeepEqual(rc.Spec.Suspend, spec.Suspend) {
		change = changeSuspend
	}
	if change == "" && !equality.Semantic.DeepEqual(rc.Spec, *spec) {
		change = changeReplicas
	}
	rc.Spec = *spec
	for k, v := range desired.Labels {
		if rc.Labels[k] != v {
			if rc.Labels == nil {
				rc.Labels = map[string]string{}
			}
			rc.Labels[k] = v
			if change == "" {
				change = changeDrift
			}
		}
	}
	for k, v := range desired.Annotations {
		if rc.Annotations[k] != v {
			if rc.Annotations == nil {
				rc.Annotations = map[string]string{}
			}
			rc.Annotations[k] = v
			if change == "" {
				change = changeMetadata
			}
		}
	}
	return change
}
