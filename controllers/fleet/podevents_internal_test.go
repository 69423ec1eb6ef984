package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
)

// workerPod is a worker pod of fleet "agents" as it comes up: new (pending), bound, then Running and
// Ready as kwok or a kubelet writes it.
func workerPod(stage string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "agents-w-1", Labels: map[string]string{v1alpha1.LabelFleet: "agents", v1alpha1.LabelRole: v1alpha1.RoleAgent}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	if stage == "new" {
		return p
	}
	p.Spec.NodeName = "gpu-1"
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
	if stage == "bound" {
		return p
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = append(p.Status.Conditions,
		corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue},
		corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
		corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse},
		corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse})
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "agent", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	if stage == "starting" {
		return p
	}
	p.Status.Conditions[3].Status, p.Status.Conditions[4].Status = corev1.ConditionTrue, corev1.ConditionTrue
	p.Status.ContainerStatuses[0].Ready = true
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	return p
}

func TestComingUp(t *testing.T) {
	ready := workerPod("ready")
	with := func(p *corev1.Pod, f func(*corev1.Pod)) *corev1.Pod {
		p = p.DeepCopy()
		f(p)
		return p
	}
	unready := with(ready, func(p *corev1.Pod) { p.Status.Conditions[4].Status = corev1.ConditionFalse })
	for _, tc := range []struct {
		name     string
		old, new *corev1.Pod
		want     bool
	}{
		{name: "created", new: workerPod("new"), want: true},
		{name: "bound to a node", old: workerPod("new"), new: workerPod("bound"), want: true},
		{name: "its containers starting", old: workerPod("bound"), new: workerPod("starting"), want: true},
		{name: "turned Ready", old: workerPod("starting"), new: ready, want: true},
		{name: "bound and Ready at once (kwok)", old: workerPod("new"), new: ready, want: true},
		{name: "first seen Ready (an informer's list)", new: ready, want: true},
		{name: "turned unready", old: ready, new: unready},
		{name: "being deleted", old: ready, new: with(ready, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} })},
		{name: "Failed", old: ready, new: with(ready, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })},
		{name: "Succeeded", old: ready, new: with(ready, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
		{name: "first seen Failed", new: with(ready, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })},
		{name: "a container terminated", old: ready, new: with(ready, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}
		})},
		{name: "a container restarted", old: ready, new: with(ready, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].RestartCount = 1
			p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137}}
		})},
		{name: "a container in CrashLoopBackOff", old: workerPod("starting"), new: with(workerPod("starting"), func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State.Waiting.Reason = "CrashLoopBackOff"
		})},
		{name: "an init container failed", old: workerPod("starting"), new: with(workerPod("starting"), func(p *corev1.Pod) {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "wait-gcs-ready", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}}
		})},
		{name: "turned Ready after KubeRay's init container completed", old: workerPod("starting"), new: with(ready, func(p *corev1.Pod) {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "wait-gcs-ready", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
		}), want: true},
		{name: "an init container restarted", old: workerPod("starting"), new: with(workerPod("starting"), func(p *corev1.Pod) {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "wait-gcs-ready", RestartCount: 1, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		})},
		{name: "unschedulable", old: workerPod("new"), new: with(workerPod("new"), func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}
		})},
		{name: "a DisruptionTarget", old: ready, new: with(ready, func(p *corev1.Pod) {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByTaintManager"})
		})},
		{name: "the GPU health agent's condition", old: ready, new: with(ready, func(p *corev1.Pod) {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: gpu.PodConditionGPUHealthy, Status: corev1.ConditionFalse})
		})},
		{name: "its labels changed", old: ready, new: with(ready, func(p *corev1.Pod) { p.Labels[v1alpha1.LabelFleet] = "other" })},
		{name: "its annotations changed", old: ready, new: with(ready, func(p *corev1.Pod) { p.Annotations = map[string]string{"a": "b"} })},
		{name: "on another node", old: ready, new: with(ready, func(p *corev1.Pod) { p.Spec.NodeName = "gpu-2" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := comingUp(tc.old, tc.new); got != tc.want {
				t.Errorf("comingUp = %t, want %t", got, tc.want)
			}
		})
	}
}

// recordingQueue records what a handler adds, and after how long.
type recordingQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	added []queued
}

type queued struct {
	Name  string
	After time.Duration
}

func (q *recordingQueue) Add(req reconcile.Request) {
	q.added = append(q.added, queued{Name: req.Name})
}
func (q *recordingQueue) AddAfter(req reconcile.Request, d time.Duration) {
	q.added = append(q.added, queued{Name: req.Name, After: d})
}

// A worker coming up wakes its fleet after the batch; anything else at once, and a pod moved from
// one fleet to another wakes both.
func TestPodEventsBatchWorkersComingUp(t *testing.T) {
	const batch = 100 * time.Millisecond
	h := podEvents(batch)
	ctx := context.Background()
	ready := workerPod("ready")
	moved := ready.DeepCopy()
	moved.Labels[v1alpha1.LabelFleet] = "other"
	head := ready.DeepCopy()
	delete(head.Labels, v1alpha1.LabelFleet)
	for _, tc := range []struct {
		name string
		send func(*recordingQueue)
		want []queued
	}{
		{name: "created", send: func(q *recordingQueue) { h.Create(ctx, event.CreateEvent{Object: workerPod("new")}, q) }, want: []queued{{"agents", batch}}},
		{name: "turned Ready", send: func(q *recordingQueue) {
			h.Update(ctx, event.UpdateEvent{ObjectOld: workerPod("starting"), ObjectNew: ready}, q)
		}, want: []queued{{"agents", batch}}},
		{name: "turned unready", send: func(q *recordingQueue) {
			h.Update(ctx, event.UpdateEvent{ObjectOld: ready, ObjectNew: workerPod("starting")}, q)
		}, want: []queued{{"agents", 0}, {"agents", 0}}},
		{name: "moved to another fleet", send: func(q *recordingQueue) {
			h.Update(ctx, event.UpdateEvent{ObjectOld: ready, ObjectNew: moved}, q)
		}, want: []queued{{"agents", 0}, {"other", 0}}},
		{name: "deleted", send: func(q *recordingQueue) { h.Delete(ctx, event.DeleteEvent{Object: ready}, q) }, want: []queued{{"agents", 0}}},
		{name: "generic", send: func(q *recordingQueue) { h.Generic(ctx, event.GenericEvent{Object: ready}, q) }, want: []queued{{"agents", 0}}},
		{name: "a pod of no fleet", send: func(q *recordingQueue) { h.Create(ctx, event.CreateEvent{Object: head}, q) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &recordingQueue{}
			tc.send(q)
			if diff := cmp.Diff(tc.want, q.added); diff != "" {
				t.Errorf("enqueued (-want +got):\n%s", diff)
			}
		})
	}
}
