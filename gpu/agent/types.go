// Package agent is the Kubernetes side of AgentFleet's GPU health agent, the DaemonSet on GPU nodes
// (cmd/gpu-agent): which pod holds which GPU (the kubelet's pod-resources API), what to publish
// about the node's GPUs (Plan, a pure function), the writes that publish it (Publisher), and the
// per-GPU Prometheus metrics (Metrics).
//
// It is pure Go: the NVML side, gpu/collector, needs cgo and is not imported here. The agent takes
// its polls as a Report, which has the same fields as collector.Report.
package agent

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentfleet/agentfleet/gpu"
)

// What the agent publishes. The names others read are defined in package gpu (gpu/labels.go),
// next to gpu.HealthLabel; these are the same, typed for client-go.
const (
	// NodeCondition is the node condition the agent sets: True when no GPU of the node is
	// Unhealthy (Degraded GPUs included, with ReasonGPUDegraded), False when one is.
	NodeCondition corev1.NodeConditionType = gpu.NodeConditionGPUHealthy
	// PodCondition is the condition the agent sets on a pod holding a GPU that is not Healthy:
	// False when one of its GPUs is Unhealthy, True (ReasonGPUDegraded) when one is Degraded. Once
	// set it stays, True with ReasonGPUsHealthy when the GPUs recover. Pods whose GPUs were always
	// healthy do not get it.
	PodCondition corev1.PodConditionType = gpu.PodConditionGPUHealthy

	// Reasons of both conditions.
	ReasonGPUsHealthy  = "GPUsHealthy"
	ReasonGPUDegraded  = gpu.ReasonGPUDegraded
	ReasonGPUUnhealthy = "GPUUnhealthy"
	// ReasonNoGPUs: NVML finds no GPU on the node (node condition only, True).
	ReasonNoGPUs = "NoGPUs"

	// Values of gpu.HealthLabel besides gpu.HealthUnhealthy.
	HealthHealthy  = gpu.HealthHealthy
	HealthDegraded = gpu.HealthDegraded
)

// Report is one poll of every GPU of the node. It has the fields of collector.Report, so that the
// agent does not depend on the collector (and cgo).
type Report struct {
	Time time.Time
	GPUs []GPU
	// Errors are problems of the collection as a whole, such as XID events that cannot be read.
	Errors []string
}

// GPU is one GPU in a Report; collector.GPU converts to it (agent.GPU(g)).
type GPU struct {
	Sample gpu.Sample
	// Verdict is this poll's judgement; Health is what to publish, after recovery.
	Verdict gpu.Verdict
	Health  gpu.Health
}

// PodRef is a container that holds a GPU, as the kubelet's pod-resources API lists it.
type PodRef struct {
	Namespace, Name, Container string
}

// Key is the pod's namespace and name.
func (r PodRef) Key() types.NamespacedName {
	return types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
}

// Observation is everything one poll saw: the input of Plan (with the node) and of Metrics.
type Observation struct {
	// NodeName is the node the agent runs on.
	NodeName string
	Report   Report
	// Holders maps a GPU's UUID to the containers holding it: one, or several when the device
	// plugin shares the GPU (time-slicing).
	Holders map[string][]PodRef
	// Pods are the holders' pods as the API server has them (nil where not found yet).
	Pods map[types.NamespacedName]*corev1.Pod
}

// healthValue is the gpu.HealthLabel value of a state.
func healthValue(s gpu.State) string {
	switch s {
	case gpu.Unhealthy:
		return gpu.HealthUnhealthy
	case gpu.Degraded:
		return HealthDegraded
	default:
		return HealthHealthy
	}
}

// worse says whether a is a worse state than b.
func worse(a, b gpu.State) bool { return rank(a) > rank(b) }

func rank(s gpu.State) int {
	switch s {
	case gpu.Unhealthy:
		return 2
	case gpu.Degraded:
		return 1
	default:
		return 0
	}
}
