package fleet_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

// These tests run the reconciler synchronously against a real kube-apiserver (envtest): no
// KubeRay, no kubelet. What KubeRay and kubelets would do (pods, RayCluster status) the tests write
// themselves, so that each phase is tested on exactly the observation it reacts to.
var k8s client.Client

func TestMain(m *testing.M) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, rayv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	os.Exit(cluster.RunWithAPIServer(m, scheme, func(c client.Client) { k8s = c }))
}

// env is one test's world: a namespace of its own, a reconciler with a fake clock and recorder.
type env struct {
	t      *testing.T
	ctx    context.Context
	ns     string
	r      *fleet.Reconciler
	clock  *clocktesting.FakeClock
	events *record.FakeRecorder
	pods   int // worker pods made so far, for their names
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	ctx := ctrl.LoggerInto(context.Background(), ctrl.Log)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "fleet-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	r := fleet.NewDirectReconciler(k8s, k8s)
	// The fake clock starts at the namespace's creation stamp: the API server stamps objects from its
	// real clock, and the operator's clock agrees with it in production. A test whose outcome depends
	// on the time sets the clock from the stamp of the object it is about (clockFrom), never from the
	// time of day.
	e := &env{t: t, ctx: ctx, ns: ns.Name, r: r, clock: clocktesting.NewFakeClock(ns.CreationTimestamp.Time), events: record.NewFakeRecorder(1000)}
	r.Clock, r.Recorder = e.clock, e.events
	return e
}

// clockFrom sets the fake clock to the creation stamp of a fleet, and returns it.
func (e *env) clockFrom(name string) time.Time {
	e.t.Helper()
	created := e.get(name).CreationTimestamp.Time
	e.clock.SetTime(created)
	return created
}

func (e *env) fleet(name string) *builder.FleetWrapper {
	return builder.MakeAgentFleet(name, e.ns).Mutate(func(f *v1alpha1.AgentFleet) { f.UID, f.Generation = "", 0 })
}

// apply creates objects.
func (e *env) apply(objs ...client.Object) {
	e.t.Helper()
	for _, o := range objs {
		if err := k8s.Create(e.ctx, o); err != nil {
			e.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// reconcile runs one synchronous reconcile of the fleet and fails the test on an error.
func (e *env) reconcile(name string) ctrl.Result {
	e.t.Helper()
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: e.ns, Name: name}})
	if err != nil {
		e.t.Fatalf("reconcile %s: %v", name, err)
	}
	return res
}

func (e *env) get(name string) *v1alpha1.AgentFleet {
	e.t.Helper()
	f := &v1alpha1.AgentFleet{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, f); err != nil {
		e.t.Fatal(err)
	}
	return f
}

func (e *env) rayCluster(name string) *rayv1.RayCluster {
	e.t.Helper()
	rc := &rayv1.RayCluster{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, rc); err != nil {
		e.t.Fatalf("RayCluster %s: %v", name, err)
	}
	return rc
}

func (e *env) noRayCluster(name string) {
	e.t.Helper()
	err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, &rayv1.RayCluster{})
	if !apierrors.IsNotFound(err) {
		e.t.Fatalf("RayCluster %s: err = %v, want NotFound (nothing half-created)", name, err)
	}
}

// condition asserts a condition of the fleet, and that its message contains msg.
func (e *env) condition(name, condType string, status metav1.ConditionStatus, reason, msg string) {
	e.t.Helper()
	f := e.get(name)
	c := meta.FindStatusCondition(f.Status.Conditions, condType)
	if c == nil {
		e.t.Fatalf("fleet %s has no %s condition: %+v", name, condType, f.Status.Conditions)
	}
	if c.Status != status || c.Reason != reason || !strings.Contains(c.Message, msg) {
		e.t.Errorf("condition %s = %s/%s %q, want %s/%s containing %q", condType, c.Status, c.Reason, c.Message, status, reason, msg)
	}
	if c.ObservedGeneration != f.Generation {
		e.t.Errorf("condition %s observedGeneration %d, fleet generation %d", condType, c.ObservedGeneration, f.Generation)
	}
}

// event asserts that an event with reason was recorded, and returns its text.
func (e *env) event(reason string) string {
	e.t.Helper()
	for {
		select {
		case ev := <-e.events.Events:
			if strings.Contains(ev, " "+reason+" ") {
				return ev
			}
		default:
			e.t.Fatalf("no %s event", reason)
			return ""
		}
	}
}

// workers creates n Ready worker pods of the fleet's RayCluster on the given worker hash, as KubeRay
// and a kubelet would.
func (e *env) workers(rc *rayv1.RayCluster, n int, hash string, ready bool) []string {
	e.t.Helper()
	var names []string
	for range n {
		e.pods++
		name := fmt.Sprintf("%s-agents-worker-%03d", rc.Name, e.pods)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rc.Namespace, Labels: map[string]string{
				rayutils.RayClusterLabelKey: rc.Name, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup, rayutils.RayNodeTypeLabelKey: string(rayv1.WorkerNode),
				v1alpha1.LabelFleet: rc.Name, v1alpha1.LabelWorkerHash: hash,
			}},
			// The environment of the RayCluster's template, as KubeRay would create it.
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "ray-worker", Image: "agent", Env: templateEnv(rc)}}},
		}
		e.apply(pod)
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}
		if err := k8s.Status().Update(e.ctx, pod); err != nil {
			e.t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// headReady writes the RayCluster status KubeRay writes once the head is ready.
func (e *env) headReady(rc *rayv1.RayCluster) {
	e.t.Helper()
	rc = e.rayCluster(rc.Name)
	rc.Status.State = rayv1.Ready                      //nolint:staticcheck // KubeRay v1.6 still writes State
	rc.Status.Head.ServiceName = rc.Name + "-head-svc" // KubeRay's name; the operator reads it, never guesses it
	rc.Status.ObservedGeneration = rc.Generation       // KubeRay observed the spec
	meta.SetStatusCondition(&rc.Status.Conditions, metav1.Condition{Type: string(rayv1.HeadPodReady), Status: metav1.ConditionTrue, Reason: "HeadPodRunningAndReady"})
	if err := k8s.Status().Update(e.ctx, rc); err != nil {
		e.t.Fatal(err)
	}
}

// templateEnv is the plain environment of the agent container of a RayCluster's worker template.
func templateEnv(rc *rayv1.RayCluster) []corev1.EnvVar {
	var env []corev1.EnvVar
	for _, g := range rc.Spec.WorkerGroupSpecs {
		for _, c := range g.Template.Spec.Containers {
			for _, v := range c.Env {
				if c.Name == rayspecs.WorkerContainer && v.ValueFrom == nil {
					env = append(env, v)
				}
			}
		}
	}
	return env
}
