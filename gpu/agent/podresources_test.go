package agent

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// fakeKubelet serves the pod-resources API v1 on a unix socket, as the kubelet does.
type fakeKubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	resp *podresourcesv1.ListPodResourcesResponse
}

func (f *fakeKubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return f.resp, nil
}

// serveFakeKubelet starts a fakeKubelet and returns its socket.
func serveFakeKubelet(t *testing.T, resp *podresourcesv1.ListPodResourcesResponse) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(s, &fakeKubelet{resp: resp})
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return sock
}

func container(name string, devs ...*podresourcesv1.ContainerDevices) *podresourcesv1.ContainerResources {
	return &podresourcesv1.ContainerResources{Name: name, Devices: devs}
}

func devices(resource string, ids ...string) *podresourcesv1.ContainerDevices {
	return &podresourcesv1.ContainerDevices{ResourceName: resource, DeviceIds: ids}
}

// kubeletAnswer is a node with two workers holding GPUs, one of them in two containers, a pod with a
// CPU device only, a pod on MIG, and two pods sharing a time-sliced GPU.
var kubeletAnswer = &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
	{Namespace: "agents", Name: "worker-0", Containers: []*podresourcesv1.ContainerResources{
		container("ray-worker", devices("nvidia.com/gpu", "GPU-0")),
	}},
	{Namespace: "agents", Name: "worker-2", Containers: []*podresourcesv1.ContainerResources{
		container("ray-worker", devices("nvidia.com/gpu", "GPU-2")),
		container("sidecar", devices("nvidia.com/gpu", "GPU-3"), devices("example.com/fpga", "fpga-0")),
	}},
	{Namespace: "kube-system", Name: "dns", Containers: []*podresourcesv1.ContainerResources{container("coredns")}},
	{Namespace: "ml", Name: "mig", Containers: []*podresourcesv1.ContainerResources{
		container("c", devices("nvidia.com/mig-1g.10gb", "MIG-aaaa")),
	}},
	{Namespace: "ml", Name: "shared-a", Containers: []*podresourcesv1.ContainerResources{
		container("c", devices("nvidia.com/gpu", "GPU-5::0", "GPU-5::1")),
	}},
	{Namespace: "ml", Name: "shared-b", Containers: []*podresourcesv1.ContainerResources{
		container("c", devices("nvidia.com/gpu", "GPU-5::2")),
	}},
}}

var kubeletHolders = map[string][]PodRef{
	"GPU-0": {{Namespace: "agents", Name: "worker-0", Container: "ray-worker"}},
	"GPU-2": {{Namespace: "agents", Name: "worker-2", Container: "ray-worker"}},
	"GPU-3": {{Namespace: "agents", Name: "worker-2", Container: "sidecar"}},
	"GPU-5": {{Namespace: "ml", Name: "shared-a", Container: "c"}, {Namespace: "ml", Name: "shared-b", Container: "c"}},
}

func TestPodResourcesOverGRPC(t *testing.T) {
	sock := serveFakeKubelet(t, kubeletAnswer)
	p, err := NewPodResources(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got, err := p.Holders(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(kubeletHolders, got); diff != "" {
		t.Errorf("Holders() (-want +got):\n%s", diff)
	}
}

func TestPodResourcesNoKubelet(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	p, err := NewPodResources(sock)
	if err != nil {
		t.Fatalf("NewPodResources() = %v, want no error before the first call", err)
	}
	defer p.Close()
	if _, err := p.Holders(t.Context()); err == nil {
		t.Fatal("Holders() with no kubelet listening: no error")
	}
}

func TestHolders(t *testing.T) {
	for name, tc := range map[string]struct {
		resp *podresourcesv1.ListPodResourcesResponse
		want map[string][]PodRef
	}{
		"empty":           {resp: &podresourcesv1.ListPodResourcesResponse{}, want: map[string][]PodRef{}},
		"nil":             {want: map[string][]PodRef{}},
		"the node's pods": {resp: kubeletAnswer, want: kubeletHolders},
		"a device listed twice": {
			resp: &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
				{Namespace: "a", Name: "p", Containers: []*podresourcesv1.ContainerResources{
					container("c", devices("nvidia.com/gpu", "GPU-1"), devices("nvidia.com/gpu", "GPU-1")),
				}},
			}},
			want: map[string][]PodRef{"GPU-1": {{Namespace: "a", Name: "p", Container: "c"}}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Holders(tc.resp, "nvidia.com/gpu")); diff != "" {
				t.Errorf("Holders() (-want +got):\n%s", diff)
			}
		})
	}
}
