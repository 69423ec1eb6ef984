package fleet

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// computeStatus is the fleet's status from what this reconcile observed: the RayCluster as KubeRay
// reports it, the worker pods, and what blocked the phases. It is never taken from what was
// requested. A transient error (reconcileErr) leaves observedGeneration where it was, so that a
// reader knows the current generation is not yet reconciled.
func computeStatus(s *scope, reconcileErr error) v1alpha1.AgentFleetStatus {
	f := s.fleet
	st := *f.Status.DeepCopy()
	replicas := ptr.Deref(f.Spec.Replicas, 1)
	gen := f.Generation

	st.GPUs = v1alpha1.GPUStatus{Requested: replicas * f.Spec.Worker.GPUs, Product: f.Spec.Worker.GPUProduct}
	if s.jobs != nil || len(f.Spec.Jobs) == 0 {
		st.Jobs = s.jobs
	}

	// Workers, as observed.
	var current string
	if s.cluster != nil {
		current = rayspecs.WorkerHash(s.cluster)
		st.RayClusterName = s.cluster.Name
		st.DashboardURL = fmt.Sprintf("http://%s-head-svc.%s.svc:%d", s.cluster.Name, s.cluster.Namespace, rayspecs.DashboardPort)
	}
	var observed, ready, updated int32
	for i := range s.pods {
		p := &s.pods[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		observed++
		if isReady(p) {
			ready++
		}
		if current != "" && p.Labels[v1alpha1.LabelWorkerHash] == current {
			updated++
		}
	}
	st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = observed, ready, updated
	st.Workers = fmt.Sprintf("%d/%d", ready, replicas)
	rolled := s.cluster != nil && updated == observed && observed == replicas
	if rolled || (s.cluster != nil && replicas == 0) {
		// What the workers run, once they all run it.
		st.Revision = current
		st.ModelVersion = f.Spec.Model.Version
		st.PromptHash = ""
		if s.desired != nil {
			st.PromptHash = s.desired.Spec.WorkerGroupSpecs[0].Template.Annotations[v1alpha1.AnnotationPromptHash]
		}
	}

	// Replacements: counted by reason, the latest kept for the restart budget's window.
	for _, rec := range s.restarts {
		switch rec.Reason {
		case supervisor.Crashed:
			st.Restarts.Crashed++
		case supervisor.Stalled:
			st.Restarts.Stalled++
		case supervisor.Looping:
			st.Restarts.Looping++
		case supervisor.GPUUnhealthy:
			st.Restarts.GPUUnhealthy++
		}
		st.RecentRestarts = append(st.RecentRestarts, rec)
	}
	if n := len(st.RecentRestarts); n > maxRecentRestarts {
		st.RecentRestarts = st.RecentRestarts[n-maxRecentRestarts:]
	}

	// Conditions.
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	progressing := func(reason, msg string) {
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
		set(v1alpha1.ConditionProgressing, metav1.ConditionTrue, reason, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	}
	stalled := false
	switch {
	case reconcileErr != nil:
		// Keep what was known; say that reconciling goes on.
		set(v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonReconcileError, reconcileErr.Error())
		st.Phase = phaseOf(st.Conditions, f.Spec.Suspend)
		return st
	case s.blocked != nil && s.blocked.degraded:
		b := s.blocked
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, b.reason, b.message)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, b.reason, b.message)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, b.reason, b.message)
		stalled = b.stalled
	case s.blocked != nil:
		progressing(s.blocked.reason, s.blocked.message)
	case f.Spec.Suspend:
		msg := "the fleet is suspended"
		if observed > 0 || (s.cluster != nil && !clusterSuspended(s.cluster)) {
			progressing(v1alpha1.ReasonSuspending, fmt.Sprintf("suspending: %d agent workers left", observed))
		} else {
			set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSuspended, msg)
			set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonSuspended, msg)
			set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "")
		}
	case s.cluster == nil:
		progressing(v1alpha1.ReasonCreating, "creating the RayCluster")
	case clusterCondition(s.cluster, rayv1.RayClusterReplicaFailure) != nil && clusterCondition(s.cluster, rayv1.RayClusterReplicaFailure).true:
		c := clusterCondition(s.cluster, rayv1.RayClusterReplicaFailure)
		msg := fmt.Sprintf("KubeRay reports %s on RayCluster %s: %s", c.reason, s.cluster.Name, c.message)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRayClusterFailure, msg)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonRayClusterFailure, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonRayClusterFailure, msg)
	case s.budgetExhausted != "":
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRestartBudgetExhausted, s.budgetExhausted)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonRestartBudgetExhausted, s.budgetExhausted)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonRestartBudgetExhausted, s.budgetExhausted)
	case updated < observed:
		progressing(v1alpha1.ReasonRolling, fmt.Sprintf("%d of %d agent workers updated to revision %s, %d ready", updated, replicas, current, ready))
	case ready < replicas || observed != replicas:
		progressing(v1alpha1.ReasonScaling, fmt.Sprintf("%d of %d agent workers ready", ready, replicas))
	case !headReady(s.cluster):
		progressing(v1alpha1.ReasonHeadNotReady, "waiting for the Ray head to be ready")
	default:
		msg := fmt.Sprintf("%d of %d agent workers ready on revision %s", ready, replicas, current)
		set(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, msg)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	}

	// kstatus: Reconciling mirrors Progressing; Stalled marks what needs a person.
	if p := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionProgressing); p != nil && p.Status == metav1.ConditionTrue {
		set(v1alpha1.ConditionReconciling, metav1.ConditionTrue, p.Reason, p.Message)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionReconciling)
	}
	if stalled {
		d := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionDegraded)
		set(v1alpha1.ConditionStalled, metav1.ConditionTrue, d.Reason, d.Message)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionStalled)
	}
	st.ObservedGeneration = gen
	st.Phase = phaseOf(st.Conditions, f.Spec.Suspend)
	return st
}

// maxRecentRestarts bounds status.recentRestarts (the CRD's maxItems).
const maxRecentRestarts = 50

func phaseOf(conds []metav1.Condition, suspend bool) v1alpha1.Phase {
	switch {
	case meta.IsStatusConditionTrue(conds, v1alpha1.ConditionDegraded):
		return v1alpha1.PhaseDegraded
	case suspend && !meta.IsStatusConditionTrue(conds, v1alpha1.ConditionProgressing):
		return v1alpha1.PhaseSuspended
	case meta.IsStatusConditionTrue(conds, v1alpha1.ConditionReady):
		return v1alpha1.PhaseRunning
	case meta.IsStatusConditionTrue(conds, v1alpha1.ConditionProgressing):
		return v1alpha1.PhaseProgressing
	}
	return v1alpha1.PhasePending
}

func headReady(rc *rayv1.RayCluster) bool {
	if c := clusterCondition(rc, rayv1.HeadPodReady); c != nil {
		return c.true
	}
	return rc.Status.State == rayv1.Ready //nolint:staticcheck // KubeRay without status conditions reports only State
}

func clusterSuspended(rc *rayv1.RayCluster) bool {
	c := clusterCondition(rc, rayv1.RayClusterSuspended)
	return c != nil && c.true
}
