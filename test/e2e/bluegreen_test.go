package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/builder"
)

// A change of the head (rayVersion) under Rolling is held: the fleet is Degraded (NeedsBlueGreen,
// ArgoCD's Lua says Degraded), the RayCluster and its workers are left as they are. Under BlueGreen
// the same change starts a second RayCluster beside the first; the real KubeRay makes it Ready, the
// fleet switches to it (status.rayClusterName, the old RayCluster and its workers deleted). A preview
// that cannot be Ready (its head cannot be scheduled) is deleted past readyTimeoutSeconds and the
// active RayCluster keeps running, no worker restarted; a revert clears it to Healthy.
func TestBlueGreenOnARayVersionChange(t *testing.T) {
	needCluster(t)
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("blue", ns).Replicas(2).RayVersion("2.52.0"))
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	first := rayCluster(t, ns, "blue")
	before := podUIDs(t, key)

	// Under Rolling the change is not applied.
	updateFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.53.0" })
	f := waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonNeedsBlueGreen, 30*time.Second)
	liveFixture(t, "needs-bluegreen", "Degraded", f)
	if rc := rayCluster(t, ns, "blue"); rc.Spec.RayVersion != "2.52.0" || rc.Generation != first.Generation {
		t.Errorf("RayCluster blue after a head change under Rolling: rayVersion %s, generation %d (was %d): want it untouched", rc.Spec.RayVersion, rc.Generation, first.Generation)
	}
	if n := survivors(t, key, before); n != 2 {
		t.Errorf("%d of 2 workers survived a held change", n)
	}

	// Under BlueGreen it goes to a new RayCluster.
	updateFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Rollout.Strategy = v1alpha1.RolloutBlueGreen })
	f = rolloutPhase(t, key, v1alpha1.RolloutPhasePromoted, 120*time.Second)
	t.Logf("promoted: %s", f.Status.Rollout.Message)
	f = waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if f.Status.RayClusterName != "blue-bg" {
		t.Errorf("status.rayClusterName = %s after the switch, want blue-bg", f.Status.RayClusterName)
	}
	if rc := rayCluster(t, ns, "blue-bg"); rc.Spec.RayVersion != "2.53.0" || rc.Annotations[v1alpha1.AnnotationPreview] != "" {
		t.Errorf("RayCluster blue-bg: rayVersion %s, annotations %v", rc.Spec.RayVersion, rc.Annotations)
	}
	eventually(t, 60*time.Second, "the old RayCluster and its workers gone", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blue"}, &rayv1.RayCluster{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("RayCluster blue: %v", err)
		}
		pods := agentPods(t, ns, "blue")
		for i := range pods {
			if pods[i].Labels[rayutils.RayClusterLabelKey] != "blue-bg" {
				return false, "pod " + pods[i].Name + " of RayCluster " + pods[i].Labels[rayutils.RayClusterLabelKey]
			}
		}
		return len(pods) == 2, fmt.Sprintf("%d workers", len(pods))
	})
	switched := podUIDs(t, key)

	// A preview whose head cannot be scheduled is aborted; the active RayCluster keeps running.
	updateFleet(t, key, func(f *v1alpha1.AgentFleet) {
		f.Spec.Rollout.BlueGreen = &v1alpha1.BlueGreenSpec{ReadyTimeoutSeconds: 30}
		f.Spec.Head.PodTemplate = &runtime.RawExtension{Raw: []byte(`{"spec":{"nodeSelector":{"agentfleet.dev/e2e":"nowhere"}}}`)}
	})
	f = waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonBlueGreenAborted, 120*time.Second)
	liveFixture(t, "bluegreen-aborted", "Degraded", f)
	t.Logf("aborted: %s", f.Status.Rollout.Message)
	eventually(t, 30*time.Second, "the aborted preview deleted", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blue"}, &rayv1.RayCluster{})
		return apierrors.IsNotFound(err), fmt.Sprintf("RayCluster blue: %v", err)
	})
	if n := survivors(t, key, switched); n != 2 {
		t.Errorf("%d of the 2 active workers survived the aborted preview", n)
	}

	// The revert: Healthy again, nothing restarted, no preview.
	updateFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Head.PodTemplate = nil })
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if f := rolloutPhase(t, key, v1alpha1.RolloutPhaseStable, 30*time.Second); f.Status.RayClusterName != "blue-bg" {
		t.Errorf("rayClusterName %s after the revert, want blue-bg", f.Status.RayClusterName)
	}
	if n := survivors(t, key, switched); n != 2 {
		t.Errorf("%d of the 2 active workers survived the revert", n)
	}
}

