package fleet_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// Kinds of write the fault-injecting client counts.
const (
	writeStatus     = "AgentFleet status" // a patch of a fleet's status
	writeRayCluster = "RayCluster"        // a patch of a RayCluster (the handover of workersToDelete)
)

// faultyClient wraps the real client and fails chosen writes: faults[kind][n] is the error of the
// n-th write (from 1) of that kind. The failed write does not reach the API server.
type faultyClient struct {
	client.Client
	faults map[string]map[int]error

	mu     sync.Mutex
	writes map[string]int
}

func newFaultyClient(c client.Client, faults map[string]map[int]error) *faultyClient {
	return &faultyClient{Client: c, faults: faults, writes: map[string]int{}}
}

func (c *faultyClient) fault(kind string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes[kind]++
	return c.faults[kind][c.writes[kind]]
}

func (c *faultyClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if _, ok := obj.(*rayv1.RayCluster); ok {
		if err := c.fault(writeRayCluster); err != nil {
			return err
		}
	}
	return c.Client.Patch(ctx, obj, patch, opts...)
}

func (c *faultyClient) Status() client.SubResourceWriter {
	return faultyStatus{SubResourceWriter: c.Client.Status(), c: c}
}

type faultyStatus struct {
	client.SubResourceWriter
	c *faultyClient
}

func (s faultyStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if _, ok := obj.(*v1alpha1.AgentFleet); ok {
		if err := s.c.fault(writeStatus); err != nil {
			return err
		}
	}
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

var (
	errServer   = apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
	errConflict = apierrors.NewConflict(schema.GroupResource{Group: "agentfleet.dev", Resource: "agentfleets"}, "agents", errors.New("the object has been modified"))
)

// crash marks worker pods as crashed: their container exited with code 1.
func (e *env) crash(names ...string) {
	e.t.Helper()
	for _, name := range names {
		pod := &corev1.Pod{}
		if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, pod); err != nil {
			e.t.Fatal(err)
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "ray-worker", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}
		if err := k8s.Status().Update(e.ctx, pod); err != nil {
			e.t.Fatal(err)
		}
	}
}

// reconcileWith runs one reconcile with a reconciler of its own on c: a new operator process, with
// no memory of the previous ones.
func (e *env) reconcileWith(c client.Client, events *record.FakeRecorder, name string) (ctrl.Result, error) {
	r := fleet.NewDirectReconciler(c, c)
	r.Clock, r.Recorder = e.clock, events
	return r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: e.ns, Name: name}})
}

func (e *env) workersToDelete(name string) []string {
	e.t.Helper()
	return e.rayCluster(name).Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete
}

func replacedEvents(events *record.FakeRecorder) int {
	n := 0
	for {
		select {
		case ev := <-events.Events:
			if strings.Contains(ev, " "+fleet.EventWorkerReplaced+" ") {
				n++
			}
		default:
			return n
		}
	}
}

