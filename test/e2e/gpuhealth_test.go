package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
	"github.com/agentfleet/agentfleet/test/fakegpu"
)

// gpuHealthProduct is the GPU product of this test's nodes, which no other test's fleet asks for, so
// that only this test's workers land there.
const gpuHealthProduct = "NVIDIA-A100-SXM4-80GB"

// The GPU health agent (the real agent over a mock NVML, with a fake kubelet pod-resources API) runs
// for one kwok node. An XID 79 on GPU 2 marks the node and the pod holding GPU 2, and the fleet
// replaces exactly that worker, on the other node; the GPU recovers after the quiet period. Then a
// foreign fault condition (GKE's XidCriticalError) on the node without the agent: the operator
// labels it and replaces the fleet's GPU workers there.
func TestGPUHealth(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	nodes := cluster.GPUNodes("a100", 2, 4, gpuHealthProduct)
	agentNode, plainNode := nodes[0].Name, nodes[1].Name
	for _, n := range nodes {
		if err := c.AddNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.DeleteNode(context.Background(), n.Name); err != nil {
				t.Error(err)
			}
		})
	}
	if err := c.WaitForNodes(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// Every worker on the agent's node first.
	if err := c.CordonNode(ctx, plainNode); err != nil {
		t.Fatal(err)
	}
	agent, err := fakegpu.Start(ctx, c, fakegpu.Options{Node: agentNode, GPUs: 4, PollInterval: 200 * time.Millisecond, QuietPeriod: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := agent.Stop(); err != nil {
			t.Error(err)
		}
	})
	agentLog := c.LogPath(agent.Name)
	waitNodeHealth(t, agentNode, corev1.ConditionTrue, gpu.HealthHealthy, 30*time.Second, agentLog)

	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("gpus", ns).Replicas(3).GPUs(1, gpuHealthProduct))
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 90*time.Second)
	before := agentPods(t, ns, key.Name)
	for _, p := range before {
		if p.Spec.NodeName != agentNode {
			t.Fatalf("worker %s on %s, want every worker on %s", p.Name, p.Spec.NodeName, agentNode)
		}
	}
	if err := uncordon(ctx, plainNode); err != nil {
		t.Fatal(err)
	}
	// The agent asks the kubelet every poll; GPU 2 goes to the third worker by name.
	var victim types.NamespacedName
	eventually(t, 10*time.Second, "the fake kubelet has handed out GPU 2", func(context.Context) (bool, string) {
		h, ok := agent.Kubelet.Holder(2)
		victim = h
		return ok, "GPU 2 free"
	})
	t.Logf("GPU 2 (%s) is held by %s", fakegpu.UUID(2), victim.Name)

	t.Run("XID 79 on GPU 2 replaces the worker on it", func(t *testing.T) {
		cs := clientset(t)
		nodeUnhealthy := firstSeen(t, func(ctx context.Context) (watch.Interface, error) {
			return cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", agentNode).String()})
		}, func(o any) bool {
			n, ok := o.(*corev1.Node)
			return ok && nodeCondition(n) == corev1.ConditionFalse && n.Labels[gpu.HealthLabel] == gpu.HealthUnhealthy
		})
		podMarked := firstSeen(t, podWatch(cs, victim), func(o any) bool {
			p, ok := o.(*corev1.Pod)
			return ok && podGPUCondition(p) != nil && podGPUCondition(p).Status == corev1.ConditionFalse
		})
		podDeleted := firstSeen(t, podWatch(cs, victim), func(o any) bool {
			p, ok := o.(*corev1.Pod)
			return ok && p.DeletionTimestamp != nil
		})

		injected := time.Now()
		if err := agent.Inject(ctx, fakegpu.Fault{GPU: 2, XID: 79, Lost: true}); err != nil {
			t.Fatal(err)
		}
		atNode := receive(t, nodeUnhealthy, 30*time.Second, "node "+agentNode+" GPUHealthy=False and labelled unhealthy", agentLog)
		atPod := receive(t, podMarked, 30*time.Second, "pod "+victim.Name+" "+gpu.PodConditionGPUHealthy+"=False", agentLog)
		atDeleted := receive(t, podDeleted, 30*time.Second, "worker "+victim.Name+" deleted", c.LogPath("agentfleet-operator"))
		t.Logf("XID 79 injected → node condition False and label unhealthy: %s; → pod condition: %s; pod condition → worker deleted: %s",
			atNode.Sub(injected).Round(time.Millisecond), atPod.Sub(injected).Round(time.Millisecond), atDeleted.Sub(atPod).Round(time.Millisecond))

		var replacement corev1.Pod
		eventually(t, 60*time.Second, "3 Ready workers, "+victim.Name+" replaced", func(context.Context) (bool, string) {
			pods := agentPods(t, ns, key.Name)
			var names []string
			ready := 0
			for i := range pods {
				names = append(names, pods[i].Name+"@"+pods[i].Spec.NodeName)
				if pods[i].Name == victim.Name {
					return false, "still there: " + strings.Join(names, ", ")
				}
				if podReady(&pods[i]) {
					ready++
				}
				if !slices.ContainsFunc(before, func(p corev1.Pod) bool { return p.Name == pods[i].Name }) {
					replacement = pods[i]
				}
			}
			return ready == 3 && len(pods) == 3, fmt.Sprintf("%d Ready: %s", ready, strings.Join(names, ", "))
		})
		for _, p := range before {
			if p.Name == victim.Name {
				continue
			}
			cur := &corev1.Pod{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(&p), cur); err != nil || cur.UID != p.UID || cur.DeletionTimestamp != nil {
				t.Errorf("worker %s was touched (err %v): only %s holds the failing GPU", p.Name, err, victim.Name)
			}
		}
		if replacement.Spec.NodeName != plainNode || replacement.Status.Phase != corev1.PodRunning {
			t.Errorf("replacement %s on %q, %s; want Running on %s, away from the unhealthy node", replacement.Name, replacement.Spec.NodeName, replacement.Status.Phase, plainNode)
		}
		eventually(t, 10*time.Second, "restarts.gpuUnhealthy = 1", func(context.Context) (bool, string) {
			f := getFleet(t, key)
			r := f.Status.Restarts
			return r.GPUUnhealthy == 1 && r.Crashed == 0 && r.Stalled == 0 && r.Looping == 0, fmt.Sprintf("%+v", r)
		})
		var event string
		eventually(t, 10*time.Second, "a WorkerReplaced Event naming the node, the GPU and the XID", func(ctx context.Context) (bool, string) {
			msgs := eventMessages(ctx, key, "WorkerReplaced")
			for _, m := range msgs {
				if strings.Contains(m, victim.Name) && strings.Contains(m, agentNode) && strings.Contains(m, fakegpu.UUID(2)) && strings.Contains(m, "79") {
					event = m
					return true, m
				}
			}
			return false, fmt.Sprintf("%q", msgs)
		})
		t.Logf("Event WorkerReplaced: %s", event)

		// Mended: the GPU answers again and is healthy after its re-probe back-off (10 s) and the
		// quiet period (3 s) of clean probes.
		if err := agent.Clear(ctx, 2); err != nil {
			t.Fatal(err)
		}
		cleared := time.Now()
		waitNodeHealth(t, agentNode, corev1.ConditionTrue, gpu.HealthHealthy, 90*time.Second, agentLog)
		t.Logf("GPU 2 mended → node GPUHealthy=True and labelled healthy again: %s (re-probe back-off 1 s, quiet period 3 s)",
			time.Since(cleared).Round(time.Millisecond))
		if r := getFleet(t, key).Status.Restarts; r.GPUUnhealthy != 1 {
			t.Errorf("restarts %+v after the GPU recovered, want gpuUnhealthy still 1", r)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("a foreign fault condition on a node without the agent", func(t *testing.T) {
		var onPlain []string
		for _, p := range agentPods(t, ns, key.Name) {
			if p.Spec.NodeName == plainNode {
				onPlain = append(onPlain, p.Name)
			}
		}
		if len(onPlain) == 0 {
			t.Fatalf("no worker on %s", plainNode)
		}
		restarts := getFleet(t, key).Status.Restarts.GPUUnhealthy
		// GKE's condition for a critical XID.
		if err := setNodeCondition(ctx, plainNode, "XidCriticalError", corev1.ConditionTrue, "XidCriticalErrorDetected", "XID 79 on GPU-0"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		eventually(t, 30*time.Second, "node "+plainNode+" labelled unhealthy by the operator", func(ctx context.Context) (bool, string) {
			n := &corev1.Node{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: plainNode}, n); err != nil {
				return false, err.Error()
			}
			return n.Labels[gpu.HealthLabel] == gpu.HealthUnhealthy && n.Annotations[gpu.HealthSetByAnnotation] == gpu.HealthSetByOperator,
				fmt.Sprintf("labels %v", n.Labels)
		})
		t.Logf("XidCriticalError=True → label unhealthy: %s", time.Since(start).Round(time.Millisecond))
		eventually(t, 60*time.Second, "the workers on "+plainNode+" replaced on "+agentNode, func(context.Context) (bool, string) {
			pods := agentPods(t, ns, key.Name)
			var names []string
			ready := 0
			for i := range pods {
				names = append(names, pods[i].Name+"@"+pods[i].Spec.NodeName)
				if slices.Contains(onPlain, pods[i].Name) || pods[i].Spec.NodeName != agentNode {
					return false, strings.Join(names, ", ")
				}
				if podReady(&pods[i]) {
					ready++
				}
			}
			return ready == 3 && len(pods) == 3, fmt.Sprintf("%d Ready: %s", ready, strings.Join(names, ", "))
		})
		t.Logf("XidCriticalError=True → %d worker(s) replaced and the fleet Ready again: %s", len(onPlain), time.Since(start).Round(time.Millisecond))
		eventually(t, 10*time.Second, fmt.Sprintf("restarts.gpuUnhealthy = %d", restarts+int32(len(onPlain))), func(context.Context) (bool, string) {
			r := getFleet(t, key).Status.Restarts
			return r.GPUUnhealthy == restarts+int32(len(onPlain)), fmt.Sprintf("%+v", r)
		})
		var event string
		eventually(t, 10*time.Second, "a WorkerReplaced Event naming the node and its condition", func(ctx context.Context) (bool, string) {
			msgs := eventMessages(ctx, key, "WorkerReplaced")
			for _, m := range msgs {
				if strings.Contains(m, onPlain[0]) && strings.Contains(m, plainNode) && strings.Contains(m, "XidCriticalError") {
					event = m
					return true, m
				}
			}
			return false, fmt.Sprintf("%q", msgs)
		})
		t.Logf("Event WorkerReplaced: %s", event)

		if err := setNodeCondition(ctx, plainNode, "XidCriticalError", corev1.ConditionFalse, "NoXidCriticalError", ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the operator's label removed from "+plainNode, func(ctx context.Context) (bool, string) {
			n := &corev1.Node{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: plainNode}, n); err != nil {
				return false, err.Error()
			}
			_, labelled := n.Labels[gpu.HealthLabel]
			_, annotated := n.Annotations[gpu.HealthSetByAnnotation]
			return !labelled && !annotated, fmt.Sprintf("labels %v", n.Labels)
		})
	})
	if !t.Failed() {
		// The nodes go at cleanup; the fleet first, so that no worker waits for them.
		if err := k8s.Delete(ctx, &v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}); err != nil {
			t.Error(err)
		}
	}
}