func rayCluster(t *testing.T, ns, name string) *rayv1.RayCluster {
	t.Helper()
	rc := &rayv1.RayCluster{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, rc); err != nil {
		t.Fatalf("RayCluster %s: %v", name, err)
	}
	return rc
}

// updateFleet changes a fleet's spec, retrying on conflicts with the operator's status writes.
func updateFleet(t *testing.T, key client.ObjectKey, change func(*v1alpha1.AgentFleet)) {
	t.Helper()
	eventually(t, 10*time.Second, "updating fleet "+key.Name, func(ctx context.Context) (bool, string) {
		f := &v1alpha1.AgentFleet{}
		if err := k8s.Get(ctx, key, f); err != nil {
			return false, err.Error()
		}
		change(f)
		if err := k8s.Update(ctx, f); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// BlueGreen with an analysis: a prompt change whose preview agents fail their tasks is aborted once
// the preview is Ready and finished minTasks (the preview deleted, the active workers untouched, the
// fleet Degraded, BlueGreenAborted, with the failure rates); a change whose preview agents do as well
// as the active ones is switched to.
func TestBlueGreenAnalysis(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	const name = "judged"
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name + "-prompt", Namespace: ns}, Data: map[string]string{"system.md": "v1: be careful"}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	_, key := newFleet(t, builder.MakeAgentFleet(name, ns).Replicas(2).Heartbeat(1, 10, 5, 1000).Prompt(cm.Name, "system.md").Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Rollout.Strategy = v1alpha1.RolloutBlueGreen
		f.Spec.Rollout.BlueGreen = &v1alpha1.BlueGreenSpec{ReadyTimeoutSeconds: 120, Analysis: &v1alpha1.CanaryAnalysis{
			// The simulated agents fail one task in four; a sample of 6 can be a third: the threshold is wide.
			MinTasks: 6, MaxDurationSeconds: 300, MaxFailureRateIncrease: "0.5",
		}}
	}))
	failOn := ""
	a := simulateAgents(t, ns, name, time.Second)
	a.mu.Lock()
	a.tasks = true
	a.behaviourOf = func(p *corev1.Pod) string {
		if failOn != "" && p.Labels[rayutils.RayClusterLabelKey] == failOn {
			return "fail"
		}
		return ""
	}
	a.mu.Unlock()
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	before := podUIDs(t, key)
	setPrompt := func(prompt string) {
		t.Helper()
		eventually(t, 10*time.Second, "updating the prompt", func(ctx context.Context) (bool, string) {
			cm := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-prompt"}, cm); err != nil {
				return false, err.Error()
			}
			cm.Data["system.md"] = prompt
			return k8s.Update(ctx, cm) == nil, "conflict"
		})
	}

	a.mu.Lock()
	failOn = name + "-bg"
	a.mu.Unlock()
	setPrompt("v2: be quick")
	f := waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonBlueGreenAborted, 150*time.Second)
	ro := f.Status.Rollout
	if ro.Canary == nil || ro.Canary.TasksFailed < 3 || !strings.Contains(ro.Message, "failure rate") {
		t.Errorf("status.rollout %+v: want Aborted with the preview's failed tasks as evidence", ro)
	}
	t.Logf("aborted: %s", ro.Message)
	eventually(t, 60*time.Second, "the preview deleted", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-bg"}, &rayv1.RayCluster{})
		return apierrors.IsNotFound(err), fmt.Sprintf("RayCluster %s-bg: %v", name, err)
	})
	if n := survivors(t, key, before); n != 2 {
		t.Errorf("%d of the 2 active workers survived the aborted preview", n)
	}

	// A change whose preview's agents do as well: switched to.
	a.mu.Lock()
	failOn = ""
	a.mu.Unlock()
	setPrompt("v3: be thorough")
	f = rolloutPhase(t, key, v1alpha1.RolloutPhasePromoted, 150*time.Second)
	t.Logf("promoted: %s", f.Status.Rollout.Message)
	f = waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if st := f.Status.Rollout.Stable; f.Status.RayClusterName != name+"-bg" || st.TasksSucceeded+st.TasksFailed < 6 {
		t.Errorf("after the switch: rayClusterName %s, rollout %+v", f.Status.RayClusterName, f.Status.Rollout)
	}
}
