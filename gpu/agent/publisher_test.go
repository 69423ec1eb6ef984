package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/agentfleet/agentfleet/gpu"
)

// patchOf is a patch the fake client received, for comparison.
type patchOf struct {
	Resource, Subresource, Namespace, Name string
	Type                                   types.PatchType
	Patch                                  string
}

func patches(c *fake.Clientset) []patchOf {
	var ps []patchOf
	for _, a := range c.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok {
			ps = append(ps, patchOf{pa.GetResource().Resource, pa.GetSubresource(), pa.GetNamespace(), pa.GetName(), pa.GetPatchType(), string(pa.GetPatch())})
			continue
		}
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			ps = append(ps, patchOf{Resource: a.GetResource().Resource, Name: a.GetVerb()})
		}
	}
	return ps
}

// podGetter reads pods from the fake client, as the cache would.
type podGetter struct{ c *fake.Clientset }

func (g podGetter) Pod(namespace, name string) (*corev1.Pod, error) {
	return g.c.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
}

// observe is the Observation of r with the pods as the fake client has them.
func observe(c *fake.Clientset, r Report) Observation {
	obs := Observation{NodeName: "gpu-node-1", Report: r, Holders: holders, Pods: map[types.NamespacedName]*corev1.Pod{}}
	for _, refs := range holders {
		for _, ref := range refs {
			p, err := podGetter{c}.Pod(ref.Namespace, ref.Name)
			if err == nil {
				obs.Pods[ref.Key()] = p
			}
		}
	}
	return obs
}

func TestPublisher(t *testing.T) {
	c := fake.NewClientset(testNode(""), testPod("worker-0"), testPod("worker-1"), testPod("worker-2"))
	clk := testingclock.NewFakeClock(now)
	p := &Publisher{Client: c, NodeName: "gpu-node-1", Clock: clk}
	healthy := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Healthy), testGPU(2, "GPU-2", gpu.Healthy), testGPU(3, "GPU-3", gpu.Healthy))
	lost := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Healthy), testGPU(2, "GPU-2", gpu.Unhealthy, xid79...), testGPU(3, "GPU-3", gpu.Healthy))
	ts := now.Format(time.RFC3339)

	steps := []struct {
		name   string
		report Report
		step   time.Duration
		want   []patchOf
	}{
		{name: "first poll: condition and label", report: healthy, want: []patchOf{
			{"nodes", "status", "", "gpu-node-1", types.StrategicMergePatchType,
				fmt.Sprintf(`{"status":{"conditions":[{"type":"GPUHealthy","status":"True","lastHeartbeatTime":%q,"lastTransitionTime":%q,"reason":"GPUsHealthy","message":"4 of 4 GPUs healthy"}]}}`, ts, ts)},
			{"nodes", "", "", "gpu-node-1", types.MergePatchType, `{"metadata":{"labels":{"agentfleet.dev/gpu-health":"healthy"}}}`},
		}},
		{name: "steady: no write", report: healthy, step: 10 * time.Second},
		{name: "steady again: no write", report: healthy, step: 10 * time.Second},
		{name: "xid 79 on GPU 2: node, label, the pod holding it", report: lost, step: 10 * time.Second, want: []patchOf{
			{"nodes", "status", "", "gpu-node-1", types.StrategicMergePatchType,
				fmt.Sprintf(`{"status":{"conditions":[{"type":"GPUHealthy","status":"False","lastHeartbeatTime":%q,"lastTransitionTime":%q,"reason":"GPUUnhealthy","message":%q}]}}`,
					now.Add(30*time.Second).Format(time.RFC3339), now.Add(30*time.Second).Format(time.RFC3339), msgGPU2Lost)},
			{"nodes", "", "", "gpu-node-1", types.MergePatchType, `{"metadata":{"labels":{"agentfleet.dev/gpu-health":"unhealthy"}}}`},
			{"pods", "status", "agents", "worker-2", types.StrategicMergePatchType,
				fmt.Sprintf(`{"status":{"conditions":[{"type":"agentfleet.dev/GPUHealthy","status":"False","lastProbeTime":null,"lastTransitionTime":%q,"reason":"GPUUnhealthy","message":"node gpu-node-1: 1 of 2 GPUs unhealthy: GPU-2: xid 79 (GPU has fallen off the bus)"}]}}`,
					now.Add(30*time.Second).Format(time.RFC3339))},
		}},
		{name: "still unhealthy: no write", report: lost, step: 10 * time.Second},
		{name: "heartbeat period: the node condition only", report: lost, step: DefaultHeartbeatPeriod, want: []patchOf{
			{"nodes", "status", "", "gpu-node-1", types.StrategicMergePatchType,
				fmt.Sprintf(`{"status":{"conditions":[{"type":"GPUHealthy","status":"False","lastHeartbeatTime":%q,"lastTransitionTime":%q,"reason":"GPUUnhealthy","message":%q}]}}`,
					now.Add(40*time.Second+DefaultHeartbeatPeriod).Format(time.RFC3339), now.Add(30*time.Second).Format(time.RFC3339), msgGPU2Lost)},
		}},
	}
	for _, s := range steps {
		clk.Step(s.step)
		c.ClearActions()
		if _, err := p.Publish(t.Context(), observe(c, s.report)); err != nil {
			t.Fatalf("%s: Publish() = %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, patches(c)); diff != "" {
			t.Errorf("%s: patches (-want +got):\n%s", s.name, diff)
		}
	}

	// What the API server holds now: the patches merged, other conditions kept.
	node, err := c.CoreV1().Nodes().Get(t.Context(), "gpu-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Labels; got[gpu.HealthLabel] != gpu.HealthUnhealthy || got[gpu.PresentLabel] != "true" {
		t.Errorf("node labels = %v, want %s=%s and the others kept", got, gpu.HealthLabel, gpu.HealthUnhealthy)
	}
	if n := len(node.Status.Conditions); n != 2 || nodeCondition(node) == nil || nodeCondition(node).Status != corev1.ConditionFalse {
		t.Errorf("node conditions = %v, want Ready kept and GPUHealthy False", node.Status.Conditions)
	}
	pod, err := c.CoreV1().Pods("agents").Get(t.Context(), "worker-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cond := podCondition(pod); cond == nil || cond.Status != corev1.ConditionFalse || len(pod.Status.Conditions) != 2 {
		t.Errorf("worker-2 conditions = %v, want Ready kept and %s False", pod.Status.Conditions, PodCondition)
	}
}

