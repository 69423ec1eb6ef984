package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
)

// canaryFleet starts a fleet of 4 workers under the Canary strategy (1 canary worker, a verdict
// after 6 of its tasks), its prompt in a ConfigMap, with simulated agents finishing tasks (one in
// four fails) and behaving as behaviourOf says by pod.
func canaryFleet(t *testing.T, name string, minTasks int32, behaviourOf func(*corev1.Pod) string) (client.ObjectKey, *agents, func(prompt string)) {
	t.Helper()
	ctx := context.Background()
	ns := namespace(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-prompt", Namespace: ns}, Data: map[string]string{"system.md": "v1: be careful"}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	_, key := newFleet(t, builder.MakeAgentFleet(name, ns).Replicas(4).Heartbeat(1, 10, 5, 1000).Prompt(cm.Name, "system.md").Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Rollout.Strategy = v1alpha1.RolloutCanary
		f.Spec.Rollout.Canary = &v1alpha1.CanarySpec{Workers: ptr.To(intstr.FromInt32(1)), Analysis: v1alpha1.CanaryAnalysis{
			MinTasks: minTasks, MaxDurationSeconds: 300, MaxFailureRateIncrease: "0.2",
		}}
	}))
	a := simulateAgents(t, ns, name, time.Second)
	a.mu.Lock()
	a.tasks, a.behaviourOf = true, behaviourOf
	a.mu.Unlock()
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	setPrompt := func(prompt string) {
		t.Helper()
		eventually(t, 10*time.Second, "updating the prompt", func(ctx context.Context) (bool, string) {
			cm := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-prompt"}, cm); err != nil {
				return false, err.Error()
			}
			cm.Data["system.md"] = prompt
			if err := k8s.Update(ctx, cm); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}
	return key, a, setPrompt
}

func inCanaryGroup(p *corev1.Pod) bool {
	return p.Labels[rayutils.RayNodeGroupLabelKey] == v1alpha1.CanaryGroup
}

// podUIDs are the agent worker pods of a fleet by name.
func podUIDs(t *testing.T, key client.ObjectKey) map[string]types.UID {
	uids := map[string]types.UID{}
	for _, p := range agentPods(t, key.Namespace, key.Name) {
		uids[p.Name] = p.UID
	}
	return uids
}

// survivors counts the pods of before still there with the same UID; a pod of before there under a
// new UID (restarted) fails the test.
func survivors(t *testing.T, key client.ObjectKey, before map[string]types.UID) int {
	t.Helper()
	n := 0
	for name, uid := range podUIDs(t, key) {
		if was, ok := before[name]; ok {
			if was != uid {
				t.Errorf("stable worker %s was restarted (UID %s, now %s)", name, was, uid)
			}
			n++
		}
	}
	return n
}

func rolloutPhase(t *testing.T, key client.ObjectKey, phase v1alpha1.RolloutPhase, timeout time.Duration) *v1alpha1.AgentFleet {
	t.Helper()
	var f *v1alpha1.AgentFleet
	eventually(t, timeout, "rollout phase "+string(phase), func(ctx context.Context) (bool, string) {
		f = &v1alpha1.AgentFleet{}
		if err := k8s.Get(ctx, key, f); err != nil {
			return false, err.Error()
		}
		if f.Status.Rollout == nil {
			return false, "no status.rollout"
		}
		return f.Status.Rollout.Phase == phase, fmt.Sprintf("%s: %s", f.Status.Rollout.Phase, f.Status.Rollout.Message)
	})
	return f
}

// A prompt change whose canary agents fail their tasks is aborted: the stable workers are never
// restarted (one made room for the canary; the other three keep their UIDs throughout), the fleet is
// Degraded (CanaryAborted) with the evidence, ArgoCD's Lua says Degraded; the previous prompt
// restored (a git revert) makes it Healthy again, still without restarting a stable worker.
func TestCanaryAbortedThenReverted(t *testing.T) {
	needCluster(t)
	key, _, setPrompt := canaryFleet(t, "canary-abort", 6, func(p *corev1.Pod) string {
		if inCanaryGroup(p) {
			return "fail"
		}
		return ""
	})
	before := podUIDs(t, key)
	stable := getFleet(t, key).Status.Revision
	setPrompt("v2: be quick")
	f := waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonCanaryAborted, 120*time.Second)
	ro := f.Status.Rollout
	if ro == nil || ro.Phase != v1alpha1.RolloutPhaseAborted || ro.Canary == nil || ro.Canary.TasksFailed < 6 || !strings.Contains(ro.Message, "failure rate") {
		t.Fatalf("status.rollout %+v: want Aborted with the canary's failed tasks as evidence", ro)
	}
	t.Logf("aborted: %+v; canary %+v; %s", ro, *ro.Canary, ro.Message)
	liveFixture(t, "canary-aborted", "Degraded", f)
	eventually(t, 60*time.Second, "every worker back on the stable revision, the canary group gone", func(ctx context.Context) (bool, string) {
		pods := agentPods(t, key.Namespace, key.Name)
		ready, onStable := 0, 0
		for i := range pods {
			if podReady(&pods[i]) {
				ready++
			}
			if pods[i].Labels[v1alpha1.LabelWorkerHash] == stable && !inCanaryGroup(&pods[i]) {
				onStable++
			}
		}
		return len(pods) == 4 && ready == 4 && onStable == 4, fmt.Sprintf("%d pods, %d Ready, %d on %s", len(pods), ready, onStable, stable)
	})
	if n := survivors(t, key, before); n != 3 {
		t.Errorf("%d of the 4 stable workers survived, want 3 (one made room for the canary)", n)
	}

	setPrompt("v1: be careful") // the git revert
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if f := rolloutPhase(t, key, v1alpha1.RolloutPhaseStable, 30*time.Second); f.Status.Revision != stable {
		t.Errorf("revision %s after the revert, want %s", f.Status.Revision, stable)
	}
	if n := survivors(t, key, before); n != 3 {
		t.Errorf("%d of the stable workers survived the revert, want the same 3", n)
	}
}

