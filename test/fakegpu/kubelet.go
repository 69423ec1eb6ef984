package fakegpu

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/gpu"
)

// Kubelet is the kubelet's pod-resources API v1 for one kwok node, on a unix socket: it answers
// List with the GPUs each pod bound to the node holds, as NVIDIA's device plugin would have
// allocated them. A pod gets the lowest free GPUs when the kubelet first sees it (pods first seen
// together in the order of their names) and keeps them while it is on the node.
type Kubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer

	// Socket is the path of the unix socket it serves on.
	Socket string

	client client.Client
	node   string
	gpus   int
	server *grpc.Server
	dir    string

	mu sync.Mutex
	// held is each pod's GPUs, by container.
	held map[types.UID]allocation
}

type allocation struct {
	pod        types.NamespacedName
	containers map[string][]int
}

// StartKubelet serves the pod-resources API of node, which has gpus GPUs, reading the node's pods
// through c, on a socket in a new temporary folder; Stop stops it.
func StartKubelet(c client.Client, node string, gpus int) (*Kubelet, error) {
	// A short path: a unix socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "kubelet-")
	if err != nil {
		return nil, fmt.Errorf("starting the fake pod-resources API: %w", err)
	}
	k := &Kubelet{Socket: filepath.Join(dir, "kubelet.sock"), client: c, node: node, gpus: gpus, dir: dir, held: map[types.UID]allocation{}}
	l, err := net.Listen("unix", k.Socket)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting the fake pod-resources API: %w", err)
	}
	k.server = grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(k.server, k)
	go func() { _ = k.server.Serve(l) }()
	return k, nil
}

// Stop stops serving and removes the socket.
func (k *Kubelet) Stop() {
	k.server.Stop()
	_ = os.RemoveAll(k.dir)
}

// List is the pod-resources API's List: the node's pods and the GPUs their containers hold.
func (k *Kubelet) List(ctx context.Context, _ *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	if err := k.sync(ctx); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	resp := &podresourcesv1.ListPodResourcesResponse{}
	for _, a := range k.allocations() {
		pr := &podresourcesv1.PodResources{Namespace: a.pod.Namespace, Name: a.pod.Name}
		for _, name := range sortedKeys(a.containers) {
			ids := make([]string, 0, len(a.containers[name]))
			for _, i := range a.containers[name] {
				ids = append(ids, UUID(i))
			}
			pr.Containers = append(pr.Containers, &podresourcesv1.ContainerResources{
				Name:    name,
				Devices: []*podresourcesv1.ContainerDevices{{ResourceName: string(gpu.Resource), DeviceIds: ids}},
			})
		}
		resp.PodResources = append(resp.PodResources, pr)
	}
	return resp, nil
}

// Holder is the pod holding GPU i, if any, as the latest List said.
func (k *Kubelet) Holder(i int) (types.NamespacedName, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range k.held {
		for _, gpus := range a.containers {
			if slices.Contains(gpus, i) {
				return a.pod, true
			}
		}
	}
	return types.NamespacedName{}, false
}

// GPUsOf are the GPUs the pod holds, as the latest List said.
func (k *Kubelet) GPUsOf(pod types.NamespacedName) []int {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []int
	for _, a := range k.held {
		if a.pod == pod {
			for _, gpus := range a.containers {
				out = append(out, gpus...)
			}
		}
	}
	slices.Sort(out)
	return out
}

// sync reads the node's pods: pods gone from the node free their GPUs, new ones get theirs.
func (k *Kubelet) sync(ctx context.Context) error {
	var pods corev1.PodList
	if err := k.client.List(ctx, &pods, client.MatchingFields{"spec.nodeName": k.node}); err != nil {
		return fmt.Errorf("listing the pods on node %s: %w", k.node, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	present := map[types.UID]bool{}
	var fresh []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		present[p.UID] = true
		if _, ok := k.held[p.UID]; !ok {
			fresh = append(fresh, p)
		}
	}
	for uid := range k.held {
		if !present[uid] {
			delete(k.held, uid)
		}
	}
	slices.SortFunc(fresh, func(a, b *corev1.Pod) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	used := map[int]bool{}
	for _, a := range k.held {
		for _, gpus := range a.containers {
			for _, i := range gpus {
				used[i] = true
			}
		}
	}
	for _, p := range fresh {
		a := allocation{pod: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, containers: map[string][]int{}}
		for _, c := range p.Spec.Containers {
			q, ok := c.Resources.Limits[gpu.Resource]
			if !ok {
				q, ok = c.Resources.Requests[gpu.Resource]
			}
			if !ok {
				continue
			}
			for n := q.Value(); n > 0; n-- {
				i := -1
				for j := range k.gpus {
					if !used[j] {
						i = j
						break
					}
				}
				if i < 0 {
					break // more GPUs asked for than the node has free: the scheduler would not do it
				}
				used[i] = true
				a.containers[c.Name] = append(a.containers[c.Name], i)
			}
		}
		if len(a.containers) > 0 {
			k.held[p.UID] = a
		}
	}
	return nil
}

// allocations in the order of pod names; k.mu is held.
func (k *Kubelet) allocations() []allocation {
	out := make([]allocation, 0, len(k.held))
	for _, a := range k.held {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b allocation) int { return strings.Compare(a.pod.String(), b.pod.String()) })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
