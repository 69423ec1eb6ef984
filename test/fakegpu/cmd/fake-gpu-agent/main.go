// Command fake-gpu-agent is AgentFleet's GPU health agent, with every flag of cmd/gpu-agent
// (internal/gpuagent), over go-nvml's mock of NVML instead of the driver, for tests on the local
// cluster. Its GPUs (GPU-0 … GPU-<n-1>) are healthy until a test breaks them through the control
// surface (fakegpu.NVML.Handler) on $FAKE_GPU_CONTROL_ADDRESS; see package fakegpu.
package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/agentfleet/agentfleet/internal/gpuagent"
	"github.com/agentfleet/agentfleet/test/fakegpu"
)

func main() {
	n, err := strconv.Atoi(os.Getenv(fakegpu.EnvGPUs))
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "$%s must be a number of GPUs, not %q\n", fakegpu.EnvGPUs, os.Getenv(fakegpu.EnvGPUs))
		os.Exit(2)
	}
	lib := fakegpu.NewNVML(n, os.Getenv(fakegpu.EnvProduct))
	addr := os.Getenv(fakegpu.EnvControlAddress)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "serving the fake NVML's control surface on $%s=%q: %v\n", fakegpu.EnvControlAddress, addr, err)
		os.Exit(2)
	}
	srv := &http.Server{Handler: lib.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "the fake NVML's control surface stopped: %v\n", err)
		}
	}()
	code := gpuagent.Main(os.Args[1:], os.Getenv, os.Stderr, lib.Lib)
	_ = srv.Close()
	os.Exit(code)
}
