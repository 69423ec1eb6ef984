package fleet_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// A node goes silent and the taint manager deletes the workers on it: without a kubelet they stay
// Terminating, and KubeRay counts them. Once past their grace period they are force-deleted, for
// KubeRay to replace; those on a Ready node, and any not being deleted, are left alone, and nothing
// is counted against the restart budget.
func TestStrandedWorkersAreForceDeleted(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(3).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.headReady(rc)
	silent, up := e.node("silent-"+e.ns, corev1.ConditionUnknown), e.node("up-"+e.ns, corev1.ConditionTrue)
	w := e.workers(rc, 3, rayspecs.WorkerHash(rc), true)
	e.bind(w[0], silent)
	e.bind(w[1], silent)
	e.bind(w[2], up)
	e.reconcile("agents")

	// The taint manager's deletion of w-0, and a deletion on the Ready node; a finalizer stands for
	// the kubelet that would finish them.
	deleted := e.deleteHeld(w[0])
	e.deleteHeld(w[2])
	e.clock.SetTime(deleted.Add(supervisor.StrandedAfter - time.Second))
	if res := e.reconcile("agents"); res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Errorf("requeued after %s, want within the second left of the margin", res.RequeueAfter)
	}
	for _, name := range w {
		if p := e.pod(name); p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == 0 {
			t.Errorf("%s force-deleted before the margin passed", name)
		}
	}

	e.clock.SetTime(deleted.Add(supervisor.StrandedAfter))
	e.reconcile("agents")
	if p := e.pod(w[0]); p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 0 {
		t.Errorf("the stranded worker %s: grace %v, want force-deleted (0)", w[0], p.DeletionGracePeriodSeconds)
	}
	if p := e.pod(w[1]); p.DeletionTimestamp != nil {
		t.Errorf("%s, not being deleted, was deleted: its node's silence is the pods' toleration's to judge", w[1])
	}
	if p := e.pod(w[2]); *p.DeletionGracePeriodSeconds == 0 {
		t.Errorf("%s, terminating on a Ready node, was force-deleted", w[2])
	}
	if ev := e.event(fleet.EventStrandedWorkerDeleted); !strings.Contains(ev, w[0]) || !strings.Contains(ev, "node "+silent+" is Ready=Unknown") {
		t.Errorf("event %q: want the worker and its node's condition", ev)
	}
	if f := e.get("agents"); f.Status.Restarts != (v1alpha1.RestartCounts{}) || len(f.Status.RecentRestarts) != 0 {
		t.Errorf("restarts %+v %v: a node's failure is not the agents' (no restart recorded)", f.Status.Restarts, f.Status.RecentRestarts)
	}

	// Turned off, a stranded worker stays.
	e.r.ForceDeleteStrandedWorkers = false
	extra := e.workers(rc, 1, rayspecs.WorkerHash(rc), true)[0]
	e.bind(extra, silent)
	e.clock.SetTime(e.deleteHeld(extra).Add(time.Hour))
	e.reconcile("agents")
	if p := e.pod(extra); *p.DeletionGracePeriodSeconds == 0 {
		t.Errorf("%s force-deleted with --force-delete-stranded-workers=false", extra)
	}
}

// node creates a node with its Ready condition, in that state for an hour.
func (e *env) node(name string, ready corev1.ConditionStatus) string {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	e.apply(n)
	e.t.Cleanup(func() { _ = k8s.Delete(e.ctx, n) })
	// In that state for an hour: a silent node has been silent long enough.
	since := metav1.NewTime(time.Now().Add(-time.Hour))
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "Test", LastTransitionTime: since, LastHeartbeatTime: since}}
	if err := k8s.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	return name
}

// bind binds a pod to a node, as the scheduler does.
func (e *env) bind(pod, node string) {
	e.t.Helper()
	p := e.pod(pod)
	if err := k8s.SubResource("binding").Create(e.ctx, p, &corev1.Binding{Target: corev1.ObjectReference{Kind: "Node", Name: node}}); err != nil {
		e.t.Fatalf("binding %s to %s: %v", pod, node, err)
	}
}

// deleteHeld deletes a pod that a finalizer keeps (as a kubelet that never answers would), and
// returns its deletionTimestamp: the end of its grace period.
func (e *env) deleteHeld(pod string) time.Time {
	e.t.Helper()
	p := e.pod(pod)
	p.Finalizers = append(p.Finalizers, "agentfleet.dev/test-kubelet")
	if err := k8s.Update(e.ctx, p); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if p := e.podOrNil(pod); p != nil {
			p.Finalizers = nil
			_ = k8s.Update(e.ctx, p)
		}
	})
	if err := k8s.Delete(e.ctx, p, client.GracePeriodSeconds(30)); err != nil {
		e.t.Fatal(err)
	}
	return e.pod(pod).DeletionTimestamp.Time
}

func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p := e.podOrNil(name)
	if p == nil {
		e.t.Fatalf("pod %s is gone", name)
	}
	return p
}

func (e *env) podOrNil(name string) *corev1.Pod {
	p := &corev1.Pod{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, p); err != nil {
		if !apierrors.IsNotFound(err) {
			e.t.Fatal(err)
		}
		return nil
	}
	return p
}