func TestPublisherErrors(t *testing.T) {
	lost := report(testGPU(0, "GPU-0", gpu.Unhealthy, xid79...))
	t.Run("no node", func(t *testing.T) {
		p := &Publisher{Client: fake.NewClientset(), NodeName: "gpu-node-1", Clock: testingclock.NewFakeClock(now)}
		if _, err := p.Publish(t.Context(), Observation{Report: lost}); err == nil {
			t.Fatal("Publish() with no node: no error")
		}
	})
	t.Run("a pod gone: not an error; a failed node write does not stop the label", func(t *testing.T) {
		c := fake.NewClientset(testNode(""))
		c.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "status" {
				return true, nil, fmt.Errorf("etcd is sad")
			}
			return false, nil, nil
		})
		p := &Publisher{Client: c, NodeName: "gpu-node-1", Clock: testingclock.NewFakeClock(now)}
		obs := Observation{Report: lost, Holders: holders, Pods: pods(testPod("worker-0"))} // in the cache, gone from the API server
		changes, err := p.Publish(t.Context(), obs)
		if err == nil || len(changes.Pods) != 1 {
			t.Fatalf("Publish() = %+v, %v; want the status patch's error and one pod change", changes, err)
		}
		node, _ := c.CoreV1().Nodes().Get(t.Context(), "gpu-node-1", metav1.GetOptions{})
		if node.Labels[gpu.HealthLabel] != gpu.HealthUnhealthy {
			t.Errorf("label = %q, want it written despite the failed status patch", node.Labels[gpu.HealthLabel])
		}
	})
}

// BenchmarkPublish measures a steady-state poll of 8 GPUs held by 8 pods: read the node, plan, and
// no write.
func BenchmarkPublish(b *testing.B) {
	gpus := make([]GPU, 8)
	hs := map[string][]PodRef{}
	ps := map[types.NamespacedName]*corev1.Pod{}
	objs := []runtime.Object{testNode("")}
	for i := range gpus {
		uuid := fmt.Sprintf("GPU-%d", i)
		gpus[i] = testGPU(i, uuid, gpu.Healthy)
		name := fmt.Sprintf("worker-%d", i)
		hs[uuid] = []PodRef{{Namespace: "agents", Name: name, Container: "ray-worker"}}
		ps[key(name)] = testPod(name)
		objs = append(objs, ps[key(name)])
	}
	c := fake.NewClientset(objs...)
	gpus[3] = testGPU(3, "GPU-3", gpu.Unhealthy, xid79...)
	p := &Publisher{Client: c, NodeName: "gpu-node-1", Clock: testingclock.NewFakeClock(now)}
	obs := Observation{NodeName: "gpu-node-1", Report: report(gpus...), Holders: hs, Pods: ps}
	if _, err := p.Publish(b.Context(), obs); err != nil {
		b.Fatal(err)
	}
	ps[key("worker-3")], _ = c.CoreV1().Pods("agents").Get(b.Context(), "worker-3", metav1.GetOptions{})
	b.ResetTimer()
	for b.Loop() {
		changes, err := p.Publish(b.Context(), obs)
		if err != nil || !changes.Empty() {
			b.Fatalf("Publish() = %+v, %v; want no change", changes, err)
		}
	}
}

func TestPublisherStaleCache(t *testing.T) {
	c := fake.NewClientset(testNode(""), testPod("worker-2"))
	clk := testingclock.NewFakeClock(now)
	p := &Publisher{Client: c, NodeName: "gpu-node-1", Clock: clk}
	lost := report(testGPU(2, "GPU-2", gpu.Unhealthy, xid79...))
	stale := Observation{NodeName: "gpu-node-1", Report: lost, Holders: holders, Pods: pods(testPod("worker-2"))} // never shows the write
	if _, err := p.Publish(t.Context(), stale); err != nil {
		t.Fatal(err)
	}
	c.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, testNode(""), nil // a cache that has not seen the writes
	})

	// 200 ms later, an XID poll: the reads do not show the writes yet, and nothing is written again.
	clk.Step(MinPollGap)
	c.ClearActions()
	if changes, err := p.Publish(t.Context(), stale); err != nil || !changes.Empty() {
		t.Errorf("Publish() on a stale read = %+v, %v; want no change", changes, err)
	}
	// Past writeSettle, a read that still does not show them is someone else's change: write again.
	clk.Step(writeSettle)
	changes, err := p.Publish(t.Context(), stale)
	if err != nil || changes.NodeCondition == nil || changes.NodeLabel == nil || len(changes.Pods) != 1 {
		t.Errorf("Publish() past writeSettle = %+v, %v; want the condition, label and pod condition again", changes, err)
	}
}
