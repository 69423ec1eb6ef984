// Command gpuhealth measures GPU fault handling on the local cluster (`make bench`), with the real
// KubeRay operator, the operator as a process and the GPU health agent for two kwok GPU nodes (the
// agent's own code over go-nvml's mock NVML and a fake kubelet pod-resources API: test/fakegpu).
// For each of N injections of XID 79 on the GPU a worker holds, it reports:
//
//   - XID event to node condition: from the event sent through the mock's NVML event set to a watch
//     seeing the node's GPUHealthy=False;
//   - XID event to pod condition: to a watch seeing agentfleet.dev/GPUHealthy=False on the worker;
//   - condition to replacement requested: from that pod condition to the worker in the RayCluster's
//     workersToDelete.
//
// Goals (issue 10): under 1 s from event to condition; under 5 s from condition to replacement
// requested. Each injection waits for the node to recover first (the agent re-probes a failing GPU
// after 10 s; the quiet period here is 0), so a run of N takes about N × 11 s.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
	"github.com/agentfleet/agentfleet/test/fakegpu"
)

const product = "NVIDIA-A100-SXM4-80GB"

// How long each wait may take: none is unbounded, and all end with the -timeout context at the latest.
const (
	buildTimeout   = 10 * time.Minute
	readyTimeout   = 5 * time.Minute
	recoverTimeout = 60 * time.Second // the agent re-probes after 10 s
	faultTimeout   = 30 * time.Second // a condition or a replacement after an XID
	pollEvery      = 100 * time.Millisecond
)

