package fleet_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// gpuNode creates a node with 8 GPUs and the conditions given, named after the test's namespace, and
// returns its name.
func (e *env) gpuNode(suffix string, conds ...corev1.NodeCondition) string {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: e.ns + "-" + suffix}}
	e.apply(n)
	e.t.Cleanup(func() { _ = k8s.Delete(context.Background(), n) })
	n.Status.Capacity = corev1.ResourceList{gpu.Resource: resource.MustParse("8")}
	n.Status.Conditions = conds
	if err := k8s.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	return n.Name
}

// gpuWorker creates a Ready worker pod of the RayCluster on node, holding gpus GPUs (0: a CPU
// worker), as KubeRay, the scheduler and a kubelet would.
func (e *env) gpuWorker(rc *rayv1.RayCluster, node string, gpus int64) string {
	e.t.Helper()
	e.pods++
	name := fmt.Sprintf("%s-agents-worker-%03d", rc.Name, e.pods)
	ctr := corev1.Container{Name: "ray-worker", Image: "agent"}
	if gpus > 0 {
		ctr.Resources.Limits = corev1.ResourceList{gpu.Resource: *resource.NewQuantity(gpus, resource.DecimalSI)}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rc.Namespace, Labels: map[string]string{
			rayutils.RayClusterLabelKey: rc.Name, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup, rayutils.RayNodeTypeLabelKey: string(rayv1.WorkerNode),
			v1alpha1.LabelFleet: rc.Name, v1alpha1.LabelRole: v1alpha1.RoleAgent, v1alpha1.LabelWorkerHash: rayspecs.WorkerHash(rc),
		}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{ctr}},
	}
	e.apply(pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := k8s.Status().Update(e.ctx, pod); err != nil {
		e.t.Fatal(err)
	}
	return name
}

// gpuCondition writes the GPU health agent's pod condition on a worker: False, its GPU failed; True
// with reason GPUDegraded, its GPU is degraded.
func (e *env) gpuCondition(worker string, status corev1.ConditionStatus, reason, message string) {
	e.t.Helper()
	pod := &corev1.Pod{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: worker}, pod); err != nil {
		e.t.Fatal(err)
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: gpu.PodConditionGPUHealthy, Status: status, Reason: reason, Message: message})
	if err := k8s.Status().Update(e.ctx, pod); err != nil {
		e.t.Fatal(err)
	}
}

func TestTheWorkerOnAFailingGPUIsReplacedAlone(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(3).GPUs(1, "NVIDIA-H100-80GB-HBM3").Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	// The agent runs on gpu-a and says one of its GPUs failed; it marked the pod holding it.
	a := e.gpuNode("gpu-a", corev1.NodeCondition{Type: gpu.NodeConditionGPUHealthy, Status: corev1.ConditionFalse, Reason: "XidCriticalError", Message: "GPU-5d1c: XID 79"})
	b := e.gpuNode("gpu-b", corev1.NodeCondition{Type: gpu.NodeConditionGPUHealthy, Status: corev1.ConditionTrue, Reason: "Healthy"})
	healthy, failing, degraded := e.gpuWorker(rc, a, 1), e.gpuWorker(rc, a, 1), e.gpuWorker(rc, b, 1)
	e.headReady(rc)
	msg := fmt.Sprintf("GPU GPU-5d1c0f3a (index 2) on node %s: XID 79 (GPU has fallen off the bus)", a)
	e.gpuCondition(failing, corev1.ConditionFalse, "XidCriticalError", msg)
	e.gpuCondition(degraded, corev1.ConditionTrue, gpu.ReasonGPUDegraded, "GPU-77aa (index 0): thermal throttling")

	e.reconcile("agents")
	if diff := cmp.Diff([]string{failing}, e.workersToDelete("agents")); diff != "" {
		t.Errorf("workersToDelete: only the worker on the failing GPU, not %s on a healthy GPU of the same node nor %s on a degraded one (-want +got):\n%s", healthy, degraded, diff)
	}
	f := e.get("agents")
	if diff := cmp.Diff(v1alpha1.RestartCounts{GPUUnhealthy: 1}, f.Status.Restarts); diff != "" {
		t.Errorf("restarts (-want +got):\n%s", diff)
	}
	wantEvidence := "node " + a + ", XidCriticalError: " + msg
	if n := len(f.Status.RecentRestarts); n != 1 || f.Status.RecentRestarts[0].Reason != supervisor.GPUUnhealthy || f.Status.RecentRestarts[0].Evidence != wantEvidence {
		t.Errorf("recentRestarts = %+v, want one GPUUnhealthy record with evidence %q", f.Status.RecentRestarts, wantEvidence)
	}
	ev := e.event(fleet.EventWorkerReplaced)
	for _, want := range []string{failing, a, "GPU-5d1c0f3a", "XID 79"} {
		if !strings.Contains(ev, want) {
			t.Errorf("event %q does not name %s", ev, want)
		}
	}
	wantFaults := []v1alpha1.GPUFault{
		{Worker: failing, Node: a, Reason: "XidCriticalError", Message: msg},
		{Worker: degraded, Node: b, Reason: gpu.ReasonGPUDegraded, Message: "GPU-77aa (index 0): thermal throttling"},
	}
	if diff := cmp.Diff(wantFaults, f.Status.GPUFaults); diff != "" {
		t.Errorf("status.gpuFaults (-want +got):\n%s", diff)
	}

	// The next reconcile, before KubeRay acted, neither records nor hands over more.
	e.reconcile("agents")
	if got := e.get("agents").Status.Restarts.GPUUnhealthy; got != 1 {
		t.Errorf("restarts.gpuUnhealthy = %d after a second reconcile, want 1", got)
	}
	if diff := cmp.Diff([]string{failing}, e.workersToDelete("agents")); diff != "" {
		t.Errorf("workersToDelete (-want +got):\n%s", diff)
	}
}