func clientset(t *testing.T) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func podWatch(cs kubernetes.Interface, pod types.NamespacedName) func(context.Context) (watch.Interface, error) {
	return func(ctx context.Context) (watch.Interface, error) {
		return cs.CoreV1().Pods(pod.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String()})
	}
}

// firstSeen watches (starting, as a watch without a resourceVersion does, with the current state)
// and sends the time it first sees an object for which cond holds. It watches again if the watch
// ends, until the test ends.
func firstSeen(t *testing.T, start func(context.Context) (watch.Interface, error), cond func(any) bool) <-chan time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := make(chan time.Time, 1)
	w, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			for e := range w.ResultChan() {
				if e.Type != watch.Error && cond(e.Object) {
					out <- time.Now()
					w.Stop()
					return
				}
			}
			if ctx.Err() != nil {
				return
			}
			next, err := start(ctx)
			if err != nil {
				return
			}
			w = next
		}
	}()
	return out
}

func receive(t *testing.T, ch <-chan time.Time, timeout time.Duration, what, log string) time.Time {
	t.Helper()
	select {
	case at := <-ch:
		return at
	case <-time.After(timeout):
		t.Fatalf("%s: not seen within %s (log: %s)", what, timeout, log)
		return time.Time{}
	}
}

func nodeCondition(n *corev1.Node) corev1.ConditionStatus {
	for _, cond := range n.Status.Conditions {
		if cond.Type == gpu.NodeConditionGPUHealthy {
			return cond.Status
		}
	}
	return ""
}

