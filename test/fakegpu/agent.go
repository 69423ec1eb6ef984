package fakegpu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/agentfleet/agentfleet/test/cluster"
)

// The fake agent's environment: how many GPUs, their NVML product name, and where the control
// surface listens.
const (
	EnvGPUs           = "FAKE_GPU_COUNT"
	EnvProduct        = "FAKE_GPU_PRODUCT"
	EnvControlAddress = "FAKE_GPU_CONTROL_ADDRESS"
)

// Package is the fake agent's main package.
const Package = "github.com/agentfleet/agentfleet/test/fakegpu/cmd/fake-gpu-agent"

// Options say how to run the fake agent for a node.
type Options struct {
	Node string
	// GPUs is how many GPUs NVML shows (the node's nvidia.com/gpu capacity).
	GPUs int
	// Product is NVML's name of the GPUs. Default: NVIDIA A100-SXM4-80GB.
	Product string
	// PollInterval and QuietPeriod are the agent's --poll-interval and --quiet-period. Defaults:
	// 200ms and 3s, with a re-probe back-off of 1s, so that a test sees a recovery in seconds.
	PollInterval, QuietPeriod time.Duration
	// Args are more of the agent's flags, after those above: a flag given again here wins.
	Args []string
}

// Agent is a fake agent running as a part of the local cluster, with its fake kubelet.
type Agent struct {
	// Name is its part name in the cluster (its log is Cluster.LogPath(Name)).
	Name    string
	Kubelet *Kubelet
	// MetricsAddress is the host:port of its Prometheus endpoint (/metrics).
	MetricsAddress string

	c       *cluster.Cluster
	control string
	hc      *http.Client
}

var builds sync.Map // output path -> *build

type build struct {
	once sync.Once
	err  error
}

// Build builds the fake agent into dir, once per dir, and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "fake-gpu-agent")
	v, _ := builds.LoadOrStore(bin, &build{})
	b := v.(*build)
	b.once.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, Package)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1") // go-nvml is cgo
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building the fake GPU agent: %w\n%s", err, out)
		}
	})
	return bin, b.err
}

// Start runs the fake agent for o.Node as a part of c (named fake-gpu-agent-<node>), with a fake
// kubelet pod-resources API for the node, and waits until it serves (it has read NVML, the node and
// its pods). Stop stops both.
func Start(ctx context.Context, c *cluster.Cluster, o Options) (*Agent, error) {
	if o.Product == "" {
		o.Product = "NVIDIA A100-SXM4-80GB"
	}
	if o.PollInterval == 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.QuietPeriod == 0 {
		o.QuietPeriod = 3 * time.Second
	}
	bin, err := Build(c.Dir)
	if err != nil {
		return nil, err
	}
	kubelet, err := StartKubelet(c.Client, o.Node, o.GPUs)
	if err != nil {
		return nil, err
	}
	metrics, err := cluster.FreePort()
	if err != nil {
		kubelet.Stop()
		return nil, err
	}
	control, err := cluster.FreePort()
	if err != nil {
		kubelet.Stop()
		return nil, err
	}
	a := &Agent{
		Name: "fake-gpu-agent-" + o.Node, Kubelet: kubelet, c: c, MetricsAddress: fmt.Sprintf("127.0.0.1:%d", metrics),
		control: fmt.Sprintf("http://127.0.0.1:%d", control), hc: &http.Client{Timeout: 5 * time.Second},
	}
	args := append([]string{
		"--node-name=" + o.Node,
		"--kubeconfig=" + c.Kubeconfig,
		"--pod-resources-socket=" + kubelet.Socket,
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metrics),
		"--poll-interval=" + o.PollInterval.String(),
		"--quiet-period=" + o.QuietPeriod.String(),
		"--reprobe-backoff=1s",
	}, o.Args...)
	env := []string{
		EnvGPUs + "=" + strconv.Itoa(o.GPUs),
		EnvProduct + "=" + o.Product,
		EnvControlAddress + "=127.0.0.1:" + strconv.Itoa(control),
	}
	if err := c.StartProcess(ctx, a.Name, bin, args, env, fmt.Sprintf("http://127.0.0.1:%d/healthz", metrics)); err != nil {
		kubelet.Stop()
		return nil, err
	}
	return a, nil
}

// Inject breaks a GPU (see Fault).
func (a *Agent) Inject(ctx context.Context, f Fault) error { return a.post(ctx, "/fault", f) }

// Clear mends GPU i.
func (a *Agent) Clear(ctx context.Context, i int) error { return a.post(ctx, "/clear", Fault{GPU: i}) }

func (a *Agent) post(ctx context.Context, path string, f Fault) error {
	body, err := json.Marshal(f)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.control+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("asking the fake NVML for %s %s: %w", path, body, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("asking the fake NVML for %s %s: %s: %s", path, body, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Stop stops the agent and its kubelet.
func (a *Agent) Stop() error {
	err := a.c.StopPart(a.Name)
	a.Kubelet.Stop()
	if err != nil {
		return fmt.Errorf("stopping the fake GPU agent: %w", err)
	}
	return nil
}
