// Command gpu-agent is AgentFleet's GPU health agent, a DaemonSet on GPU nodes: it reads every GPU
// of its node from NVML (gpu/collector), and publishes their health as the node condition GPUHealthy,
// the node label agentfleet.dev/gpu-health, the condition agentfleet.dev/GPUHealthy on the pods
// holding a failing GPU, and per-GPU Prometheus metrics (gpu/agent). The command itself is
// internal/gpuagent; this binary runs it over the real NVML.
package main

import (
	"os"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/agentfleet/agentfleet/internal/gpuagent"
)

func main() {
	os.Exit(gpuagent.Main(os.Args[1:], os.Getenv, os.Stderr, nvml.New()))
}
