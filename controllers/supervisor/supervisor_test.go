package supervisor_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	sv "github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/gpu"
)

var now = time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

// pod is a Ready, Running worker since 10 minutes, with its container as given.
func pod(name string, mutate ...func(*corev1.Pod)) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ago(11 * time.Minute)},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: ago(10 * time.Minute)}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "ray-worker", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		},
	}
	for _, m := range mutate {
		m(&p)
	}
	return p
}

func lease(name string, renewed time.Duration, state string, lastStep time.Duration, repeats, taskSteps int) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ago(10 * time.Minute), Annotations: map[string]string{
			heartbeatapi.AnnotationState: state, heartbeatapi.AnnotationLastStepTime: now.Add(-lastStep).Format(heartbeatapi.TimeFormat),
			heartbeatapi.AnnotationActionRepeats: strconv.Itoa(repeats), heartbeatapi.AnnotationTaskSteps: strconv.Itoa(taskSteps), heartbeatapi.AnnotationSteps: "1000",
		}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), RenewTime: ptr.To(metav1.NewMicroTime(now.Add(-renewed)))},
	}
}

var hb = &v1alpha1.HeartbeatSpec{IntervalSeconds: 10, ProgressDeadlineSeconds: 60, MaxRepeatedActions: 5}

// steps is the steps budget of the tests.
var steps = sv.TaskBudget{MaxSteps: 100}

func budget(maxRestarts, windowSeconds int32) v1alpha1.RestartBudget {
	return v1alpha1.RestartBudget{MaxRestarts: &maxRestarts, WindowSeconds: windowSeconds}
}

