package fleet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// DefaultPodComingUpBatch is how long an event of a worker pod that only shows it coming up waits
// before it wakes the pod's fleet. A fleet's workers come up together: KubeRay creates them in one
// pass, the scheduler binds them one after another, the kubelet starts them. Woken at once, the fleet
// had a pass for nearly each of these events (about 12 of its 15 passes while 4 workers came up,
// make bench); batched, the events of a burst wake it once. Nothing is decided on a worker coming up
// that cannot wait this long, and the wait adds at most this much to the fleet turning Ready.
const DefaultPodComingUpBatch = 100 * time.Millisecond

// podEvents wakes the fleet of a worker pod (podToFleet): after batch when the event only shows the
// pod coming up (comingUp), at once for anything else, which may need a decision now (a pod deleted,
// failed, restarted, turned unready, moved to another fleet).
func podEvents(batch time.Duration) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p, ok := e.Object.(*corev1.Pod)
			enqueue(q, podToFleet(ctx, e.Object), wakeAfter(ok && comingUp(nil, p), batch))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, okOld := e.ObjectOld.(*corev1.Pod)
			updated, okNew := e.ObjectNew.(*corev1.Pod)
			if okOld && okNew && comingUp(old, updated) {
				enqueue(q, podToFleet(ctx, updated), batch)
				return
			}
			// The fleet it was in, too: a label changed, or the event is not a pod's.
			enqueue(q, append(podToFleet(ctx, e.ObjectOld), podToFleet(ctx, e.ObjectNew)...), 0)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, podToFleet(ctx, e.Object), 0)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, podToFleet(ctx, e.Object), 0)
		},
	}
}

func wakeAfter(batched bool, batch time.Duration) time.Duration {
	if batched {
		return batch
	}
	return 0
}

// enqueue adds reqs to q, after wait if it is positive. A request already waiting keeps the earlier
// of its times (the workqueue's), so that a burst of events is one pass.
func enqueue(q workqueue.TypedRateLimitingInterface[reconcile.Request], reqs []reconcile.Request, wait time.Duration) {
	for _, req := range reqs {
		if wait > 0 {
			q.AddAfter(req, wait)
		} else {
			q.Add(req)
		}
	}
}

// comingUpConditions are the pod conditions a pod coming up has, and the statuses they may have
// then. Any other condition (a DisruptionTarget, the GPU health agent's, a readiness gate's), or
// PodScheduled False (unschedulable: its pending deadline counts from then), is not coming up.
var comingUpConditions = map[corev1.PodConditionType]map[corev1.ConditionStatus]bool{
	corev1.PodScheduled:              {corev1.ConditionTrue: true},
	corev1.PodReadyToStartContainers: {corev1.ConditionTrue: true, corev1.ConditionFalse: true},
	corev1.PodInitialized:            {corev1.ConditionTrue: true, corev1.ConditionFalse: true},
	corev1.ContainersReady:           {corev1.ConditionTrue: true, corev1.ConditionFalse: true},
	corev1.PodReady:                  {corev1.ConditionTrue: true, corev1.ConditionFalse: true},
}

// comingUp says whether a worker pod, changed from old (nil: new, or first seen), only shows it
// coming up: created, bound to a node, its init containers done, its containers starting or
// started, turned Ready. It must not be deleted or being deleted, Failed or Succeeded, have a
// container that terminated (an init container: other than with exit code 0), restarted or waits
// for a reason other than starting, have any condition outside comingUpConditions, have
// turned unready, or have changed its labels or annotations.
func comingUp(old, p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() || (p.Status.Phase != corev1.PodPending && p.Status.Phase != corev1.PodRunning) {
		return false
	}
	for _, c := range p.Status.Conditions {
		if !comingUpConditions[c.Type][c.Status] {
			return false
		}
	}
	for i, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		init := i == 0
		for _, cs := range statuses {
			if cs.RestartCount > 0 || cs.LastTerminationState.Terminated != nil {
				return false
			}
			// An init container that ran to completion is how a pod starts (KubeRay gives every
			// worker one that waits for the head's GCS); any other end is not.
			if t := cs.State.Terminated; t != nil && (!init || t.ExitCode != 0) {
				return false
			}
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
				return false
			}
		}
	}
	if old == nil {
		return true
	}
	if (old.Spec.NodeName != "" && old.Spec.NodeName != p.Spec.NodeName) || (podReady(old) && !podReady(p)) {
		return false
	}
	return equality.Semantic.DeepEqual(old.Labels, p.Labels) && equality.Semantic.DeepEqual(old.Annotations, p.Annotations)
}
