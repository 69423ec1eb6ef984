// Package gpuagent is the command of AgentFleet's GPU health agent (cmd/gpu-agent): its flags, and
// the wiring of NVML (gpu/collector), the kubelet's pod-resources API, the pod cache, the publisher
// and the metrics (gpu/agent). It takes the NVML library as an argument, so that the command runs
// the real one and the local cluster's test agent (test/gpuagent) go-nvml's mock, with the same code.
package gpuagent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/gpu/agent"
	"github.com/agentfleet/agentfleet/gpu/collector"
)

// options are the command's flags.
type options struct {
	nodeName           string
	pollInterval       time.Duration
	ignoredXIDs        string
	maxTemperature     uint
	quietPeriod        time.Duration
	reprobeBackoff     time.Duration
	heartbeatPeriod    time.Duration
	podResourcesSocket string
	metricsAddr        string
	kubeconfig         string
	zap                zap.Options
}

// newFlags returns the command's flag set, bound to o; getenv gives the defaults taken from the
// environment (NODE_NAME).
func newFlags(o *options, getenv func(string) string) *flag.FlagSet {
	fs := flag.NewFlagSet("gpu-agent", flag.ContinueOnError)
	policy, recovery := gpu.DefaultPolicy(), gpu.DefaultRecoveryPolicy()
	fs.StringVar(&o.nodeName, "node-name", getenv("NODE_NAME"), "the node this agent runs on (default: $NODE_NAME, from the downward API)")
	fs.DurationVar(&o.pollInterval, "poll-interval", 10*time.Second, "how often every GPU is read; an XID event is read at once")
	fs.StringVar(&o.ignoredXIDs, "ignored-xids", gpu.DefaultIgnoredXIDList, "comma-separated XID codes that are application errors, not GPU faults; every other XID makes a GPU unhealthy (\"\" makes all critical)")
	fs.UintVar(&o.maxTemperature, "max-temperature", uint(policy.MaxTemperatureC), "a GPU hotter than this (Celsius) is degraded; 0 turns the check off")
	fs.DurationVar(&o.quietPeriod, "quiet-period", recovery.QuietPeriod, "how long an unhealthy GPU must be clean before it is healthy again")
	fs.DurationVar(&o.reprobeBackoff, "reprobe-backoff", recovery.InitialBackoff, "how long after a fault an unhealthy GPU is probed again; it doubles while the fault stays, up to "+recovery.MaxBackoff.String())
	fs.DurationVar(&o.heartbeatPeriod, "heartbeat-period", agent.DefaultHeartbeatPeriod, "how often the node condition is rewritten when nothing changed (its lastHeartbeatTime); negative never")
	fs.StringVar(&o.podResourcesSocket, "pod-resources-socket", agent.DefaultPodResourcesSocket, "the kubelet's pod-resources API socket, which says which pod holds which GPU")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":9400", "address the Prometheus metrics endpoint (/metrics) binds to; 0 disables it")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig to use outside the cluster (default: the in-cluster config)")
	o.zap.BindFlags(fs)
	return fs
}

// validate checks the flags and returns the collector's options.
func (o *options) validate() (collector.Options, error) {
	if o.nodeName == "" {
		return collector.Options{}, errors.New("--node-name is required (or NODE_NAME: set it from spec.nodeName with the downward API)")
	}
	if o.pollInterval <= 0 {
		return collector.Options{}, fmt.Errorf("--poll-interval must be positive, not %s", o.pollInterval)
	}
	if o.quietPeriod < 0 {
		return collector.Options{}, fmt.Errorf("--quiet-period must not be negative, not %s", o.quietPeriod)
	}
	if o.reprobeBackoff <= 0 {
		return collector.Options{}, fmt.Errorf("--reprobe-backoff must be positive, not %s", o.reprobeBackoff)
	}
	if o.maxTemperature > 1000 {
		return collector.Options{}, fmt.Errorf("--max-temperature %d is not a temperature in Celsius", o.maxTemperature)
	}
	xids, err := gpu.ParseXIDList(o.ignoredXIDs)
	if err != nil {
		return collector.Options{}, fmt.Errorf("--ignored-xids: %w", err)
	}
	policy, recovery := gpu.DefaultPolicy(), gpu.DefaultRecoveryPolicy()
	policy.IgnoredXIDs = xids
	policy.MaxTemperatureC = uint32(o.maxTemperature)
	recovery.QuietPeriod = o.quietPeriod
	recovery.InitialBackoff = o.reprobeBackoff
	recovery.MaxBackoff = max(recovery.MaxBackoff, o.reprobeBackoff)
	return collector.Options{Policy: &policy, Recovery: &recovery}, nil
}

