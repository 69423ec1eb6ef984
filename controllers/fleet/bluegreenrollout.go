package fleet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// reconcileBlueGreen finds the fleet's RayClusters, the active one (which runs the agents) and a
// blue-green preview beside it, decides the step (planBlueGreen, pure), and applies it to the
// preview and the switch; what the active RayCluster should run is left in s.desired for the canary
// and RayCluster phases. Which RayCluster is which is read from the RayClusters themselves (the
// preview carries agentfleet.dev/preview until the switch), so an operator that restarts mid-way
// resumes the same rollout: a switch cut between deleting the old RayCluster and unmarking the
// preview is finished by the next pass, which finds the preview alone.
func (r *Reconciler) reconcileBlueGreen(ctx context.Context, s *scope) error {
	f := s.fleet
	var list rayv1.RayClusterList
	if err := r.List(ctx, &list, client.InNamespace(f.Namespace), client.MatchingFields{fleetIndex: f.Name}); err != nil {
		return fmt.Errorf("listing RayClusters: %w", err)
	}
	var active, preview *rayv1.RayCluster
	deleting := sets.New[string]()
	for i := range list.Items {
		rc := &list.Items[i]
		switch {
		case !metav1.IsControlledBy(rc, f):
		case !rc.DeletionTimestamp.IsZero():
			deleting.Insert(rc.Name)
		case rc.Annotations[v1alpha1.AnnotationPreview] != "":
			if preview == nil || preview.CreationTimestamp.Before(&rc.CreationTimestamp) {
				preview = rc
			}
		case active == nil || rc.CreationTimestamp.Before(&active.CreationTimestamp):
			active = rc
		}
	}
	if active == nil && preview != nil {
		// The switch deleted the old RayCluster: the preview is the active one now.
		adopted, err := r.adoptPreview(ctx, preview)
		if err != nil {
			return err
		}
		active, preview = adopted, nil
	}

	activeName := rayspecs.ClusterName(f)
	if active != nil {
		activeName = active.Name
	}
	previewName := rayspecs.PreviewClusterName(f, activeName)
	o := blueGreenObservation{
		Now: s.now, Strategy: f.Spec.Rollout.Strategy, ReadyTimeout: f.BlueGreenReadyTimeout(), Replicas: f.WorkerReplicas(),
		Paused: f.Spec.Suspend, Desired: viewOf(s.desired), Previous: f.Status.Rollout, PreviewNameTaken: deleting.Has(previewName),
	}
	o.Desired.Revision.RayCluster = previewName
	if active == nil {
		o.Desired.Revision.RayCluster = activeName // the first RayCluster is created under it
	}
	if active != nil {
		v := viewOf(active)
		o.Active = &v
	}
	if preview != nil {
		v := viewOf(preview)
		o.Preview = &v
	}
	key := client.ObjectKeyFromObject(f)
	if o.Analysis = f.BlueGreenAnalysis(); o.Analysis != nil && o.Strategy == v1alpha1.RolloutBlueGreen {
		if prev := f.Status.Rollout; prev != nil && prev.Strategy == v1alpha1.RolloutBlueGreen && prev.Phase == v1alpha1.RolloutPhasePreview && prev.Canary != nil {
			o.Outcomes = r.outcomes.followClusters(key, prev.CanaryID(), seedClusterOutcomes(prev))
		}
		if preview != nil {
			restarts, err := r.containerRestarts(ctx, preview)
			if err != nil {
				return err
			}
			o.Preview.Restarts = restarts
		}
	}
	plan := planBlueGreen(o)
	if plan.RunChecks {
		// The outcomes passed: the checks decide, once, at this step.
		ro := plan.Status
		o.Checks = runChecks(ctx, r.Checks, o.Analysis.Checks, f.Namespace, f.Name, ro.Canary.Revision, ro.Stable.Revision)
		plan = planBlueGreen(o)
	}
	if st := plan.Status; o.Analysis != nil && st != nil && st.Phase == v1alpha1.RolloutPhasePreview && st.Canary != nil {
		r.outcomes.followClusters(key, st.CanaryID(), nil) // a preview that starts now counts from now
	} else if o.Strategy == v1alpha1.RolloutBlueGreen {
		r.outcomes.forget(key)
	}

	if plan.DeletePreview && preview != nil {
		if err := r.deleteCluster(ctx, preview); err != nil {
			return err
		}
		preview = nil
	}
	switch {
	case plan.Switch:
		if err := r.deleteCluster(ctx, active); err != nil {
			return err
		}
		adopted, err := r.adoptPreview(ctx, preview)
		if err != nil {
			return err
		}
		active = adopted
	case plan.CreatePreview:
		if err := r.createPreview(ctx, s, previewName); err != nil {
			return err
		}
	case preview != nil:
		// The preview follows the spec's worker count and suspend, as the active one does.
		if err := r.updatePreview(ctx, s, preview); err != nil {
			return err
		}
	}
	if s.blocked != nil {
		return nil
	}
	if plan.Keep && !plan.Switch && active != nil {
		if err := rayspecs.KeepTemplates(s.desired, active); err != nil {
			return err
		}
		s.built = revisionStatus(s.desired, v1alpha1.WorkerGroup)
	}
	s.active, s.preview = active, preview != nil || plan.CreatePreview
	if active != nil {
		s.desired.Name = active.Name
		s.activeVersion = active.ResourceVersion
	}
	s.needsBlueGreen = plan.NeedsBlueGreen
	if plan.NeedsBlueGreen != "" && f.Status.ObservedGeneration != f.Generation {
		// Told once per generation: the first pass that reconciles the change.
		r.eventAfterStatus(s, corev1.EventTypeWarning, EventNeedsBlueGreen, "%s", plan.NeedsBlueGreen)
	}
	if plan.Decided {
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
	return nil
}

// seedClusterOutcomes are the outcomes a blue-green status recorded, by RayCluster: a new leader
// continues an analysis from them.
func seedClusterOutcomes(st *v1alpha1.RolloutStatus) map[string]usage.Counts {
	seed := map[string]usage.Counts{st.Stable.RayCluster: {Succeeded: st.Stable.TasksSucceeded, Failed: st.Stable.TasksFailed}}
	if st.Canary != nil {
		seed[st.Canary.RayCluster] = usage.Counts{Succeeded: st.Canary.TasksSucceeded, Failed: st.Canary.TasksFailed}
	}
	return seed
}

// containerRestarts are the restarts of the containers of a RayCluster's agent workers.
func (r *Reconciler) containerRestarts(ctx context.Context, rc *rayv1.RayCluster) (int32, error) {
	pods, err := r.workerPods(ctx, rc)
	if err != nil {
		return 0, err
	}
	var n int32
	for i := range pods {
		for _, cs := range pods[i].Status.ContainerStatuses {
			n += cs.RestartCount
		}
	}
	return n, nil
}

// createPreview creates the preview RayCluster: the one built, under the preview's name, marked.
func (r *Reconciler) createPreview(ctx context.Context, s *scope, name string) error {
	rc := s.desired.DeepCopy()
	rc.Name = name
	rc.Annotations[v1alpha1.AnnotationPreview] = "true"
	err := r.Create(ctx, rc)
	if apierrors.IsAlreadyExists(err) {
		// Ours, created by an earlier pass and not in the cache yet (then looked at again shortly),
		// or someone else's.
		existing := &rayv1.RayCluster{}
		err := r.Get(ctx, client.ObjectKeyFromObject(rc), existing)
		if err == nil && !metav1.IsControlledBy(existing, s.fleet) {
			r.blockNotOwned(s, existing)
			return nil
		}
		if err == nil || apierrors.IsNotFound(err) {
			s.requeue(conflictRequeue)
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("creating the preview RayCluster %s: %w", klog.KObj(rc), err)
	}
	ctrl.LoggerFrom(ctx).Info("Created the preview RayCluster", "RayCluster", klog.KObj(rc))
	return nil
}

// updatePreview brings the preview's worker count and suspend to the spec (and reverts a hand edit).
func (r *Reconciler) updatePreview(ctx context.Context, s *scope, preview *rayv1.RayCluster) error {
	want := s.desired.DeepCopy()
	want.Name = preview.Name
	want.Annotations[v1alpha1.AnnotationPreview] = "true"
	updated := preview.DeepCopy()
	if applyDesired(updated, want) == "" {
		return nil
	}
	if err := r.Update(ctx, updated); err != nil {
		return fmt.Errorf("updating the preview RayCluster %s: %w", klog.KObj(updated), err)
	}
	return nil
}

// adoptPreview makes a preview the fleet's active RayCluster: its mark goes.
func (r *Reconciler) adoptPreview(ctx context.Context, preview *rayv1.RayCluster) (*rayv1.RayCluster, error) {
	// A merge patch, without the resourceVersion: KubeRay's status writes must not make the switch
	// conflict between deleting the old RayCluster and unmarking the new one.
	adopted := preview.DeepCopy()
	patch := client.MergeFrom(preview)
	delete(adopted.Annotations, v1alpha1.AnnotationPreview)
	if err := r.Patch(ctx, adopted, patch); err != nil {
		return nil, fmt.Errorf("making RayCluster %s the active one: %w", klog.KObj(adopted), err)
	}
	ctrl.LoggerFrom(ctx).Info("Switched to the RayCluster", "RayCluster", klog.KObj(adopted))
	return adopted, nil
}

// deleteCluster deletes a RayCluster of the fleet (the one observed: a newer one of the same name is
// left alone), in the foreground: the RayCluster stays, being deleted, until its pods are gone, so
// that its name is not taken again while they live (KubeRay tells a RayCluster's pods by its name
// alone: a new RayCluster of the name would count the old, terminating ones as its own).
func (r *Reconciler) deleteCluster(ctx context.Context, rc *rayv1.RayCluster) error {
	if err := r.Delete(ctx, rc, client.Preconditions{UID: ptr.To(rc.UID)}, client.PropagationPolicy(metav1.DeletePropagationForeground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting RayCluster %s: %w", klog.KObj(rc), err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted RayCluster", "RayCluster", klog.KObj(rc))
	return nil
}

// blockNotOwned stops a fleet whose RayCluster's name is taken by one it does not control.
func (r *Reconciler) blockNotOwned(s *scope, rc *rayv1.RayCluster) {
	s.block(blocker{reason: v1alpha1.ReasonRayClusterNotOwned, degraded: true, stalled: true,
		message: fmt.Sprintf("RayCluster %s exists and is not controlled by this fleet: rename the fleet or delete the RayCluster", rc.Name)})
	r.event(s.fleet, corev1.EventTypeWarning, EventRayClusterNotOwned, "RayCluster %s exists and is not controlled by this fleet", rc.Name)
}