// The restart ledger: whichever write fails, and whatever process does the next reconcile, a
// replacement is recorded once, handed over once it is recorded, and counted in status, Events
// and the budget alike.
func TestRestartLedgerUnderFaults(t *testing.T) {
	for name, tc := range map[string]struct {
		faults map[string]map[int]error
		// After the faulty reconcile:
		wantErr      bool
		wantRequeue  bool
		wantRecorded []string
		wantHanded   []string
		wantEvents   int
	}{
		"no fault": {
			wantRecorded: []string{"crashed"}, wantHanded: []string{"crashed"}, wantEvents: 1,
		},
		"the record write fails: nothing handed over, nothing counted": {
			faults:  map[string]map[int]error{writeStatus: {1: errServer}},
			wantErr: true,
		},
		"the record write conflicts: requeued, nothing handed over, nothing counted": {
			faults:      map[string]map[int]error{writeStatus: {1: errConflict}},
			wantRequeue: true,
		},
		"the handover fails after the record: recorded, handed over by the next process without a second record": {
			faults:       map[string]map[int]error{writeRayCluster: {1: errServer}},
			wantErr:      true,
			wantRecorded: []string{"crashed"}, wantEvents: 1,
		},
		"the final status write conflicts: requeued, the record kept": {
			faults:       map[string]map[int]error{writeStatus: {2: errConflict}},
			wantRequeue:  true,
			wantRecorded: []string{"crashed"}, wantHanded: []string{"crashed"}, wantEvents: 1,
		},
		"the final status write fails: an error, the record kept": {
			faults:       map[string]map[int]error{writeStatus: {2: errServer}},
			wantErr:      true,
			wantRecorded: []string{"crashed"}, wantHanded: []string{"crashed"}, wantEvents: 1,
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.apply(e.fleet("agents").Replicas(3).Obj())
			e.reconcile("agents")
			rc := e.rayCluster("agents")
			pods := e.workers(rc, 3, rayspecs.WorkerHash(rc), true)
			e.crash(pods[0])
			rename := func(names []string) []string {
				var out []string
				for _, n := range names {
					out = append(out, strings.ReplaceAll(n, "crashed", pods[0]))
				}
				return out
			}

			events := record.NewFakeRecorder(100)
			res, err := e.reconcileWith(newFaultyClient(k8s, tc.faults), events, "agents")
			if (err != nil) != tc.wantErr {
				t.Fatalf("reconcile error = %v, want an error: %v", err, tc.wantErr)
			}
			if requeued := res.RequeueAfter > 0; requeued != tc.wantRequeue {
				t.Errorf("requeued = %v (after %s), want %v", requeued, res.RequeueAfter, tc.wantRequeue)
			}
			check := func(when string, wantRecorded, wantHanded []string, wantEvents, gotEvents int) {
				t.Helper()
				f := e.get("agents")
				var recorded []string
				for _, r := range f.Status.RecentRestarts {
					recorded = append(recorded, r.Worker)
				}
				if diff := cmp.Diff(wantRecorded, recorded); diff != "" {
					t.Errorf("%s: recentRestarts (-want +got):\n%s", when, diff)
				}
				if got := int(f.Status.Restarts.Crashed); got != len(recorded) {
					t.Errorf("%s: status.restarts.crashed = %d, %d records", when, got, len(recorded))
				}
				if diff := cmp.Diff(wantHanded, e.workersToDelete("agents")); diff != "" {
					t.Errorf("%s: workersToDelete (-want +got):\n%s", when, diff)
				}
				if gotEvents != wantEvents {
					t.Errorf("%s: %d WorkerReplaced events, want %d", when, gotEvents, wantEvents)
				}
			}
			check("after the faulty reconcile", rename(tc.wantRecorded), rename(tc.wantHanded), tc.wantEvents, replacedEvents(events))

			// The next reconcile, by a new process, with no fault: exactly one record and one
			// handover in all, whatever happened before.
			again := record.NewFakeRecorder(100)
			if _, err := e.reconcileWith(k8s, again, "agents"); err != nil {
				t.Fatal(err)
			}
			check("after a clean reconcile", []string{pods[0]}, []string{pods[0]}, 1-tc.wantEvents, replacedEvents(again))
		})
	}
}

// However often the handover fails, the budget read from the ledger is never exceeded and no
// worker is recorded twice.
func TestRestartBudgetHoldsWhenHandoversFail(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(4).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To(int32(2)), WindowSeconds: 3600}
	}).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	pods := e.workers(rc, 4, rayspecs.WorkerHash(rc), true)
	e.crash(pods...)

	faults := map[string]map[int]error{writeRayCluster: {}}
	for n := 1; n <= 10; n++ {
		faults[writeRayCluster][n] = errServer
	}
	faulty := newFaultyClient(k8s, faults)
	for range 5 {
		_, _ = e.reconcileWith(faulty, record.NewFakeRecorder(100), "agents")
	}
	if _, err := e.reconcileWith(k8s, record.NewFakeRecorder(100), "agents"); err != nil {
		t.Fatal(err)
	}
	f := e.get("agents")
	seen := map[string]bool{}
	for _, r := range f.Status.RecentRestarts {
		if seen[r.Worker] {
			t.Errorf("worker %s recorded twice: %+v", r.Worker, f.Status.RecentRestarts)
		}
		seen[r.Worker] = true
	}
	// Exactly the budget: two recorded (never more, and not fewer: those are real replacements),
	// and those two handed over once the API server takes the handover.
	var recorded []string
	for _, r := range f.Status.RecentRestarts {
		recorded = append(recorded, r.Worker)
	}
	if len(recorded) != 2 {
		t.Errorf("%d replacements recorded (%v), want the budget's 2", len(recorded), recorded)
	}
	if diff := cmp.Diff(recorded, e.workersToDelete("agents")); diff != "" {
		t.Errorf("handed over (-recorded +workersToDelete):\n%s", diff)
	}
	e.condition("agents", v1alpha1.ConditionDegraded, "True", v1alpha1.ReasonRestartBudgetExhausted, "restart budget of 2 replacements in 3600s spent")
}
