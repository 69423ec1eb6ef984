package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/gpu"
)

var (
	t0     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now    = t0.Add(time.Hour)
	mt0    = metav1.NewTime(t0)
	mtNow  = metav1.NewTime(now)
	xid79  = []string{"xid 79 (GPU has fallen off the bus)"}
	hotGPU = []string{"thermal throttling (HwThermalSlowdown)", "temperature 91C over 85C"}
)

// testGPU is a GPU of a Report in the given state with the given evidence.
func testGPU(index int, uuid string, st gpu.State, evidence ...string) GPU {
	return GPU{
		Sample:  gpu.Sample{Index: index, UUID: uuid, Product: "NVIDIA H100 80GB HBM3", Probed: true},
		Verdict: gpu.Verdict{State: st, Evidence: evidence},
		Health:  gpu.Health{State: st, Evidence: evidence},
	}
}

func report(gpus ...GPU) Report { return Report{Time: now, GPUs: gpus} }

// testNode is a node with the given label value ("" for none) and GPUHealthy conditions.
func testNode(label string, conds ...corev1.NodeCondition) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-1", Labels: map[string]string{gpu.PresentLabel: "true"}}}
	if label != "" {
		n.Labels[gpu.HealthLabel] = label
	}
	n.Status.Conditions = append([]corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}, conds...)
	return n
}

func nodeCond(status corev1.ConditionStatus, reason, msg string, transition, heartbeat metav1.Time) corev1.NodeCondition {
	return corev1.NodeCondition{Type: NodeCondition, Status: status, Reason: reason, Message: msg,
		LastTransitionTime: transition, LastHeartbeatTime: heartbeat}
}

func testPod(name string, conds ...corev1.PodCondition) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "agents", Name: name, Labels: map[string]string{"agentfleet.dev/fleet": "coders"}},
		Spec:       corev1.PodSpec{NodeName: "gpu-node-1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	p.Status.Conditions = append([]corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}, conds...)
	return p
}

// podCond is a pod condition of the agent on gpu-node-1, whose message starts with the node.
func podCond(status corev1.ConditionStatus, reason, msg string, transition metav1.Time) corev1.PodCondition {
	return corev1.PodCondition{Type: PodCondition, Status: status, Reason: reason, Message: "node gpu-node-1: " + msg, LastTransitionTime: transition}
}

func key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: "agents", Name: name}
}

func pods(ps ...*corev1.Pod) map[types.NamespacedName]*corev1.Pod {
	m := map[types.NamespacedName]*corev1.Pod{}
	for _, p := range ps {
		m[key(p.Name)] = p
	}
	return m
}

// holders: GPU-0 to worker-0, GPU-1 to worker-1, GPU-2 and GPU-3 to worker-2 (two containers).
var holders = map[string][]PodRef{
	"GPU-0": {{Namespace: "agents", Name: "worker-0", Container: "ray-worker"}},
	"GPU-1": {{Namespace: "agents", Name: "worker-1", Container: "ray-worker"}},
	"GPU-2": {{Namespace: "agents", Name: "worker-2", Container: "ray-worker"}},
	"GPU-3": {{Namespace: "agents", Name: "worker-2", Container: "sidecar"}},
}

const (
	msgAllHealthy = "4 of 4 GPUs healthy"
	msgGPU2Lost   = "1 of 4 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)"
)

