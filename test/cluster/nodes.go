package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/gpu"
)

// GPU node labels, taint and resource, re-exported for tests.
const (
	GPUResource     = gpu.Resource
	GPUProductLabel = gpu.ProductLabel
	GPUMemoryLabel  = gpu.MemoryLabel
	GPUCountLabel   = gpu.CountLabel
	GPUTaintKey     = gpu.TaintKey
)

const (
	// KwokNodeAnnotation marks the nodes kwok manages.
	KwokNodeAnnotation  = "kwok.x-k8s.io/node"
	notReadyTaintKey    = "node.kubernetes.io/not-ready"
	defaultGPUProduct   = "NVIDIA-H100-80GB-HBM3"
	defaultGPUMemoryMiB = 81559
)

// Node is a fake node run by kwok. The zero value, with a Name, is a CPU node of 32 cores and 128 GiB.
type Node struct {
	Name string
	// GPUs is the node's nvidia.com/gpu capacity; a node with GPUs also gets the GPU labels and the
	// nvidia.com/gpu:NoSchedule taint.
	GPUs int
	// GPUProduct is the nvidia.com/gpu.product label. Default: NVIDIA-H100-80GB-HBM3.
	GPUProduct string
	// GPUMemoryMiB is the nvidia.com/gpu.memory label. Default: 81559 (an H100 80GB).
	GPUMemoryMiB int
	// CPU and Memory capacity. Default: 32 and 128Gi (GPU nodes: 96 and 1Ti).
	CPU, Memory string
	// NoGPUTaint leaves the nvidia.com/gpu:NoSchedule taint off a GPU node.
	NoGPUTaint bool
	Labels     map[string]string
	// OwnKwok runs the node, and its pods, by a kwok of its own (the part NodeKwok(Name)), so that
	// SilenceNode can stop its heartbeats alone, as when its kubelet dies or its network is cut.
	OwnKwok bool
}

// kwokManaged is the annotation value of the nodes the cluster's kwok runs.
const kwokManaged = "fake"

// NodeKwok is the part that runs a node made with OwnKwok.
func NodeKwok(node string) string { return "kwok-" + node }

// kwokValue is the kwok.x-k8s.io/node annotation that gives a node to its kwok.
func (n Node) kwokValue() string {
	if n.OwnKwok {
		return "own-" + n.Name
	}
	return kwokManaged
}

// GPUNodes returns n GPU nodes named <prefix>-0 … with gpus GPUs of product each.
func GPUNodes(prefix string, n, gpus int, product string) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("%s-%d", prefix, i), GPUs: gpus, GPUProduct: product}
	}
	return nodes
}

// Object is the Node object for n, as created in the cluster.
func (n Node) Object() *corev1.Node {
	cpu, mem := n.CPU, n.Memory
	if cpu == "" {
		cpu = map[bool]string{false: "32", true: "96"}[n.GPUs > 0]
	}
	if mem == "" {
		mem = map[bool]string{false: "128Gi", true: "1Ti"}[n.GPUs > 0]
	}
	labels := map[string]string{
		"kubernetes.io/hostname": n.Name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		"type":                   "kwok",
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(mem),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	var taints []corev1.Taint
	if n.GPUs > 0 {
		product, memory := n.GPUProduct, n.GPUMemoryMiB
		if product == "" {
			product = defaultGPUProduct
		}
		if memory == 0 {
			memory = defaultGPUMemoryMiB
		}
		labels[GPUProductLabel] = product
		labels[GPUMemoryLabel] = strconv.Itoa(memory)
		labels[GPUCountLabel] = strconv.Itoa(n.GPUs)
		labels[gpu.PresentLabel] = "true"
		capacity[GPUResource] = *resource.NewQuantity(int64(n.GPUs), resource.DecimalSI)
		if !n.NoGPUTaint {
			taints = append(taints, corev1.Taint{Key: GPUTaintKey, Value: "present", Effect: corev1.TaintEffectNoSchedule})
		}
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.Name,
			Labels:      labels,
			Annotations: map[string]string{KwokNodeAnnotation: n.kwokValue(), "node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec: corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "fake", OperatingSystem: "linux", Architecture: "amd64"},
			Phase:       corev1.NodeRunning,
		},
	}
}

// AddNode creates a fake node; kwok turns it Ready. WaitForNodes waits for that.
func (c *Cluster) AddNode(ctx context.Context, n Node) error {
	if n.OwnKwok {
		c.mu.Lock()
		started := c.partIndex(NodeKwok(n.Name)) >= 0
		c.mu.Unlock()
		if !started {
			if err := c.startKwokFor(ctx, NodeKwok(n.Name), n.kwokValue()); err != nil {
				return err
			}
		}
	}
	if err := c.Client.Create(ctx, n.Object()); err != nil {
		return fmt.Errorf("creating node %s: %w", n.Name, err)
	}
	return nil
}

// WaitForNodes waits until every node is Ready and free of the not-ready taint, so that pods can
// be scheduled on it.
func (c *Cluster) WaitForNodes(ctx context.Context, timeout time.Duration) error {
	var pending []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		if err := c.Client.List(ctx, &nodes); err != nil {
			return false, nil //nolint:nilerr // the apiserver may be briefly unavailable; keep polling
		}
		pending = pending[:0]
		for i := range nodes.Items {
			if !Schedulable(&nodes.Items[i]) {
				pending = append(pending, nodes.Items[i].Name)
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		return &PartError{Part: "kwok", Log: c.LogPath("kwok"), Tail: tail(c.LogPath("kwok"), 10),
			Err: fmt.Errorf("nodes not Ready and untainted after %s: %s (the not-ready taint is lifted by kube-controller-manager: %s)",
				timeout, strings.Join(pending, ", "), c.LogPath("kube-controller-manager"))}
	}
	return nil
}

// Schedulable reports whether node is Ready, not cordoned and free of the not-ready taint.
func Schedulable(node *corev1.Node) bool {
	if node.Spec.Unschedulable {
		return false
	}
	for _, t := range node.Spec.Taints {
		if t.Key == notReadyTaintKey {
			return false
		}
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SilenceNode stops the heartbeats of a node made with OwnKwok (SIGKILL to its kwok), as when its
// kubelet dies or its network is cut: its Lease and status go stale, the node lifecycle controller
// marks it NotReady after Options.NodeMonitorGracePeriod and taints it unreachable, and nothing
// finishes the deletion of its pods. RestoreNode brings its kwok back.
func (c *Cluster) SilenceNode(name string) error {
	_, err := c.KillPart(NodeKwok(name), 10*time.Second)
	return err
}

// RestoreNode starts the kwok of a silenced node again: it renews the node's Lease and status, and
// runs the pods left on it (it finishes the deletion of those being deleted).
func (c *Cluster) RestoreNode(ctx context.Context, name string) error {
	return c.RestartPart(ctx, NodeKwok(name))
}

// CordonNode marks a node unschedulable, as `kubectl cordon` does.
func (c *Cluster) CordonNode(ctx context.Context, name string) error {
	node := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return fmt.Errorf("cordoning node %s: %w", name, err)
	}
	patch := client.MergeFrom(node.DeepCopy())
	node.Spec.Unschedulable = true
	if err := c.Client.Patch(ctx, node, patch); err != nil {
		return fmt.Errorf("cordoning node %s: %w", name, err)
	}
	return nil
}

// DeleteNode deletes a node, as when a machine is removed; the pods on it are then deleted by the
// pod garbage collector of kube-controller-manager.
func (c *Cluster) DeleteNode(ctx context.Context, name string) error {
	err := c.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	return nil
}
