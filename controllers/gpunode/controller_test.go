package gpunode_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/controllers/gpunode"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/test/cluster"
)

// These tests run the reconciler synchronously against a real kube-apiserver (envtest), writing the
// node conditions themselves, as the kubelet, GKE, the EKS agent or the GPU health agent would.
var k8s client.Client

func TestMain(m *testing.M) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	os.Exit(cluster.RunWithAPIServer(m, scheme, func(c client.Client) { k8s = c }))
}

type env struct {
	t      *testing.T
	ctx    context.Context
	r      *gpunode.Reconciler
	events *record.FakeRecorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	e := &env{t: t, ctx: ctrl.LoggerInto(context.Background(), ctrl.Log), r: gpunode.NewReconciler(k8s), events: record.NewFakeRecorder(100)}
	e.r.Recorder = e.events
	return e
}

// node creates a node with gpus GPUs (0: a CPU node), the labels given, and the conditions given.
func (e *env) node(gpus int64, labels map[string]string, conds ...corev1.NodeCondition) string {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{GenerateName: "node-", Labels: labels}}
	if err := k8s.Create(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = k8s.Delete(context.Background(), n) })
	n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}
	if gpus > 0 {
		n.Status.Capacity[gpu.Resource] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	n.Status.Conditions = conds
	if err := k8s.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	return n.Name
}

// setCondition writes a node condition, as its owner would.
func (e *env) setCondition(name string, c corev1.NodeCondition) {
	e.t.Helper()
	n := e.get(name)
	found := false
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == c.Type {
			n.Status.Conditions[i], found = c, true
		}
	}
	if !found {
		n.Status.Conditions = append(n.Status.Conditions, c)
	}
	if err := k8s.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(name string) *corev1.Node {
	e.t.Helper()
	n := &corev1.Node{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Name: name}, n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) reconcile(name string) {
	e.t.Helper()
	if _, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: name}}); err != nil {
		e.t.Fatalf("reconcile %s: %v", name, err)
	}
}

// health asserts the node's health label and the operator's annotation ("" for absent).
func (e *env) health(name, wantLabel, wantSetBy string) {
	e.t.Helper()
	n := e.get(name)
	got := [2]string{n.Labels[gpu.HealthLabel], n.Annotations[gpu.HealthSetByAnnotation]}
	if diff := cmp.Diff([2]string{wantLabel, wantSetBy}, got); diff != "" {
		e.t.Errorf("node %s: [label, set-by] (-want +got):\n%s", name, diff)
	}
}

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

func cond(t string, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
	return corev1.NodeCondition{Type: corev1.NodeConditionType(t), Status: s, Reason: reason, Message: msg}
}

func TestAForeignConditionLabelsTheNodeUntilItClears(t *testing.T) {
	e := newEnv(t)
	name := e.node(8, nil, cond("XidCriticalError", corev1.ConditionFalse, "NoXid", ""))
	e.reconcile(name)
	e.health(name, "", "")

	e.setCondition(name, cond("XidCriticalError", corev1.ConditionTrue, "XidCriticalErrorFound", "XID 79 on GPU 0000:3b:00.0"))
	e.reconcile(name)
	e.health(name, gpu.HealthUnhealthy, gpu.HealthSetByOperator)
	if ev := e.event(gpunode.EventGPUFaultLabelled); !strings.Contains(ev, "XidCriticalError=True (XidCriticalErrorFound: XID 79 on GPU 0000:3b:00.0)") {
		t.Errorf("event %q does not carry the evidence", ev)
	}
	rv := e.get(name).ResourceVersion
	e.reconcile(name)
	if got := e.get(name).ResourceVersion; got != rv {
		t.Errorf("a second reconcile wrote the node (resourceVersion %s → %s)", rv, got)
	}

	e.setCondition(name, cond("XidCriticalError", corev1.ConditionFalse, "NoXid", ""))
	e.reconcile(name)
	e.health(name, "", "")
	e.event(gpunode.EventGPUFaultCleared)
}