// A change whose canary agents do as well as the stable ones is promoted: every worker ends on the
// new prompt, and no fewer than replicas − maxUnavailable (4 − 1) are Ready at any time.
func TestCanaryPromoted(t *testing.T) {
	needCluster(t)
	key, _, setPrompt := canaryFleet(t, "canary-promote", 6, nil)
	var mu sync.Mutex
	minReady := 4
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ready := 0
			for _, p := range agentPods(t, key.Namespace, key.Name) {
				if podReady(&p) {
					ready++
				}
			}
			mu.Lock()
			minReady = min(minReady, ready)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	setPrompt("v2: be thorough")
	pf := rolloutPhase(t, key, v1alpha1.RolloutPhasePromoted, 120*time.Second)
	t.Logf("promoted: %+v; canary %+v; %s", pf.Status.Rollout, *pf.Status.Rollout.Canary, pf.Status.Rollout.Message)
	f := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	stop()
	<-done
	want := rayspecs.PromptHash("v2: be thorough")
	if f.Status.PromptHash != want {
		t.Errorf("status.promptHash %s, want %s", f.Status.PromptHash, want)
	}
	for _, p := range agentPods(t, key.Namespace, key.Name) {
		if p.Labels[v1alpha1.LabelPromptHash] != want[:16] || inCanaryGroup(&p) {
			t.Errorf("worker %s (group %s) on prompt %s after the promotion", p.Name, p.Labels[rayutils.RayNodeGroupLabelKey], p.Labels[v1alpha1.LabelPromptHash])
		}
	}
	if minReady < 3 {
		t.Errorf("%d workers Ready at the lowest, want at least 3 (replicas 4, maxUnavailable 25%%)", minReady)
	}
}

// A canary agent that loops is replaced, and its replacement counts against the canary
// (maxRestarts 0): aborted.
func TestCanaryLoopingAborts(t *testing.T) {
	needCluster(t)
	key, _, setPrompt := canaryFleet(t, "canary-loop", 1000, func(p *corev1.Pod) string {
		if inCanaryGroup(p) {
			return "loop"
		}
		return ""
	})
	setPrompt("v2: try again")
	f := waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonCanaryAborted, 120*time.Second)
	if ro := f.Status.Rollout; ro == nil || ro.Canary == nil || ro.Canary.Restarts < 1 || !strings.Contains(ro.Message, "canary workers replaced") {
		t.Errorf("status.rollout %+v: want the canary's replacement as the evidence", ro)
	}
	t.Logf("aborted: %+v; restarts %+v", f.Status.Rollout, f.Status.Restarts)
	if f.Status.Restarts.Looping < 1 {
		t.Errorf("restarts %+v: want the canary's loop", f.Status.Restarts)
	}
}

// The operator killed (SIGKILL) mid-canary resumes the same canary: same start, one canary group,
// one canary worker.
func TestCanarySurvivesOperatorKill(t *testing.T) {
	needCluster(t)
	key, _, setPrompt := canaryFleet(t, "canary-kill", 1000, nil)
	setPrompt("v2: long analysis")
	before := rolloutPhase(t, key, v1alpha1.RolloutPhaseCanary, 60*time.Second).Status.Rollout
	const operator = "agentfleet-operator"
	if _, err := c.KillPart(operator, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartPart(context.Background(), operator); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // the new process reconciles the fleet (a resync of every object)
	after := rolloutPhase(t, key, v1alpha1.RolloutPhaseCanary, 30*time.Second).Status.Rollout
	if !after.StartedAt.Equal(before.StartedAt) || after.Canary.Revision != before.Canary.Revision {
		t.Errorf("after the restart the canary is %s from %v, before %s from %v: want the same one", after.Canary.Revision, after.StartedAt, before.Canary.Revision, before.StartedAt)
	}
	rc := &rayv1.RayCluster{}
	if err := k8s.Get(context.Background(), key, rc); err != nil {
		t.Fatal(err)
	}
	groups := map[string]int{}
	for _, g := range rc.Spec.WorkerGroupSpecs {
		groups[g.GroupName]++
	}
	canaryPods := 0
	for _, p := range agentPods(t, key.Namespace, key.Name) {
		if inCanaryGroup(&p) {
			canaryPods++
		}
	}
	if len(rc.Spec.WorkerGroupSpecs) != 2 || groups[v1alpha1.CanaryGroup] != 1 || canaryPods != 1 {
		t.Errorf("worker groups %v and %d canary workers after the restart, want one canary group of one", groups, canaryPods)
	}
}
