package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/agentfleet/agentfleet/gpu"
)

// DefaultPodResourcesSocket is where the kubelet serves its pod-resources API.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

const (
	// podResourcesTimeout bounds one List call.
	podResourcesTimeout = 10 * time.Second
	// podResourcesMaxMessage: a node with hundreds of pods answers in well under this; the kubelet's
	// own limit is 16 MiB too (dcgm-exporter uses the same).
	podResourcesMaxMessage = 16 << 20
)

// PodResources lists which container holds which GPU, from the kubelet's pod-resources API v1, as
// NVIDIA's dcgm-exporter does.
type PodResources struct {
	conn   *grpc.ClientConn
	client podresourcesv1.PodResourcesListerClient
}

// NewPodResources returns a client of the pod-resources API on the unix socket at path. It connects
// on the first call, so a kubelet that is not serving yet is not an error here.
func NewPodResources(path string) (*PodResources, error) {
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(podResourcesMaxMessage)))
	if err != nil {
		return nil, fmt.Errorf("connecting to the kubelet's pod-resources API at %s: %w", path, err)
	}
	return &PodResources{conn: conn, client: podresourcesv1.NewPodResourcesListerClient(conn)}, nil
}

// Holders maps each GPU's UUID to the containers holding it.
func (p *PodResources) Holders(ctx context.Context) (map[string][]PodRef, error) {
	ctx, cancel := context.WithTimeout(ctx, podResourcesTimeout)
	defer cancel()
	resp, err := p.client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("listing pod resources from the kubelet: %w", err)
	}
	return Holders(resp, string(gpu.Resource)), nil
}

// Close closes the connection.
func (p *PodResources) Close() error { return p.conn.Close() }

// Holders maps each device of resource (nvidia.com/gpu) in a pod-resources List answer to the
// containers holding it. NVIDIA's device plugin names a GPU by its UUID, and a share of a
// time-sliced GPU by the UUID and "::" and the share's number, which is mapped to the GPU's UUID.
// MIG devices (resources nvidia.com/mig-*) and DRA claims are not mapped.
func Holders(resp *podresourcesv1.ListPodResourcesResponse, resource string) map[string][]PodRef {
	holders := map[string][]PodRef{}
	for _, pod := range resp.GetPodResources() {
		for _, c := range pod.GetContainers() {
			ref := PodRef{Namespace: pod.GetNamespace(), Name: pod.GetName(), Container: c.GetName()}
			for _, d := range c.GetDevices() {
				if d.GetResourceName() != resource {
					continue
				}
				for _, id := range d.GetDeviceIds() {
					uuid, _, _ := strings.Cut(id, "::")
					if !slices.Contains(holders[uuid], ref) {
						holders[uuid] = append(holders[uuid], ref)
					}
				}
			}
		}
	}
	return holders
}