func TestTheAgentsLabelIsNeverTouched(t *testing.T) {
	e := newEnv(t)
	// The agent runs on the node: its condition and its label.
	name := e.node(8, map[string]string{gpu.HealthLabel: gpu.HealthUnhealthy},
		cond(gpu.NodeConditionGPUHealthy, corev1.ConditionFalse, "XidCriticalError", "GPU-5d1c: XID 79"),
		cond("XidCriticalError", corev1.ConditionTrue, "XidCriticalErrorFound", ""))
	e.reconcile(name)
	e.health(name, gpu.HealthUnhealthy, "")

	// Every fault clears, but the label is the agent's: it stays until the agent changes it.
	e.setCondition(name, cond(gpu.NodeConditionGPUHealthy, corev1.ConditionTrue, "Healthy", ""))
	e.setCondition(name, cond("XidCriticalError", corev1.ConditionFalse, "NoXid", ""))
	e.reconcile(name)
	e.health(name, gpu.HealthUnhealthy, "")

	// A healthy agent's node with a foreign fault is not relabelled: the agent's verdict holds.
	e.setCondition(name, cond("XidCriticalError", corev1.ConditionTrue, "XidCriticalErrorFound", ""))
	n := e.get(name)
	n.Labels[gpu.HealthLabel] = gpu.HealthHealthy
	if err := k8s.Update(e.ctx, n); err != nil {
		t.Fatal(err)
	}
	e.reconcile(name)
	e.health(name, gpu.HealthHealthy, "")
}

func TestAPersonsLabelStaysAndTheAgentTakesOurs(t *testing.T) {
	e := newEnv(t)
	person := e.node(8, map[string]string{gpu.HealthLabel: gpu.HealthUnhealthy}, cond("GpuMemWatch", corev1.ConditionTrue, "", ""))
	e.reconcile(person)
	e.health(person, gpu.HealthUnhealthy, "")
	e.setCondition(person, cond("GpuMemWatch", corev1.ConditionFalse, "", ""))
	e.reconcile(person)
	e.health(person, gpu.HealthUnhealthy, "")

	// Our label, then the agent arrives on the node: the label is its own from now on.
	ours := e.node(8, nil, cond("AcceleratedHardwareReady", corev1.ConditionFalse, "NvidiaDoubleBitError", ""))
	e.reconcile(ours)
	e.health(ours, gpu.HealthUnhealthy, gpu.HealthSetByOperator)
	e.setCondition(ours, cond(gpu.NodeConditionGPUHealthy, corev1.ConditionFalse, "UncorrectableECC", "GPU-1: 2 uncorrectable ECC errors"))
	e.reconcile(ours)
	e.health(ours, gpu.HealthUnhealthy, "")
}

func TestOnlyGPUNodesAndTheOptOut(t *testing.T) {
	e := newEnv(t)
	cpu := e.node(0, nil, cond("XidCriticalError", corev1.ConditionTrue, "", ""))
	e.reconcile(cpu)
	e.health(cpu, "", "")

	faulty := e.node(8, nil, cond("SysLogsXIDError", corev1.ConditionTrue, "", "XID 48"))
	e.reconcile(faulty)
	e.health(faulty, gpu.HealthUnhealthy, gpu.HealthSetByOperator)
	// Labelling turned off: the labels the operator set go, even while the fault lasts.
	e.r.LabelFaultyNodes = false
	e.reconcile(faulty)
	e.health(faulty, "", "")

	// Conditions not configured are no fault.
	e.r.LabelFaultyNodes = true
	e.r.FaultConditions = []gpunode.FaultCondition{{Type: "GPUHealthy", Status: corev1.ConditionFalse}}
	e.reconcile(faulty)
	e.health(faulty, "", "")
}

func TestAGoneNodeIsNoError(t *testing.T) {
	e := newEnv(t)
	e.reconcile("no-such-node")
}