func podGPUCondition(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == gpu.PodConditionGPUHealthy {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// waitNodeHealth waits until the agent's node condition and label say status and label.
func waitNodeHealth(t *testing.T, node string, status corev1.ConditionStatus, label string, timeout time.Duration, log string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("node %s %s=%s and labelled %s (agent log: %s)", node, gpu.NodeConditionGPUHealthy, status, label, log), func(ctx context.Context) (bool, string) {
		n := &corev1.Node{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
			return false, err.Error()
		}
		return nodeCondition(n) == status && n.Labels[gpu.HealthLabel] == label,
			fmt.Sprintf("condition %q, label %q", nodeCondition(n), n.Labels[gpu.HealthLabel])
	})
}

func uncordon(ctx context.Context, name string) error {
	node := &corev1.Node{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return err
	}
	patch := client.MergeFrom(node.DeepCopy())
	node.Spec.Unschedulable = false
	return k8s.Patch(ctx, node, patch)
}

// setNodeCondition sets one condition of a node's status, as another node agent would: a strategic
// merge patch, which merges conditions by type and leaves kwok's own alone.
func setNodeCondition(ctx context.Context, node, condType string, status corev1.ConditionStatus, reason, message string) error {
	now := metav1.Now()
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":%q,"status":%q,"reason":%q,"message":%q,"lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
		condType, status, reason, message, now.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	if err := k8s.Status().Patch(ctx, n, client.RawPatch(types.StrategicMergePatchType, []byte(patch))); err != nil {
		return fmt.Errorf("setting condition %s=%s on node %s: %w", condType, status, node, err)
	}
	return nil
}

// eventMessages are the messages of the Events of a reason about a fleet.
func eventMessages(ctx context.Context, key client.ObjectKey, reason string) []string {
	var events corev1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(key.Namespace), client.MatchingFields{"involvedObject.name": key.Name, "reason": reason}); err != nil {
		return []string{err.Error()}
	}
	var msgs []string
	for _, e := range events.Items {
		msgs = append(msgs, e.Message)
	}
	return msgs
}