func main() {
	injections := flag.Int("injections", 10, "XID injections")
	timeout := flag.Duration("timeout", 20*time.Minute, "the whole run's deadline: every wait ends by then at the latest")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	err := run(ctx, *injections)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type bench struct {
	c      *cluster.Cluster
	k8s    client.WithWatch
	agents map[string]*fakegpu.Agent // by node
}

func run(ctx context.Context, injections int) error {
	crds, err := cluster.RepoPath("config/crd/bases")
	if err != nil {
		return err
	}
	nodes := cluster.GPUNodes("a100", 2, 4, product)
	c, err := cluster.Start(ctx, cluster.Options{CRDDirectoryPaths: []string{crds},
		Nodes: append(slices.Clone(nodes), cluster.Node{Name: "cpu-0", CPU: "64", Memory: "256Gi"})})
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()
	buildCtx, cancelBuild := context.WithTimeout(ctx, buildTimeout)
	defer cancelBuild()
	manager, err := c.BuildOperator(buildCtx)
	if err != nil {
		return err
	}
	if err := c.StartOperator(ctx, "agentfleet-operator", manager); err != nil {
		return err
	}
	scheme := cluster.Scheme()
	_ = v1alpha1.AddToScheme(scheme)
	k8s, err := client.NewWithWatch(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	b := &bench{c: c, k8s: k8s, agents: map[string]*fakegpu.Agent{}}
	for _, n := range nodes {
		a, err := fakegpu.Start(ctx, c, fakegpu.Options{Node: n.Name, GPUs: n.GPUs, PollInterval: 200 * time.Millisecond,
			Args: []string{"--quiet-period=0s"}}) // healthy at the first clean re-probe
		if err != nil {
			return err
		}
		defer func() { _ = a.Stop() }()
		b.agents[n.Name] = a
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "gpuhealth-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		return err
	}
	f := builder.MakeAgentFleet("gpus", ns.Name).Replicas(2).GPUs(1, product).Mutate(func(f *v1alpha1.AgentFleet) {
		f.UID, f.Generation = "", 0
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To(int32(50)), WindowSeconds: 60}
	}).Obj()
	if err := k8s.Create(ctx, f); err != nil {
		return err
	}
	key := client.ObjectKeyFromObject(f)

	var toNode, toPod, toReplace []time.Duration
	for i := range injections {
		xid, pod, replace, err := b.inject(ctx, key)
		if err != nil {
			return fmt.Errorf("injection %d: %w", i+1, err)
		}
		toNode, toPod, toReplace = append(toNode, xid), append(toPod, pod), append(toReplace, replace)
	}
	fmt.Printf("GPU fault handling, %d injections of XID 79 on a worker's GPU (agent polling every 200ms)\n", injections)
	for _, r := range []struct {
		what string
		lat  []time.Duration
		goal string
	}{
		{"XID event → node condition GPUHealthy=False", toNode, "goal < 1 s"},
		{"XID event → pod condition on the worker", toPod, ""},
		{"pod condition → replacement requested", toReplace, "goal < 5 s"},
	} {
		fmt.Printf("  %-46s p50 %6.0f ms   p99 %6.0f ms   max %6.0f ms   %s\n", r.what, pct(r.lat, 50), pct(r.lat, 99), pct(r.lat, 100), r.goal)
	}
	return nil
}

// inject waits for both nodes to be healthy and the fleet's workers Ready, breaks the GPU of one
// worker with XID 79 and measures.
func (b *bench) inject(ctx context.Context, fleet client.ObjectKey) (toNode, toPod, toReplace time.Duration, err error) {
	var worker corev1.Pod
	var agent *fakegpu.Agent
	var gpus []int
	err = wait.PollUntilContextTimeout(ctx, pollEvery, readyTimeout, true, func(ctx context.Context) (bool, error) {
		for node := range b.agents {
			n := &corev1.Node{}
			if err := b.k8s.Get(ctx, client.ObjectKey{Name: node}, n); err != nil || nodeCondition(n) != corev1.ConditionTrue || n.Labels[gpu.HealthLabel] != gpu.HealthHealthy {
				return false, nil //nolint:nilerr // not yet: keep polling
			}
		}
		var pods corev1.PodList
		if err := b.k8s.List(ctx, &pods, client.InNamespace(fleet.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: fleet.Name, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup}); err != nil {
			return false, nil //nolint:nilerr // not yet: keep polling
		}
		ready := 0
		for i := range pods.Items {
			if podReady(&pods.Items[i]) {
				ready++
			}
		}
		if ready != 2 || len(pods.Items) != 2 {
			return false, nil
		}
		worker = pods.Items[0]
		agent = b.agents[worker.Spec.NodeName]
		if agent == nil {
			return false, fmt.Errorf("worker %s on node %s, which has no agent", worker.Name, worker.Spec.NodeName)
		}
		gpus = agent.Kubelet.GPUsOf(client.ObjectKeyFromObject(&worker))
		return len(gpus) > 0, nil
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("both nodes healthy and 2 workers Ready, each holding a GPU: %w", err)
	}
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	node := worker.Spec.NodeName
	nodeFalse, err := b.firstSeen(watchCtx, &corev1.NodeList{}, "", node, func(o client.Object) bool {
		return nodeCondition(o.(*corev1.Node)) == corev1.ConditionFalse
	})
	if err != nil {
		return 0, 0, 0, err
	}
	podFalse, err := b.firstSeen(watchCtx, &corev1.PodList{}, worker.Namespace, worker.Name, func(o client.Object) bool {
		for _, c := range o.(*corev1.Pod).Status.Conditions {
			if c.Type == gpu.PodConditionGPUHealthy && c.Status == corev1.ConditionFalse {
				return true
			}
		}
		return false
	})
	if err != nil {
		return 0, 0, 0, err
	}
	requested, err := b.firstSeen(watchCtx, &rayv1.RayClusterList{}, fleet.Namespace, fleet.Name, func(o client.Object) bool {
		for _, g := range o.(*rayv1.RayCluster).Spec.WorkerGroupSpecs {
			if slices.Contains(g.ScaleStrategy.WorkersToDelete, worker.Name) {
				return true
			}
		}
		return false
	})
	if err != nil {
		return 0, 0, 0, err
	}

	injected := time.Now()
	if err := agent.Inject(ctx, fakegpu.Fault{GPU: gpus[0], XID: 79}); err != nil {
		return 0, 0, 0, err
	}
	var atNode, atPod, atRequested time.Time
	for _, w := range []struct {
		ch   <-chan time.Time
		at   *time.Time
		what string
	}{
		{nodeFalse, &atNode, "node " + node + " GPUHealthy=False"},
		{podFalse, &atPod, "pod condition on " + worker.Name},
		{requested, &atRequested, worker.Name + " in workersToDelete"},
	} {
		select {
		case *w.at = <-w.ch:
		case <-time.After(faultTimeout):
			return 0, 0, 0, fmt.Errorf("%s: not within %s of XID 79 on %s (logs: %s)", w.what, faultTimeout, fakegpu.UUID(gpus[0]), b.c.Dir)
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		}
	}
	// The next injection waits for the node's recovery: the first re-probe, 10 s on.
	return atNode.Sub(injected), atPod.Sub(injected), atRequested.Sub(atPod), nil
}

// firstSeen watches one object and sends the time it first sees cond hold. The watch starts with
// the object's current state.
func (b *bench) firstSeen(ctx context.Context, list client.ObjectList, ns, name string, cond func(client.Object) bool) (<-chan time.Time, error) {
	w, err := b.k8s.Watch(ctx, list, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", types.NamespacedName{Namespace: ns, Name: name}, err)
	}
	out := make(chan time.Time, 1)
	go func() {
		defer w.Stop()
		for e := range w.ResultChan() {
			if o, ok := e.Object.(client.Object); ok && e.Type != watch.Error && cond(o) {
				out <- time.Now()
				return
			}
		}
	}()
	return out, nil
}

func nodeCondition(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == gpu.NodeConditionGPUHealthy {
			return c.Status
		}
	}
	return ""
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

// pct is the p-th percentile of d in milliseconds (nearest rank).
func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i, 1), len(s))
	return float64(s[i-1]) / float64(time.Millisecond)
}
