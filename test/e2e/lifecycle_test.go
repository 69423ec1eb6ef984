package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
)

// readyWatcher follows the Ready agent workers of a fleet through a watch, event by event, and
// remembers the fewest seen Ready once started.
type readyWatcher struct {
	mu       sync.Mutex
	ready    map[string]bool
	min      int
	watching bool
}

func watchReady(t *testing.T, ns, fleet string) (*readyWatcher, func()) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelFleet + "=" + fleet + ",ray.io/group=agents"})
	if err != nil {
		t.Fatal(err)
	}
	rw := &readyWatcher{ready: map[string]bool{}, min: -1}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			rw.mu.Lock()
			switch ev.Type {
			case watch.Deleted:
				delete(rw.ready, pod.Name)
			default:
				rw.ready[pod.Name] = podReady(pod)
			}
			if rw.watching {
				if n := rw.count(); rw.min < 0 || n < rw.min {
					rw.min = n
				}
			}
			rw.mu.Unlock()
		}
	}()
	return rw, func() { cancel(); w.Stop(); <-done }
}

func (rw *readyWatcher) count() int {
	n := 0
	for _, r := range rw.ready {
		if r {
			n++
		}
	}
	return n
}

func (rw *readyWatcher) start() {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	rw.watching, rw.min = true, rw.count()
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// A prompt edit in Git (here: in its ConfigMap) rolls every worker to the new template, never
// leaving fewer than replicas - maxUnavailable Ready.
func TestPromptEditRollsWorkersWithinMaxUnavailable(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompt", Namespace: ns}, Data: map[string]string{"system.md": "v1"}}
	f := builder.MakeAgentFleet("rollers", ns).Replicas(8).Prompt("prompt", "system.md").Obj()
	f.UID, f.Generation = "", 0
	for _, o := range []client.Object{cm, f} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	key := client.ObjectKeyFromObject(f)
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	oldRevision := getFleet(t, key).Status.Revision

	rw, stop := watchReady(t, ns, "rollers")
	defer stop()
	time.Sleep(200 * time.Millisecond) // the watch has listed the pods
	rw.start()
	cm.Data["system.md"] = "v2: be brief"
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "every worker rolled to the new prompt", func(ctx context.Context) (bool, string) {
		cond, fl := fleetCondition(ctx, key, v1alpha1.ConditionReady)
		if cond == nil {
			return false, "no current status"
		}
		return cond.Status == metav1.ConditionTrue && fl.Status.Revision != oldRevision && fl.Status.UpdatedReplicas == 8,
			fmt.Sprintf("Ready=%s %s; updated %d", cond.Status, cond.Message, fl.Status.UpdatedReplicas)
	})
	rw.mu.Lock()
	minReady := rw.min
	rw.mu.Unlock()
	if minReady < 6 {
		t.Errorf("Ready workers dropped to %d during the roll; maxUnavailable 25%% of 8 allows 6", minReady)
	}
	t.Logf("fewest Ready workers during the roll: %d of 8", minReady)
	if got := getFleet(t, key).Status.PromptHash; got != rayspecs.PromptHash("v2: be brief") {
		t.Errorf("status.promptHash %q", got)
	}
}

func getFleet(t *testing.T, key client.ObjectKey) *v1alpha1.AgentFleet {
	t.Helper()
	f := &v1alpha1.AgentFleet{}
	if err := k8s.Get(context.Background(), key, f); err != nil {
		t.Fatal(err)
	}
	return f
}

func newFleet(t *testing.T, w *builder.FleetWrapper) (*v1alpha1.AgentFleet, client.ObjectKey) {
	t.Helper()
	f := w.Obj()
	f.UID, f.Generation = "", 0
	if err := k8s.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	return f, client.ObjectKeyFromObject(f)
}

func TestHandEditOfTheRayClusterIsReverted(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("drift", ns).Replicas(2))
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	var image string
	// KubeRay writes the RayCluster's status all the time: the edit is retried on a conflict, as
	// kubectl edit would have the person do.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rc := &rayv1.RayCluster{}
		if err := k8s.Get(ctx, key, rc); err != nil {
			return err
		}
		image = rc.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image
		rc.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image = "someone/else:latest"
		return k8s.Update(ctx, rc)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the hand edit reverted", func(ctx context.Context) (bool, string) {
		got := &rayv1.RayCluster{}
		if err := k8s.Get(ctx, key, got); err != nil {
			return false, err.Error()
		}
		img := got.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image
		return img == image, "image " + img
	})
}

func TestMissingDependencyHoldsTheFleetUntilItIsHealthy(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("waiter", ns).Replicas(1).DependsOn("apps/v1", "Deployment", "model-server"))
	waitCondition(t, key, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonWaitingForDependencies, 20*time.Second)
	liveFixture(t, "agentfleet-waiting-for-dependencies", "Progressing", getFleet(t, key))
	time.Sleep(2 * time.Second)
	if err := k8s.Get(ctx, key, &rayv1.RayCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("RayCluster while the dependency is missing: %v", err)
	}
	labels := map[string]string{"app": "model-server"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "model-server", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "vllm", Image: "vllm/vllm-openai:v0.11.0"}}}}},
	}
	if err := k8s.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	// The Deployment controller, the scheduler and kwok make it Available; the watch on
	// Deployments wakes the fleet.
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
}

func TestSuspendResumeAndDelete(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("sleeper", ns).Replicas(3))
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)

	setSuspend := func(s bool) {
		f := getFleet(t, key)
		f.Spec.Suspend = s
		if err := k8s.Update(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	setSuspend(true)
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSuspended, 60*time.Second)
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelFleet: "sleeper"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d pods left while suspended", len(pods.Items))
	}
	if p := getFleet(t, key).Status.Phase; p != v1alpha1.PhaseSuspended {
		t.Errorf("phase %s", p)
	}
	liveFixture(t, "agentfleet-suspended", "Suspended", getFleet(t, key))
	liveFixture(t, "raycluster-suspended", "Suspended", &rayv1.RayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sleeper"}})
	setSuspend(false)
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)

	if err := k8s.Delete(ctx, getFleet(t, key)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the RayCluster and its pods deleted with the fleet", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, key, &rayv1.RayCluster{})
		var pods corev1.PodList
		if lerr := k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{rayutils.RayClusterLabelKey: "sleeper"}); lerr != nil {
			return false, lerr.Error()
		}
		return apierrors.IsNotFound(err) && len(pods.Items) == 0, fmt.Sprintf("RayCluster: %v; %d pods", err, len(pods.Items))
	})
}

// A fleet whose Secret is missing is Degraded with nothing created, and recovers by itself when
// the Secret appears (the operator watches Secrets' metadata).
func TestMissingSecretRecoversWhenItAppears(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("keyless", ns).Replicas(1).SecretEnv("ANTHROPIC_API_KEY", "llm-keys", "anthropic"))
	waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonSecretNotFound, 20*time.Second)
	if err := k8s.Get(ctx, key, &rayv1.RayCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("RayCluster while the Secret is missing: %v", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "llm-keys", Namespace: ns}, StringData: map[string]string{"anthropic": "test"}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
}