// Main is the command, run with args over the NVML library lib (nvml.New() on a GPU node); it
// returns the exit code. It stops on SIGINT or SIGTERM.
func Main(args []string, getenv func(string) string, stderr io.Writer, lib collector.NVML) int {
	// Stack traces for panics only: the agent's errors say what went wrong without one.
	o := options{zap: zap.Options{StacktraceLevel: zapcore.PanicLevel}}
	fs := newFlags(&o, getenv)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := zap.New(zap.UseFlagOptions(&o.zap), zap.WriteTo(stderr))
	copts, err := o.validate()
	if err != nil {
		log.Error(err, "Invalid flags")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, lib, o, copts, log); err != nil {
		log.Error(err, "GPU agent stopped", "node", o.nodeName)
		return 1
	}
	return 0
}

// serve starts NVML, the pod-resources client, the pod cache and the metrics endpoint, and runs the
// agent until ctx is done.
func serve(ctx context.Context, lib collector.NVML, o options, copts collector.Options, log logr.Logger) error {
	// NVML first: on a node without a driver, this is the error to see.
	c := collector.New(lib, clock.RealClock{}, copts)
	if err := c.Start(); err != nil {
		return err
	}
	defer func() {
		if err := c.Close(); err != nil {
			log.Error(err, "Closing NVML")
		}
	}()

	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "agentfleet-gpu-agent"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	if _, err := client.CoreV1().Nodes().Get(ctx, o.nodeName, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("reading node %s: %w", o.nodeName, err)
	}
	pods, err := agent.NewPodCache(ctx, client, o.nodeName, 2*time.Minute)
	if err != nil {
		return err
	}
	holders, err := agent.NewPodResources(o.podResourcesSocket)
	if err != nil {
		return err
	}
	defer holders.Close()
	if _, err := holders.Holders(ctx); err != nil {
		// Not fatal: node health is published without it; pods get their conditions once it answers.
		log.Error(err, "The kubelet's pod-resources API does not answer yet: pods holding a failing GPU are not marked until it does",
			"socket", o.podResourcesSocket)
	}

	metrics := agent.NewMetrics()
	if o.metricsAddr != "0" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		stopMetrics := serveMetrics(ctx, o.metricsAddr, reg, log)
		defer stopMetrics()
	}

	a := &agent.Agent{
		NodeName:     o.nodeName,
		Source:       source{c},
		Holders:      holders,
		Pods:         pods,
		Publisher:    &agent.Publisher{Client: client, NodeName: o.nodeName, Clock: clock.RealClock{}, HeartbeatPeriod: o.heartbeatPeriod},
		Metrics:      metrics,
		PollInterval: o.pollInterval,
		Clock:        clock.RealClock{},
		Log:          log,
	}
	log.Info("Starting the GPU agent", "node", o.nodeName, "pollInterval", o.pollInterval, "ignoredXIDs", o.ignoredXIDs)
	a.Run(ctx)
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the in-cluster config (outside a cluster, pass --kubeconfig): %w", err)
	}
	return cfg, nil
}

// serveMetrics serves reg on addr until the returned function is called.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log logr.Logger) func() {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "Serving metrics", "address", addr)
		}
	}()
	return func() {
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}
}

// source adapts the collector to the agent, whose Report has the collector's fields.
type source struct{ c *collector.Collector }

func (s source) WaitXIDs(timeout time.Duration) bool { return s.c.WaitXIDs(timeout) }

func (s source) Poll() agent.Report {
	r := s.c.Poll()
	out := agent.Report{Time: r.Time, Errors: r.Errors, GPUs: make([]agent.GPU, len(r.GPUs))}
	for i, g := range r.GPUs {
		out.GPUs[i] = agent.GPU(g)
	}
	return out
}
