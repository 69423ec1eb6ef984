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

// HealthLabel is set on a node by AgentFleet's GPU health agent, to one of the Health values; agent
// workers require nodes where it is not HealthUnhealthy. On a node without the agent, the operator
// sets it to HealthUnhealthy while the node has a GPU fault condition, and marks the label as its
// own with HealthSetByAnnotation, so that it removes only labels it set.
const (
	HealthLabel     = "agentfleet.dev/gpu-health"
	HealthHealthy   = "healthy"
	HealthDegraded  = "degraded"
	HealthUnhealthy = "unhealthy"

	HealthSetByAnnotation = "agentfleet.dev/gpu-health-set-by"
	HealthSetByOperator   = "operator"
)

// Conditions the GPU health agent publishes. NodeConditionGPUHealthy is a node condition, True or
// False, whose message names the failing GPUs' UUIDs and XID codes; a node that has it runs the
// agent. PodConditionGPUHealthy is set False on each pod holding a failing GPU, its message naming
// the node, the GPU's UUID and the XID codes; it is True with ReasonGPUDegraded on a pod holding a
// degraded GPU. Untyped: they serve as corev1.NodeConditionType and corev1.PodConditionType alike.
const (
	NodeConditionGPUHealthy = "GPUHealthy"
	PodConditionGPUHealthy  = "agentfleet.dev/GPUHealthy"
	ReasonGPUDegraded       = "GPUDegraded"
)