func TestANodeLevelFaultReplacesTheGPUWorkersOnThatNode(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(4).GPUs(1, "").Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	// GKE says a GPU of gpu-x failed; no agent runs there to say which.
	x := e.gpuNode("gpu-x", corev1.NodeCondition{Type: "XidCriticalError", Status: corev1.ConditionTrue, Reason: "XidCriticalErrorFound", Message: "XID 79 on GPU 0000:3b:00.0"})
	y := e.gpuNode("gpu-y")
	onX := []string{e.gpuWorker(rc, x, 1), e.gpuWorker(rc, x, 1)}
	cpu := e.gpuWorker(rc, x, 0) // holds no GPU: untouched
	elsewhere := e.gpuWorker(rc, y, 1)
	e.headReady(rc)

	e.reconcile("agents")
	if diff := cmp.Diff(onX, e.workersToDelete("agents")); diff != "" {
		t.Errorf("workersToDelete: the GPU workers on %s, not %s (no GPU) nor %s (-want +got):\n%s", x, cpu, elsewhere, diff)
	}
	f := e.get("agents")
	if got := f.Status.Restarts.GPUUnhealthy; got != 2 {
		t.Errorf("restarts.gpuUnhealthy = %d, want 2", got)
	}
	evidence := "XidCriticalError=True (XidCriticalErrorFound: XID 79 on GPU 0000:3b:00.0)"
	var want []v1alpha1.GPUFault
	for _, w := range onX {
		want = append(want, v1alpha1.GPUFault{Worker: w, Node: x, Reason: supervisor.NodeGPUFault, Message: evidence})
	}
	if diff := cmp.Diff(want, f.Status.GPUFaults); diff != "" {
		t.Errorf("status.gpuFaults (-want +got):\n%s", diff)
	}
	if ev := e.event(fleet.EventWorkerReplaced); !strings.Contains(ev, "node "+x+" has a GPU fault: "+evidence) {
		t.Errorf("event %q does not carry the node's evidence", ev)
	}

	// KubeRay replaces them; the replacements land on gpu-y (rayspecs keeps them off nodes labelled
	// unhealthy). Nothing more is replaced, and the list empties.
	for _, w := range onX {
		if err := k8s.Delete(e.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: w, Namespace: e.ns}}); err != nil {
			t.Fatal(err)
		}
	}
	e.gpuWorker(rc, y, 1)
	e.gpuWorker(rc, y, 1)
	e.reconcile("agents")
	f = e.get("agents")
	if f.Status.Restarts.GPUUnhealthy != 2 || len(f.Status.GPUFaults) != 0 {
		t.Errorf("after the replacement: restarts.gpuUnhealthy %d, gpuFaults %+v; want 2 and none", f.Status.Restarts.GPUUnhealthy, f.Status.GPUFaults)
	}
}

func TestTheWorkerAffinityAvoidsUnhealthyNodes(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(1).GPUs(1, "NVIDIA-H100-80GB-HBM3").Obj())
	e.reconcile("agents")
	aff := e.rayCluster("agents").Spec.WorkerGroupSpecs[0].Template.Spec.Affinity
	want := corev1.NodeSelectorRequirement{Key: gpu.HealthLabel, Operator: corev1.NodeSelectorOpNotIn, Values: []string{gpu.HealthUnhealthy}}
	found := false
	for _, term := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, req := range term.MatchExpressions {
			found = found || cmp.Equal(req, want)
		}
	}
	if !found {
		t.Errorf("the worker template's required node affinity %+v lacks %+v: replacements could land on the faulty node", aff, want)
	}
}

// A fleet that blocks (its prompt gone) while its workers run keeps being metered: the workers of
// its RayCluster still hold their GPUs.
func TestABlockedFleetIsStillMetered(t *testing.T) {
	e := newEnv(t)
	const product = "NVIDIA-L4"
	node := e.gpuNode("l4")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"system.md": "You are helpful."}}
	e.apply(cm)
	e.apply(e.fleet("agents").Replicas(2).GPUs(1, product).Prompt("prompts", "system.md").Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.gpuWorker(rc, node, 1)
	e.gpuWorker(rc, node, 1)
	e.reconcile("agents")
	allocated := func() float64 {
		return gathered(t, "agentfleet_gpus_allocated", map[string]string{"namespace": e.ns, "fleet": "agents", "gpu_product": product})
	}
	if got := allocated(); got != 2 {
		t.Fatalf("agentfleet_gpus_allocated = %g, want 2", got)
	}

	if err := k8s.Delete(e.ctx, cm); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, "")
	if got := allocated(); got != 2 {
		t.Errorf("blocked: agentfleet_gpus_allocated = %g, want 2 (the workers still run)", got)
	}
	before := gathered(t, "agentfleet_gpu_seconds_total", map[string]string{"namespace": e.ns, "fleet": "agents", "gpu_product": product})
	// The meter carries the integral to each scrape on the real clock: microseconds pass between
	// two gathers, and 2 GPUs make them count.
	if after := gathered(t, "agentfleet_gpu_seconds_total", map[string]string{"namespace": e.ns, "fleet": "agents", "gpu_product": product}); after <= before {
		t.Errorf("blocked: agentfleet_gpu_seconds_total went from %g to %g, want it rising (2 GPUs held)", before, after)
	}
}

// gathered is the value of the series of a metric of the operator's registry whose labels include
// want (-1 when there is none).
func gathered(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			found := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					found++
				}
			}
			if found == len(want) {
				if m.Counter != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
