// Package gpu holds what AgentFleet knows about NVIDIA GPUs on Kubernetes nodes: the resource, labels
// and taint that NVIDIA's device plugin and GPU feature discovery put on GPU nodes, and the health
// label AgentFleet's GPU health agent sets.
package gpu

import corev1 "k8s.io/api/core/v1"

// Resource is the extended resource NVIDIA's device plugin advertises, one unit per GPU.
const Resource corev1.ResourceName = "nvidia.com/gpu"

// Node labels set by GPU feature discovery, and the taint GPU node pools carry by convention.
const (
	ProductLabel = "nvidia.com/gpu.product" // e.g. NVIDIA-H100-80GB-HBM3
	MemoryLabel  = "nvidia.com/gpu.memory"  // MiB per GPU
	CountLabel   = "nvidia.com/gpu.count"
	PresentLabel = "nvidia.com/gpu.present"
	TaintKey     = "nvidia.com/gpu"
)

// HealthLabel is set on a node by AgentFleet's GPU health agent; agent workers require nodes where
// it is not HealthUnhealthy.
const (
	HealthLabel     = "agentfleet.dev/gpu-health"
	HealthUnhealthy = "unhealthy"
)
