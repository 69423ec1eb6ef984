package fleet_test

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// lease writes a heartbeat Lease for a worker, renewed at renewed.
func (e *env) lease(fleet, worker string, renewed time.Time) {
	e.t.Helper()
	e.apply(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: worker, Namespace: e.ns, Labels: map[string]string{v1alpha1.LabelFleet: fleet}},
		Spec:       coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: renewed}},
	})
}

func (e *env) leaseExists(name string) bool {
	e.t.Helper()
	err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, &coordinationv1.Lease{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

// Leases do not outlive their workers: those of workers that are gone (rolled, scaled down, deleted
// by KubeRay) are deleted once stale, and a fresh one whose pod the cache does not show yet is kept.
func TestLeasesOfGoneWorkersAreDeleted(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(1).Heartbeat(10, 60, 20, 500).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	live := e.workers(rc, 1, rayspecs.WorkerHash(rc), true)[0]
	now := e.clock.Now()
	e.lease("agents", live, now.Add(-time.Second))
	e.lease("agents", "agents-agents-worker-gone", now.Add(-2*time.Minute)) // its worker was rolled
	e.lease("agents", "agents-agents-worker-new", now.Add(-time.Second))    // a pod the cache may not show yet
	e.lease("other", "other-agents-worker-000", now.Add(-time.Hour))        // another fleet's

	e.reconcile("agents")
	for name, want := range map[string]bool{live: true, "agents-agents-worker-gone": false, "agents-agents-worker-new": true, "other-agents-worker-000": true} {
		if got := e.leaseExists(name); got != want {
			t.Errorf("Lease %s exists: %v, want %v", name, got, want)
		}
	}
	// The new one goes too once it is stale and still has no pod.
	e.clock.Step(61 * time.Second)
	e.reconcile("agents")
	if e.leaseExists("agents-agents-worker-new") {
		t.Error("a stale Lease without a worker was kept")
	}
}
