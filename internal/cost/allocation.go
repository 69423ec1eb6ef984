package cost

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/agentfleet/agentfleet/gpu"
)

// UnknownProduct is the product of GPUs on a node without the nvidia.com/gpu.product label, held by
// a fleet that does not declare one either.
const UnknownProduct = "unknown"

// Allocation counts the GPUs that pods hold, by GPU product: the GPU limits of pods Running (observed,
// not requested; a pod being deleted holds its GPUs until its containers stop, so it counts until it
// is no longer Running or gone), the product read from the node each runs on
// (nodeProducts: node name to its nvidia.com/gpu.product label), else the declared product, else
// UnknownProduct. Pods holding no GPU are left out; a fleet whose pods hold none has no entry.
func Allocation(pods []corev1.Pod, nodeProducts map[string]string, declared string) map[string]int32 {
	alloc := map[string]int32{}
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		n := PodGPUs(p)
		if n == 0 {
			continue
		}
		product := nodeProducts[p.Spec.NodeName]
		if product == "" {
			product = declared
		}
		if product == "" {
			product = UnknownProduct
		}
		alloc[product] += n
	}
	return alloc
}

// PodGPUs is the GPUs a pod's containers hold: the sum of their nvidia.com/gpu limits (an extended
// resource's request equals its limit).
func PodGPUs(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Spec.Containers {
		if q, ok := c.Resources.Limits[gpu.Resource]; ok {
			n += int32(q.Value())
		}
	}
	return n
}