func TestPlan(t *testing.T) {
	healthy := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Healthy), testGPU(2, "GPU-2", gpu.Healthy), testGPU(3, "GPU-3", gpu.Healthy))
	gpu2Lost := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Healthy), testGPU(2, "GPU-2", gpu.Unhealthy, xid79...), testGPU(3, "GPU-3", gpu.Healthy))
	recovering := gpu2Lost
	recovering.GPUs = append([]GPU(nil), gpu2Lost.GPUs...)
	recovering.GPUs[2].Health.QuietSince = t0.Add(30 * time.Minute)
	hot := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Degraded, hotGPU...), testGPU(2, "GPU-2", gpu.Healthy), testGPU(3, "GPU-3", gpu.Healthy))
	hotter := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Degraded, "thermal throttling (HwThermalSlowdown)", "temperature 93C over 85C"), testGPU(2, "GPU-2", gpu.Healthy), testGPU(3, "GPU-3", gpu.Healthy))
	const msgHot = "1 of 4 GPUs degraded: GPU-1: thermal throttling (HwThermalSlowdown), temperature"
	both := report(testGPU(0, "GPU-0", gpu.Unhealthy, "volatile uncorrectable ECC errors 0 -> 2", "xid 48 (double bit ECC error)"),
		testGPU(1, "GPU-1", gpu.Degraded, "row remapping pending (applied at the next GPU reset)"), testGPU(2, "GPU-2", gpu.Unhealthy, xid79...), testGPU(3, "GPU-3", gpu.Healthy))
	lostNoUUID := report(GPU{Sample: gpu.Sample{Index: 5}, Health: gpu.Health{State: gpu.Unhealthy, Evidence: []string{"gpu lost (ERROR_GPU_IS_LOST)"}}})

	running := pods(testPod("worker-0"), testPod("worker-1"), testPod("worker-2"))

	tests := map[string]struct {
		in   PlanInput
		want Changes
	}{
		"first poll, all healthy: condition and label, no pod condition": {
			in: PlanInput{Observation: Observation{Report: healthy, Holders: holders, Pods: running}, Node: testNode("")},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mtNow, mtNow)),
				NodeLabel:     ptr.To(HealthHealthy),
			},
		},
		"steady healthy: nothing": {
			in: PlanInput{Observation: Observation{Report: healthy, Holders: holders, Pods: running},
				Node: testNode(HealthHealthy, nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mt0, mt0)), HeartbeatPeriod: 2 * time.Hour},
		},
		"steady healthy past the heartbeat period: the condition again, transition kept": {
			in: PlanInput{Observation: Observation{Report: healthy, Holders: holders, Pods: running},
				Node: testNode(HealthHealthy, nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mt0, mt0)), HeartbeatPeriod: time.Hour},
			want: Changes{NodeCondition: ptr.To(nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mt0, mtNow))},
		},
		"xid 79 on GPU 2: node False and unhealthy, the pod holding it False": {
			in: PlanInput{Observation: Observation{Report: gpu2Lost, Holders: holders, Pods: running},
				Node: testNode(HealthHealthy, nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mt0, mt0))},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy, msgGPU2Lost, mtNow, mtNow)),
				NodeLabel:     ptr.To(gpu.HealthUnhealthy),
				Pods: []PodChange{{Pod: key("worker-2"), Condition: podCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
					"1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)", mtNow)}},
			},
		},
		"still unhealthy, published: nothing": {
			in: PlanInput{Observation: Observation{Report: gpu2Lost, Holders: holders, Pods: pods(testPod("worker-0"), testPod("worker-1"),
				testPod("worker-2", podCond(corev1.ConditionFalse, ReasonGPUUnhealthy, "1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)", mt0)))},
				Node: testNode(gpu.HealthUnhealthy, nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy, msgGPU2Lost, mt0, mt0))},
		},
		"on probation: the messages say so, transitions kept": {
			in: PlanInput{Observation: Observation{Report: recovering, Holders: holders, Pods: pods(testPod("worker-0"), testPod("worker-1"),
				testPod("worker-2", podCond(corev1.ConditionFalse, ReasonGPUUnhealthy, "1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)", mt0)))},
				Node: testNode(gpu.HealthUnhealthy, nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy, msgGPU2Lost, mt0, mt0))},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
					msgGPU2Lost+" (clean since 2026-03-01T12:30:00Z, recovering)", mt0, mtNow)),
				Pods: []PodChange{{Pod: key("worker-2"), Condition: podCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
					"1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus) (clean since 2026-03-01T12:30:00Z, recovering)", mt0)}},
			},
		},
		"recovered: node True and healthy, the pod True again": {
			in: PlanInput{Observation: Observation{Report: healthy, Holders: holders, Pods: pods(testPod("worker-0"), testPod("worker-1"),
				testPod("worker-2", podCond(corev1.ConditionFalse, ReasonGPUUnhealthy, "1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)", mt0)))},
				Node: testNode(gpu.HealthUnhealthy, nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy, msgGPU2Lost, mt0, mt0))},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mtNow, mtNow)),
				NodeLabel:     ptr.To(HealthHealthy),
				Pods:          []PodChange{{Pod: key("worker-2"), Condition: podCond(corev1.ConditionTrue, ReasonGPUsHealthy, "2 of 2 GPUs healthy", mtNow)}},
			},
		},
		"degraded: node True GPUDegraded, label degraded, the pod True GPUDegraded; readings left out": {
			in: PlanInput{Observation: Observation{Report: hot, Holders: holders, Pods: running},
				Node: testNode(HealthHealthy, nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mt0, mt0))},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionTrue, ReasonGPUDegraded, msgHot, mt0, mtNow)),
				NodeLabel:     ptr.To(HealthDegraded),
				Pods: []PodChange{{Pod: key("worker-1"), Condition: podCond(corev1.ConditionTrue, ReasonGPUDegraded,
					"1 of 1 GPUs degraded: GPU-1: thermal throttling (HwThermalSlowdown), temperature", mtNow)}},
			},
		},
		"degraded and a new temperature: nothing": {
			in: PlanInput{Observation: Observation{Report: hotter, Holders: holders, Pods: pods(testPod("worker-0"), testPod("worker-2"),
				testPod("worker-1", podCond(corev1.ConditionTrue, ReasonGPUDegraded, "1 of 1 GPUs degraded: GPU-1: thermal throttling (HwThermalSlowdown), temperature", mt0)))},
				Node: testNode(HealthDegraded, nodeCond(corev1.ConditionTrue, ReasonGPUDegraded, msgHot, mt0, mt0))},
		},
		"unhealthy and degraded GPUs: unhealthy first, each named with its evidence": {
			in: PlanInput{Observation: Observation{Report: both, Holders: holders, Pods: running}, Node: testNode(HealthHealthy)},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
					"2 of 4 GPUs unhealthy: GPU-0: volatile uncorrectable ECC errors 0 -> 2, xid 48 (double bit ECC error); GPU-2: xid 79 (GPU has fallen off the bus). "+
						"1 of 4 GPUs degraded: GPU-1: row remapping pending (applied at the next GPU reset)", mtNow, mtNow)),
				NodeLabel: ptr.To(gpu.HealthUnhealthy),
				Pods: []PodChange{
					{Pod: key("worker-0"), Condition: podCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
						"1 of 1 GPUs unhealthy: GPU-0: volatile uncorrectable ECC errors 0 -> 2, xid 48 (double bit ECC error)", mtNow)},
					{Pod: key("worker-1"), Condition: podCond(corev1.ConditionTrue, ReasonGPUDegraded,
						"1 of 1 GPUs degraded: GPU-1: row remapping pending (applied at the next GPU reset)", mtNow)},
					{Pod: key("worker-2"), Condition: podCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
						"1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)", mtNow)},
				},
			},
		},
		"a pod not in the cache yet, or finished: no write to it": {
			in: PlanInput{Observation: Observation{Report: gpu2Lost, Holders: holders, Pods: pods(func() *corev1.Pod {
				p := testPod("worker-2")
				p.Status.Phase = corev1.PodFailed
				return p
			}())}, Node: testNode(gpu.HealthUnhealthy, nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy, msgGPU2Lost, mt0, mt0))},
		},
		"a GPU no pod holds: node only": {
			in: PlanInput{Observation: Observation{Report: gpu2Lost, Pods: running}, Node: testNode(HealthHealthy)},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy, msgGPU2Lost, mtNow, mtNow)),
				NodeLabel:     ptr.To(gpu.HealthUnhealthy),
			},
		},
		"a lost GPU that never answered: named by its index": {
			in: PlanInput{Observation: Observation{Report: lostNoUUID, Holders: holders, Pods: running}, Node: testNode("")},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionFalse, ReasonGPUUnhealthy,
					"1 of 1 GPUs unhealthy: GPU at index 5 (no UUID yet): gpu lost (ERROR_GPU_IS_LOST)", mtNow, mtNow)),
				NodeLabel: ptr.To(gpu.HealthUnhealthy),
			},
		},
		"no GPU: True NoGPUs": {
			in: PlanInput{Observation: Observation{Report: report()}, Node: testNode("")},
			want: Changes{
				NodeCondition: ptr.To(nodeCond(corev1.ConditionTrue, ReasonNoGPUs, "NVML finds no GPU on this node", mtNow, mtNow)),
				NodeLabel:     ptr.To(HealthHealthy),
			},
		},
		"label removed by hand: set again, condition untouched": {
			in: PlanInput{Observation: Observation{Report: healthy, Holders: holders, Pods: running},
				Node: testNode("", nodeCond(corev1.ConditionTrue, ReasonGPUsHealthy, msgAllHealthy, mt0, mt0))},
			want: Changes{NodeLabel: ptr.To(HealthHealthy)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.in.NodeName = "gpu-node-1"
			tc.in.Now = now
			got := Plan(tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Plan() (-want +got):\n%s", diff)
			}
			if got.Empty() != (tc.want.NodeCondition == nil && tc.want.NodeLabel == nil && len(tc.want.Pods) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}

func TestPlanBoundsTheMessage(t *testing.T) {
	var gpus []GPU
	for i := range 64 {
		gpus = append(gpus, testGPU(i, "GPU-"+strings.Repeat("é", 40), gpu.Unhealthy, "xid 79 (GPU has fallen off the bus)", "volatile uncorrectable ECC errors 0 -> 2"))
	}
	c := Plan(PlanInput{Observation: Observation{Report: report(gpus...)}, Node: testNode(""), Now: now})
	msg := c.NodeCondition.Message
	if len(msg) > maxMessage || !strings.HasSuffix(msg, " …") {
		t.Errorf("message of %d bytes, want at most %d ending in an ellipsis", len(msg), maxMessage)
	}
	if strings.ToValidUTF8(msg, "?") != msg {
		t.Errorf("message is not valid UTF-8")
	}
}

func TestWithoutReadings(t *testing.T) {
	for in, want := range map[string]string{
		"temperature 91C over 85C":                                "temperature",
		"correctable ECC errors +150 in one poll (over 100)":      "correctable ECC errors",
		"thermal throttling (HwThermalSlowdown)":                  "thermal throttling (HwThermalSlowdown)",
		"page retirement pending (applied at the next GPU reset)": "page retirement pending (applied at the next GPU reset)",
	} {
		if got := withoutReadings(in); got != want {
			t.Errorf("withoutReadings(%q) = %q, want %q", in, got, want)
		}
	}
}