func TestDetection(t *testing.T) {
	healthyLease := func(name string) *coordinationv1.Lease {
		return lease(name, 5*time.Second, heartbeatapi.StateWorking, 5*time.Second, 1, 3)
	}
	cases := map[string]struct {
		pod       corev1.Pod
		lease     *coordinationv1.Lease
		heartbeat *v1alpha1.HeartbeatSpec
		want      []sv.Replacement
	}{
		"healthy worker": {pod("w"), healthyLease("w"), hb, nil},
		"exit code": {pod("w", func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, FinishedAt: ago(3 * time.Second)}}
		}), healthyLease("w"), hb, []sv.Replacement{{"w", sv.Crashed, "container ray-worker exited with code 137", now.Add(-3 * time.Second)}}},
		"exit code 0 is no crash": {pod("w", func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
		}), healthyLease("w"), hb, nil},
		"CrashLoopBackOff": {pod("w", func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
			p.Status.ContainerStatuses[0].RestartCount = 4
			p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, FinishedAt: ago(4 * time.Second)}}
		}), nil, nil, []sv.Replacement{{"w", sv.Crashed, "container ray-worker in CrashLoopBackOff after 4 restarts", now.Add(-4 * time.Second)}}},
		"restarted after a crash": {pod("w", func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].RestartCount = 1
			p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: ago(5 * time.Second)}}
		}), nil, nil, []sv.Replacement{{"w", sv.Crashed, "container ray-worker restarted 1 times, last exit code 1", now.Add(-5 * time.Second)}}},
		"pod Failed": {pod("w", func(p *corev1.Pod) {
			p.Status.Phase, p.Status.Reason = corev1.PodFailed, "Evicted"
			p.Status.Conditions[0].Status = corev1.ConditionFalse
			p.Status.Conditions[0].LastTransitionTime = ago(7 * time.Second)
		}), nil, nil,
			[]sv.Replacement{{"w", sv.Crashed, "pod Failed: Evicted", now.Add(-7 * time.Second)}}},
		"failed and deleted by the pod garbage collector (its node is gone): KubeRay replaces it": {pod("w", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByPodGC"})
		}), nil, nil, nil},
		"being deleted": {pod("w", func(p *corev1.Pod) {
			deleted := ago(time.Second)
			p.DeletionTimestamp = &deleted
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137}}
		}), nil, nil, nil},
		"a disruption that does not delete the pod (the kubelet's): a crash": {pod("w", func(p *corev1.Pod) {
			p.Status.Phase, p.Status.Reason = corev1.PodFailed, "Evicted"
			p.Status.Conditions[0].Status = corev1.ConditionFalse
			p.Status.Conditions[0].LastTransitionTime = ago(7 * time.Second)
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "TerminationByKubelet"})
		}), nil, nil,
			[]sv.Replacement{{"w", sv.Crashed, "pod Failed: Evicted", now.Add(-7 * time.Second)}}},
		"unschedulable past the deadline": {pod("w", func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", LastTransitionTime: ago(6 * time.Minute)}}}
		}), nil, hb, []sv.Replacement{{"w", sv.Crashed, "Pending for 360s", now.Add(-time.Minute)}}},
		"unschedulable within the deadline": {pod("w", func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, LastTransitionTime: ago(time.Minute)}}}
		}), nil, hb, nil},
		"lease not renewed": {pod("w"), lease("w", 61*time.Second, heartbeatapi.StateIdle, time.Hour, 0, 0), hb,
			[]sv.Replacement{{"w", sv.Stalled, "heartbeat not renewed for 61s", now.Add(-time.Second)}}},
		"working without a step": {pod("w"), lease("w", time.Second, heartbeatapi.StateWorking, 90*time.Second, 1, 3), hb,
			[]sv.Replacement{{"w", sv.Stalled, "working without a step for 90s", now.Add(-30 * time.Second)}}},
		"idle for long is fine":           {pod("w"), lease("w", time.Second, heartbeatapi.StateIdle, 3*time.Hour, 0, 0), hb, nil},
		"no lease past the deadline":      {pod("w"), nil, hb, []sv.Replacement{{"w", sv.Stalled, "no heartbeat Lease 600s after the pod became Ready", now.Add(-9 * time.Minute)}}},
		"no lease just after Ready":       {pod("w", func(p *corev1.Pod) { p.Status.Conditions[0].LastTransitionTime = ago(10 * time.Second) }), nil, hb, nil},
		"not Ready: no heartbeat owed":    {pod("w", func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }), nil, hb, nil},
		"no heartbeat contract, no lease": {pod("w"), nil, nil, nil},
		"repeating an action": {pod("w"), lease("w", time.Second, heartbeatapi.StateWorking, time.Second, 5, 9), hb,
			[]sv.Replacement{{"w", sv.Looping, "the same action 5 times in a row (limit 5)", now.Add(-time.Second)}}},
		"too many steps in a task": {pod("w"), lease("w", time.Second, heartbeatapi.StateWorking, time.Second, 1, 100), hb,
			[]sv.Replacement{{"w", sv.Looping, "100 steps in one task (limit 100)", now.Add(-time.Second)}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := sv.Decide(sv.Observation{
				Now: now, Workers: []corev1.Pod{tc.pod}, Leases: map[string]*coordinationv1.Lease{"w": tc.lease},
				Heartbeat: tc.heartbeat, TaskBudget: steps, Budget: budget(10, 3600),
			})
			if tc.lease == nil {
				d = sv.Decide(sv.Observation{Now: now, Workers: []corev1.Pod{tc.pod}, Heartbeat: tc.heartbeat, Budget: budget(10, 3600)})
			}
			if diff := cmp.Diff(tc.want, d.Replace); diff != "" {
				t.Errorf("replace (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRecheckAfterTheNextDeadline(t *testing.T) {
	d := sv.Decide(sv.Observation{
		Now: now, Workers: []corev1.Pod{pod("a"), pod("b")}, Heartbeat: hb, Budget: budget(10, 3600),
		Leases: map[string]*coordinationv1.Lease{
			"a": lease("a", 20*time.Second, heartbeatapi.StateWorking, 50*time.Second, 0, 0), // last step due in 10 s
			"b": lease("b", 45*time.Second, heartbeatapi.StateIdle, time.Hour, 0, 0),         // renewal due in 15 s
		},
	})
	if len(d.Replace) != 0 || d.RecheckAfter != 10*time.Second {
		t.Errorf("replace %v, recheck after %s; want none and 10s", d.Replace, d.RecheckAfter)
	}
}

func crashedPod(name string) corev1.Pod {
	return pod(name, func(p *corev1.Pod) {
		p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}
	})
}

func records(ages ...time.Duration) []v1alpha1.RestartRecord {
	var r []v1alpha1.RestartRecord
	for _, a := range ages {
		r = append(r, v1alpha1.RestartRecord{Time: ago(a), Worker: "old", Reason: sv.Crashed})
	}
	return r
}

func TestBudgetAndBackoff(t *testing.T) {
	three := []corev1.Pod{crashedPod("a"), crashedPod("b"), crashedPod("c")}
	var fifty []v1alpha1.RestartRecord
	for i := 50; i >= 1; i-- {
		fifty = append(fifty, records(time.Duration(i)*time.Second)...)
	}
	cases := map[string]struct {
		recent        []v1alpha1.RestartRecord
		budget        v1alpha1.RestartBudget
		wantReplace   []string
		wantExhausted bool
		wantRecheck   time.Duration
	}{
		"first crashes: all at once within budget":                        {nil, budget(10, 600), []string{"a", "b", "c"}, false, 0},
		"budget allows two":                                               {nil, budget(2, 600), []string{"a", "b"}, true, 0},
		"budget spent: none, recheck when the oldest leaves the window":   {records(100*time.Second, 50*time.Second), budget(2, 600), nil, true, 500 * time.Second},
		"old restarts outside the window do not count":                    {records(700*time.Second, 650*time.Second), budget(2, 600), []string{"a", "b"}, true, 0},
		"fewer replacements than slots: no backoff":                       {records(30*time.Second, 2*time.Second), budget(10, 600), []string{"a", "b", "c"}, false, 0},
		"every slot replaced once: wait 1s after the last, one at a time": {records(30*time.Second, 20*time.Second, 10*time.Second, 500*time.Millisecond), budget(10, 600), nil, false, 500 * time.Millisecond},
		"twice per slot: wait 2s":                                         {records(9*time.Second, 8*time.Second, 7*time.Second, 6*time.Second, 5*time.Second, 4*time.Second, 3*time.Second, time.Second), budget(20, 600), nil, false, time.Second},
		"backoff over: one at a time":                                     {records(30*time.Second, 20*time.Second, 10*time.Second, 5*time.Second), budget(10, 600), []string{"a"}, false, 0},
		// 50 records are all status keeps: a budget of 100 (stored before the CRD capped it) would
		// never be found spent, so it counts as 50. The backoff's 5 minutes wake it first.
		"a budget over the 50 records kept counts as 50": {fifty, budget(100, 3600), nil, true, 299 * time.Second},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := sv.Decide(sv.Observation{Now: now, Workers: three, Replicas: 4, Budget: tc.budget, Recent: tc.recent})
			var got []string
			for _, r := range d.Replace {
				got = append(got, r.Worker)
			}
			if diff := cmp.Diff(tc.wantReplace, got); diff != "" {
				t.Errorf("replace (-want +got):\n%s", diff)
			}
			if d.BudgetExhausted != tc.wantExhausted || d.RecheckAfter != tc.wantRecheck {
				t.Errorf("exhausted %v, recheck %s; want %v, %s", d.BudgetExhausted, d.RecheckAfter, tc.wantExhausted, tc.wantRecheck)
			}
			if len(d.Replace)+len(d.Held) != 3 {
				t.Errorf("replace %d + held %d, want all 3 accounted for", len(d.Replace), len(d.Held))
			}
		})
	}
}

// gpuPod is a Ready worker on node holding one GPU.
func gpuPod(name, node string, mutate ...func(*corev1.Pod)) corev1.Pod {
	return pod(name, append([]func(*corev1.Pod){func(p *corev1.Pod) {
		p.Spec.NodeName = node
		p.Spec.Containers = []corev1.Container{{Name: "ray-worker", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{gpu.Resource: resource.MustParse("1")}}}}
	}}, mutate...)...)
}

// gpuCondition sets the GPU health agent's pod condition.
func gpuCondition(status corev1.ConditionStatus, reason, message string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: gpu.PodConditionGPUHealthy, Status: status, Reason: reason, Message: message, LastTransitionTime: ago(2 * time.Second)})
	}
}

func TestGPUFaults(t *testing.T) {
	const xid79 = "GPU GPU-5d1c0f3a-0000 (index 2): XID 79 (GPU has fallen off the bus)"
	faulty := map[string]string{"gpu-a": "XidCriticalError=True (XID 79 on GPU 2)"}
	crash := func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "ray-worker", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}}
	}
	cases := map[string]struct {
		workers     []corev1.Pod
		faultyNodes map[string]string
		want        []sv.Replacement
	}{
		"the agent's pod condition False: replaced, the evidence naming node, GPU and XID": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", gpuCondition(corev1.ConditionFalse, "XidCriticalError", xid79))},
			want:    []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-b, XidCriticalError: " + xid79, now.Add(-2 * time.Second)}},
		},
		"the agent's own message names its node: the evidence names it once": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", gpuCondition(corev1.ConditionFalse, sv.GPUUnhealthy, "node gpu-b: 1 of 2 GPUs unhealthy: GPU-2: "+xid79))},
			want:    []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-b: 1 of 2 GPUs unhealthy: GPU-2: " + xid79, now.Add(-2 * time.Second)}},
		},
		"the pod condition True: healthy": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", gpuCondition(corev1.ConditionTrue, "Healthy", ""))},
		},
		"a degraded GPU (True, GPUDegraded) is no reason to replace": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", gpuCondition(corev1.ConditionTrue, gpu.ReasonGPUDegraded, "GPU-1: thermal throttling"))},
		},
		"a pod condition without a reason": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", gpuCondition(corev1.ConditionFalse, "", xid79))},
			want:    []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-b: " + xid79, now.Add(-2 * time.Second)}},
		},
		"a failing GPU wins over the crash it caused": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", crash, gpuCondition(corev1.ConditionFalse, "XidCriticalError", xid79))},
			want:    []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-b, XidCriticalError: " + xid79, now.Add(-2 * time.Second)}},
		},
		"a node-level fault: the GPU workers on that node only; CPU workers and other nodes untouched": {
			workers: []corev1.Pod{
				gpuPod("w-0", "gpu-a"), gpuPod("w-1", "gpu-b"), gpuPod("w-2", "gpu-a"),
				pod("cpu", func(p *corev1.Pod) { p.Spec.NodeName = "gpu-a" }),
			},
			faultyNodes: faulty,
			want: []sv.Replacement{
				{"w-0", sv.GPUUnhealthy, "node gpu-a has a GPU fault: XidCriticalError=True (XID 79 on GPU 2)", time.Time{}},
				{"w-2", sv.GPUUnhealthy, "node gpu-a has a GPU fault: XidCriticalError=True (XID 79 on GPU 2)", time.Time{}},
			},
		},
		"a GPU request without a limit counts": {
			workers: []corev1.Pod{gpuPod("w", "gpu-a", func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{gpu.Resource: resource.MustParse("2")}}
			})},
			faultyNodes: faulty,
			want:        []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-a has a GPU fault: XidCriticalError=True (XID 79 on GPU 2)", time.Time{}}},
		},
		"a worker not yet scheduled is on no node": {
			workers:     []corev1.Pod{gpuPod("w", "")},
			faultyNodes: map[string]string{"": "never"},
		},
		"the pod's condition is preferred to its node's fault": {
			workers:     []corev1.Pod{gpuPod("w", "gpu-a", gpuCondition(corev1.ConditionFalse, "UncorrectableECC", "GPU GPU-1: 3 volatile uncorrectable ECC errors"))},
			faultyNodes: faulty,
			want:        []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-a, UncorrectableECC: GPU GPU-1: 3 volatile uncorrectable ECC errors", now.Add(-2 * time.Second)}},
		},
		"a long message is cut": {
			workers: []corev1.Pod{gpuPod("w", "gpu-b", gpuCondition(corev1.ConditionFalse, "Xid", strings.Repeat("é", 400)))},
			want:    []sv.Replacement{{"w", sv.GPUUnhealthy, "node gpu-b, Xid: " + strings.Repeat("é", 256) + "…", now.Add(-2 * time.Second)}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := sv.Decide(sv.Observation{Now: now, Workers: tc.workers, FaultyNodes: tc.faultyNodes, Budget: budget(10, 3600), Replicas: 4})
			if diff := cmp.Diff(tc.want, d.Replace); diff != "" {
				t.Errorf("replace (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGPUFaultsWithinTheBudget(t *testing.T) {
	workers := []corev1.Pod{gpuPod("a", "gpu-a"), gpuPod("b", "gpu-a"), gpuPod("c", "gpu-b", gpuCondition(corev1.ConditionFalse, "Xid", "XID 48"))}
	d := sv.Decide(sv.Observation{Now: now, Workers: workers, FaultyNodes: map[string]string{"gpu-a": "XidCriticalError=True"},
		Budget: budget(3, 600), Recent: records(30 * time.Second), Replicas: 4})
	var replaced, held []string
	for _, r := range d.Replace {
		replaced = append(replaced, r.Worker)
	}
	for _, r := range d.Held {
		held = append(held, r.Worker+"/"+r.Reason)
	}
	if diff := cmp.Diff([]string{"a", "b"}, replaced); diff != "" {
		t.Errorf("replace (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"c/" + sv.GPUUnhealthy}, held); diff != "" {
		t.Errorf("held (-want +got):\n%s", diff)
	}
	if !d.BudgetExhausted || d.RecheckAfter != 570*time.Second {
		t.Errorf("exhausted %v, recheck %s; want true, 570s (the one replacement in the window leaves it)", d.BudgetExhausted, d.RecheckAfter)
	}
}

func TestOverBudget(t *testing.T) {
	// withTask is a working worker's Lease, renewed 2 s ago, in a task started started ago with
	// taskTokens so far, and lifetime tokens in and out ("" leaves an annotation out).
	withTask := func(started time.Duration, taskTokens, in, out string) *coordinationv1.Lease {
		l := lease("w", 2*time.Second, heartbeatapi.StateWorking, time.Second, 1, 3)
		set := func(k, v string) {
			if v != "" {
				l.Annotations[k] = v
			}
		}
		l.Annotations[heartbeatapi.AnnotationTaskStarted] = now.Add(-started).Format(heartbeatapi.TimeFormat)
		set(heartbeatapi.AnnotationTaskTokens, taskTokens)
		set(heartbeatapi.AnnotationTokensIn, in)
		set(heartbeatapi.AnnotationTokensOut, out)
		return l
	}
	priced := sv.TokenPrice{In: 3, Out: 15, Currency: "USD", Priced: true}
	renewed := now.Add(-2 * time.Second)
	cases := map[string]struct {
		lease   *coordinationv1.Lease
		budget  sv.TaskBudget
		want    []sv.Replacement
		recheck time.Duration
	}{
		"no budget":           {withTask(time.Hour, "1000000", "900000", "100000"), sv.TaskBudget{}, nil, 0},
		"tokens within":       {withTask(time.Minute, "5000", "", ""), sv.TaskBudget{MaxTokens: 5000}, nil, 0},
		"tokens over":         {withTask(time.Minute, "5001", "", ""), sv.TaskBudget{MaxTokens: 5000}, []sv.Replacement{{"w", sv.OverBudget, "5001 tokens in one task (limit 5000)", renewed}}, 0},
		"tokens not reported": {withTask(time.Minute, "", "", ""), sv.TaskBudget{MaxTokens: 5000}, nil, 0},
		"tokens malformed":    {withTask(time.Minute, "lots", "", ""), sv.TaskBudget{MaxTokens: 5000}, nil, 0},
		"duration within, rechecked at its end": {withTask(50*time.Second, "", "", ""), sv.TaskBudget{MaxDuration: time.Minute}, nil,
			10*time.Second + time.Millisecond},
		"duration over": {withTask(61*time.Second, "", "", ""), sv.TaskBudget{MaxDuration: time.Minute},
			[]sv.Replacement{{"w", sv.OverBudget, "one task running for 61s (limit 60s)", now.Add(-time.Second)}}, 0},
		"idle: no task to time": {func() *coordinationv1.Lease {
			l := withTask(time.Hour, "", "", "")
			l.Annotations[heartbeatapi.AnnotationState] = heartbeatapi.StateIdle
			return l
		}(), sv.TaskBudget{MaxDuration: time.Minute}, nil, 0},
		// 100,000 tokens at a mix of 3/4 in, 1/4 out: (0.75·3 + 0.25·15)/1e6 per token = 0.60.
		"cost at the worker's mix, over": {withTask(time.Minute, "100000", "750000", "250000"), sv.TaskBudget{MaxCost: 0.5, Price: priced},
			[]sv.Replacement{{"w", sv.OverBudget, "100000 tokens in one task cost about 0.6000 USD (limit 0.5 USD)", renewed}}, 0},
		"cost at the worker's mix, within": {withTask(time.Minute, "100000", "750000", "250000"), sv.TaskBudget{MaxCost: 0.7, Price: priced}, nil, 0},
		// Without lifetime counts, the cheaper direction: 200,000 × 3/1e6 = 0.60.
		"cost before any lifetime count: the lower bound": {withTask(time.Minute, "200000", "", ""), sv.TaskBudget{MaxCost: 0.5, Price: priced},
			[]sv.Replacement{{"w", sv.OverBudget, "200000 tokens in one task cost about 0.6000 USD (limit 0.5 USD)", renewed}}, 0},
		"cost of an unpriced model is not enforced": {withTask(time.Minute, "100000000", "1", "1"), sv.TaskBudget{MaxCost: 0.01}, nil, 0},
		"a stale heartbeat is stalled, not over budget": {func() *coordinationv1.Lease {
			l := withTask(time.Hour, "999999", "", "")
			l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(now.Add(-61 * time.Second)))
			return l
		}(), sv.TaskBudget{MaxTokens: 10, MaxDuration: time.Minute}, []sv.Replacement{{"w", sv.Stalled, "heartbeat not renewed for 61s", now.Add(-time.Second)}}, 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := sv.Decide(sv.Observation{
				Now: now, Workers: []corev1.Pod{pod("w")}, Leases: map[string]*coordinationv1.Lease{"w": tc.lease},
				Heartbeat: hb, TaskBudget: tc.budget, Budget: budget(10, 3600),
			})
			if diff := cmp.Diff(tc.want, d.Replace); diff != "" {
				t.Errorf("replace (-want +got):\n%s", diff)
			}
			if tc.recheck != 0 && d.RecheckAfter != tc.recheck {
				t.Errorf("recheck after %v, want %v", d.RecheckAfter, tc.recheck)
			}
		})
	}
}

func TestTaskBudgetOf(t *testing.T) {
	price := sv.TokenPrice{In: 1, Out: 2, Priced: true}
	fleet := func(b *v1alpha1.BudgetsSpec) *v1alpha1.AgentFleet {
		return &v1alpha1.AgentFleet{Spec: v1alpha1.AgentFleetSpec{Health: v1alpha1.HealthSpec{Heartbeat: hb}, Budgets: b}}
	}
	got, err := sv.TaskBudgetOf(fleet(&v1alpha1.BudgetsSpec{MaxSteps: ptr.To[int32](7), MaxTokens: ptr.To[int64](10), MaxDurationSeconds: ptr.To[int32](30), MaxCost: "0.25"}), price)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sv.TaskBudget{MaxSteps: 7, MaxTokens: 10, MaxDuration: 30 * time.Second, MaxCost: 0.25, Price: price}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := sv.TaskBudgetOf(fleet(&v1alpha1.BudgetsSpec{MaxCost: "a lot"}), price); err == nil || !strings.Contains(err.Error(), "maxCost") {
		t.Errorf("a bad maxCost: got %v, want an error naming it", err)
	}
}
