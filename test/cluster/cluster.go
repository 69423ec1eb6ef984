// Package cluster runs a real, local Kubernetes cluster for tests and `make dev`, on a machine with no
// container runtime and no GPU: etcd and kube-apiserver (through envtest), kube-controller-manager,
// kube-scheduler, kwok for fake nodes and pod lifecycles, and the real KubeRay operator, each a
// process on loopback with its log in a file. Nodes are kwok's: they carry real GPU capacity, labels
// and taints, so the real scheduler places GPU pods, and the real KubeRay operator drives RayClusters.
//
// The binaries come from `make bins` (bin/ at the repository root, or Options.BinDir).
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
)

// Binaries the cluster needs in its bin folder, in the order they start.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kuberay-operator", "kubectl"}

// Options configure a local cluster. The zero value is a cluster with no nodes and KubeRay running.
type Options struct {
	// BinDir holds the binaries listed in Binaries. Default: $AGENTFLEET_BIN_DIR, else bin/ at the
	// root of the module this runs in.
	BinDir string
	// Dir receives the logs, certificates and kubeconfig. Default: a new temporary folder, removed
	// by Stop when the cluster came up and stopped cleanly.
	Dir string
	// CRDDirectoryPaths are installed besides KubeRay's CRDs, which come from the module cache.
	CRDDirectoryPaths []string
	// Nodes are created, and waited for to be Ready, before Start returns.
	Nodes []Node
	// WithoutKubeRay leaves the KubeRay operator (and its CRDs) out.
	WithoutKubeRay bool
	// StartTimeout bounds each part's start. Default: 90s (a cold kube-apiserver on 2 busy cores
	// takes 10-20 s).
	StartTimeout time.Duration
	// Progress, when set, receives a line as each part comes up.
	Progress io.Writer
	// AuditUsers, when set, turns on the API server's audit log (Cluster.AuditLogPath) for the
	// requests of these users, at level Metadata (who did what to which object, no bodies): what a
	// ServiceAccount actually used of what RBAC grants it.
	AuditUsers []string
	// NodeMonitorGracePeriod, when set, is how long a node may be silent before the node lifecycle
	// controller marks it NotReady (Ready=Unknown) and taints it unreachable (kube-controller-manager's
	// --node-monitor-grace-period, 50 s by default); kwok's node Leases are then renewed 8 times
	// within it, so that only a silenced node (SilenceNode) goes NotReady.
	NodeMonitorGracePeriod time.Duration
	// UnreachableTolerationSeconds, when set, is the toleration of node.kubernetes.io/unreachable
	// and not-ready that the API server gives pods (--default-unreachable-toleration-seconds, 300 by
	// default): how long after a node goes NotReady its pods are evicted.
	UnreachableTolerationSeconds int
}

// Cluster is a running local cluster.
type Cluster struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Client is a client for Config with the core and KubeRay types registered.
	Client client.Client
	// Kubeconfig is the path of an admin kubeconfig file for kubectl and other processes.
	Kubeconfig string
	// Dir holds logs (one per part: <part>.log), certificates and the kubeconfig.
	Dir string

	opts       Options
	removeDir  bool
	env        *envtest.Environment
	metrics    map[string]string
	pprof      map[string]string // operators' pprof bases, by part name
	envStarted bool

	// mu guards procs: a test may kill a part from one goroutine (a fault-injecting proxy) while
	// another restarts it.
	mu    sync.Mutex
	procs []*process // started processes, in start order
}

// Scheme is the scheme Cluster.Client uses: client-go's types and KubeRay's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := rayv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Start brings a cluster up and returns it once every part is serving and every node is Ready. On
// any failure it stops what it started and returns a *PartError naming the part and its log.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	c := &Cluster{opts: opts}
	defer func() {
		if err != nil {
			if stopErr := c.stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	if err := c.prepare(); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(); err != nil {
		return nil, err
	}
	for _, start := range []func(context.Context) error{c.startControllerManager, c.startScheduler, c.startKwok, c.startKubeRay} {
		if err := start(ctx); err != nil {
			return nil, err
		}
	}
	for _, n := range opts.Nodes {
		if err := c.AddNode(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := c.WaitForNodes(ctx, opts.StartTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// prepare checks the binaries and the CRD folders and makes the working folder.
func (c *Cluster) prepare() error {
	if c.opts.BinDir == "" {
		dir, err := defaultBinDir()
		if err != nil {
			return &PartError{Part: "setup", Err: err}
		}
		c.opts.BinDir = dir
	}
	needed := Binaries
	if c.opts.WithoutKubeRay {
		needed = slices.DeleteFunc(slices.Clone(needed), func(b string) bool { return b == "kuberay-operator" })
	}
	if missing := missingBinaries(c.opts.BinDir, needed...); len(missing) > 0 {
		return &PartError{Part: "setup", Err: fmt.Errorf("missing in %s: %s; run `make bins`", c.opts.BinDir, strings.Join(missing, ", "))}
	}
	if c.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "agentfleet-cluster-")
		if err != nil {
			return &PartError{Part: "setup", Err: err}
		}
		c.opts.Dir, c.removeDir = dir, true
	} else if err := os.MkdirAll(c.opts.Dir, 0o755); err != nil {
		return &PartError{Part: "setup", Err: err}
	}
	c.Dir = c.opts.Dir
	return nil
}

func missingBinaries(dir string, names ...string) []string {
	var missing []string
	for _, b := range names {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	return missing
}

// defaultBinDir is $AGENTFLEET_BIN_DIR, else bin/ beside the go.mod of the module this runs in.
func defaultBinDir() (string, error) {
	if d := os.Getenv("AGENTFLEET_BIN_DIR"); d != "" {
		return d, nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root for bin/: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: set Options.BinDir or AGENTFLEET_BIN_DIR")
	}
	return filepath.Join(filepath.Dir(gomod), "bin"), nil
}

// KubeRayCRDDir is the folder of KubeRay's CRDs in the Go module cache, for the version of
// github.com/ray-project/kuberay/ray-operator this module requires.
func KubeRayCRDDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ray-project/kuberay/ray-operator").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("locating KubeRay's module: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("locating KubeRay's module: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "bases")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("KubeRay's CRDs: %w", err)
	}
	return dir, nil
}

// startControlPlane starts etcd and kube-apiserver through envtest, installs the CRDs and writes an
// admin kubeconfig.
func (c *Cluster) startControlPlane() error {
	crds := append([]string(nil), c.opts.CRDDirectoryPaths...)
	if !c.opts.WithoutKubeRay {
		dir, err := KubeRayCRDDir()
		if err != nil {
			return &PartError{Part: "KubeRay CRDs", Err: err}
		}
		crds = append(crds, dir)
	}
	etcdLog, err := os.Create(filepath.Join(c.Dir, "etcd.log"))
	if err != nil {
		return &PartError{Part: "etcd", Err: err}
	}
	apiLog, err := os.Create(filepath.Join(c.Dir, "kube-apiserver.log"))
	if err != nil {
		return &PartError{Part: "kube-apiserver", Err: err}
	}
	c.env = &envtest.Environment{
		BinaryAssetsDirectory:    c.opts.BinDir,
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: c.opts.StartTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
		// envtest waits 10 s by default for the CRDs to be served; on two loaded cores (a build
		// beside the tests) the API server takes longer, and a test bed must not need an idle machine.
		CRDInstallOptions: envtest.CRDInstallOptions{MaxTime: crdInstallWait},
		Scheme:            Scheme(),
	}
	c.env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
	// The API server's certificates and service-account keys in the cluster's folder, not a
	// temporary one: a restart (RestartAPIServer) keeps them, and the clients' trust and tokens.
	certDir := filepath.Join(c.Dir, "kube-apiserver")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return &PartError{Part: "kube-apiserver", Err: err}
	}
	api := &envtest.APIServer{Out: apiLog, Err: apiLog, CertDir: certDir}
	// Loopback-only; the admission plugins are the defaults but ServiceAccount (envtest turns it off:
	// no token controller runs here), which keeps TaintNodesByCondition on, as in a real cluster.
	// Audited only where asked.
	if len(c.opts.AuditUsers) > 0 {
		policy, err := auditPolicy(c.opts.AuditUsers)
		if err != nil {
			return &PartError{Part: "kube-apiserver", Err: err}
		}
		policyPath := filepath.Join(c.Dir, "audit-policy.yaml")
		if err := os.WriteFile(policyPath, policy, 0o600); err != nil {
			return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("writing the audit policy: %w", err)}
		}
		api.Configure().Set("audit-policy-file", policyPath).Set("audit-log-path", c.AuditLogPath())
	}
	if t := c.opts.UnreachableTolerationSeconds; t > 0 {
		api.Configure().Set("default-unreachable-toleration-seconds", strconv.Itoa(t)).Set("default-not-ready-toleration-seconds", strconv.Itoa(t))
	}
	c.env.ControlPlane.APIServer = api
	c.envStarted = true // envtest's Stop is safe on a partly started plane
	cfg, err := c.env.Start()
	if err != nil {
		part := "kube-apiserver"
		logPath := apiLog.Name()
		if strings.Contains(err.Error(), "etcd") {
			part, logPath = "etcd", etcdLog.Name()
		}
		return &PartError{Part: part, Log: logPath, Tail: tail(logPath, 15), Err: err}
	}
	fmt.Fprintf(c.opts.Progress, "etcd and kube-apiserver serving at %s\n", cfg.Host)

	user, err := c.env.AddUser(envtest.User{Name: "agentfleet-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("adding the admin user: %w", err)}
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("writing the kubeconfig: %w", err)}
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("writing the kubeconfig: %w", err)}
	}
	c.Config = user.Config()
	// Tests and fault injection are not to be slowed by client-go's default 5 requests per second.
	c.Config.QPS, c.Config.Burst = 200, 400
	c.Client, err = client.New(c.Config, client.Options{Scheme: c.env.Scheme})
	if err != nil {
		return &PartError{Part: "kube-apiserver", Err: fmt.Errorf("building a client: %w", err)}
	}
	return nil
}

// ServiceAccountConfig returns a client configuration that authenticates as the ServiceAccount name
// in namespace, with a token from the TokenRequest API (envtest's kube-apiserver signs them with its
// own service-account key): a test then acts with what RBAC grants that ServiceAccount and nothing
// more, as a pod running as it does. With boundTo set the token is bound to that pod, as a pod's
// projected token is: the API server refuses to issue it for a pod that runs as another
// ServiceAccount, and rejects it once the pod is gone. The token outlives any test or bench run.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, namespace, name string, boundTo *corev1.Pod) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(24 * 60 * 60))}}
	if boundTo != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: boundTo.Name, UID: boundTo.UID}
	}
	token, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	// The server and its CA, and none of the admin's credentials.
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = token.Status.Token
	return cfg, nil
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

// start starts a part and waits until ready says so.
func (c *Cluster) start(ctx context.Context, name string, args, env []string, ready func(context.Context) bool) error {
	return c.startBinary(ctx, name, c.bin(name), args, env, ready)
}

// startBinary starts a part from bin and waits until ready says so.
func (c *Cluster) startBinary(ctx context.Context, name, bin string, args, env []string, ready func(context.Context) bool) error {
	c.mu.Lock()
	p, err := startProcess(name, bin, c.Dir, args, env, ready, false)
	if err == nil {
		c.procs = append(c.procs, p)
	}
	c.mu.Unlock()
	if err != nil {
		return &PartError{Part: name, Err: err}
	}
	return c.waitReady(ctx, p)
}

func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.StartTimeout, fmt.Errorf("timed out after %s", c.opts.StartTimeout))
	defer cancel()
	if err := p.waitFor(ctx, "ready", p.ready); err != nil {
		return err
	}
	fmt.Fprintf(c.opts.Progress, "%s ready (log: %s)\n", p.name, p.logPath)
	return nil
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return &PartError{Part: "kube-controller-manager", Err: err}
	}
	// The node lifecycle controller is why this runs at all: the TaintNodesByCondition admission
	// plugin taints every new node not-ready, and only that controller lifts the taint. The token
	// controller is off (envtest's apiserver has no service-account admission to feed it).
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--controllers=*,-serviceaccount-token",
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.Dir, "kube-controller-manager-certs"),
		"--concurrent-gc-syncs=10",
	}
	if g := c.opts.NodeMonitorGracePeriod; g > 0 {
		args = append(args, "--node-monitor-grace-period="+g.String(), "--node-monitor-period="+min(g/4, 5*time.Second).String())
	}
	return c.start(ctx, "kube-controller-manager", args, nil, healthz(port))
}

func (c *Cluster) startScheduler(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return &PartError{Part: "kube-scheduler", Err: err}
	}
	return c.start(ctx, "kube-scheduler", []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.Dir, "kube-scheduler-certs"),
	}, nil, healthz(port))
}

func (c *Cluster) startKwok(ctx context.Context) error {
	return c.startKwokFor(ctx, "kwok", kwokManaged)
}

// startKwokFor starts a kwok, as the part name, for the nodes annotated kwok.x-k8s.io/node=value.
func (c *Cluster) startKwokFor(ctx context.Context, name, value string) error {
	port, err := freePort()
	if err != nil {
		return &PartError{Part: name, Err: err}
	}
	// kwok's default stages: pods become Ready once scheduled (and keep any status written later),
	// Job pods complete, nodes turn Ready. Node Leases must be asked for: without a lease duration
	// kwok only touches node heartbeats now and then, the node lifecycle controller sees nodes go
	// silent, and marks every pod on them not Ready (seen here 23 s after start). kwok renews a
	// Lease every quarter of its duration.
	lease := 40
	if g := c.opts.NodeMonitorGracePeriod; g > 0 {
		lease = max(int(g.Seconds()/2), 4)
	}
	return c.startBinary(ctx, name, c.bin("kwok"), []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=" + value,
		"--cidr=10.244.0.1/16",
		"--node-lease-duration-seconds=" + strconv.Itoa(lease),
		"--node-ip=127.0.0.1",
		"--server-address=127.0.0.1:" + strconv.Itoa(port),
	}, nil, httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)))
}

func (c *Cluster) startKubeRay(ctx context.Context) error {
	if c.opts.WithoutKubeRay {
		return nil
	}
	metrics, err := freePort()
	if err != nil {
		return &PartError{Part: "kuberay-operator", Err: err}
	}
	probe, err := freePort()
	if err != nil {
		return &PartError{Part: "kuberay-operator", Err: err}
	}
	return c.start(ctx, "kuberay-operator", []string{
		"--metrics-addr=127.0.0.1:" + strconv.Itoa(metrics),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probe),
		"--enable-leader-election=false",
		"--log-stdout-encoder=console",
	}, []string{"KUBECONFIG=" + c.Kubeconfig}, httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", probe)))
}

// StartOperator runs a controller-runtime operator binary (ours: bin/manager) against the cluster
// as one more part, with the flags kubebuilder scaffolds, and waits for its /readyz. Its log is
// <Dir>/<name>.log; Stop stops it first.
func (c *Cluster) StartOperator(ctx context.Context, name, bin string, args ...string) error {
	return c.StartOperatorWith(ctx, name, bin, OperatorOptions{}, args...)
}

// OperatorOptions change how StartOperatorWith runs an operator.
type OperatorOptions struct {
	// Kubeconfig is the kubeconfig the operator talks to the API server with. Default: the admin
	// Kubeconfig. A test points it at a proxy of its own to inject faults between the two.
	Kubeconfig string
	// Env is added to the operator's environment.
	Env []string
	// Pprof serves Go's pprof endpoints on a port of their own (--pprof-bind-address), at
	// PprofURL, for a bench that profiles the operator.
	Pprof bool
}

// StartOperatorWith is StartOperator with options.
func (c *Cluster) StartOperatorWith(ctx context.Context, name, bin string, o OperatorOptions, args ...string) error {
	kubeconfig := o.Kubeconfig
	if kubeconfig == "" {
		kubeconfig = c.Kubeconfig
	}
	metrics, err := freePort()
	if err != nil {
		return &PartError{Part: name, Err: err}
	}
	probe, err := freePort()
	if err != nil {
		return &PartError{Part: name, Err: err}
	}
	flags := []string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metrics),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probe),
	}
	pprof := 0
	if o.Pprof {
		if pprof, err = freePort(); err != nil {
			return &PartError{Part: name, Err: err}
		}
		flags = append(flags, "--pprof-bind-address=127.0.0.1:"+strconv.Itoa(pprof))
	}
	if err := c.startBinary(ctx, name, bin, append(flags, args...), o.Env, httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", probe))); err != nil {
		return err
	}
	if c.metrics == nil {
		c.metrics, c.pprof = map[string]string{}, map[string]string{}
	}
	c.metrics[name] = fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)
	if o.Pprof {
		c.pprof[name] = fmt.Sprintf("http://127.0.0.1:%d", pprof)
	}
	return nil
}

// MetricsURL is the Prometheus endpoint of an operator started by StartOperator.
func (c *Cluster) MetricsURL(name string) string { return c.metrics[name] }

// PprofURL is the base of the pprof endpoints (/debug/pprof/...) of an operator started with
// OperatorOptions.Pprof; "" without.
func (c *Cluster) PprofURL(name string) string { return c.pprof[name] }

// Stop stops every part, newest first, and removes the working folder if Start made it.
func (c *Cluster) Stop() error {
	err := c.stop()
	if err == nil && c.removeDir {
		return os.RemoveAll(c.Dir)
	}
	return err
}

// StopKeepingLogs stops every part and keeps the working folder, for a failed test's logs.
func (c *Cluster) StopKeepingLogs() error { return c.stop() }

func (c *Cluster) stop() error {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(15 * time.Second)
	}
	if c.envStarted {
		c.envStarted = false
		if err := c.env.Stop(); err != nil {
			return fmt.Errorf("stopping kube-apiserver and etcd: %w", err)
		}
	}
	return nil
}

// Pids returns the process ids of the parts started as processes by this package (not etcd and
// kube-apiserver, which envtest runs), by part name.
func (c *Cluster) Pids() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := map[string]int{}
	for _, p := range c.procs {
		pids[p.name] = p.cmd.Process.Pid
	}
	return pids
}

// part is the latest process started under name.
func (c *Cluster) part(name string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.partIndex(name); i >= 0 {
		return c.procs[i], nil
	}
	return nil, &PartError{Part: name, Err: errors.New("no such part was started")}
}

// partIndex is the index in procs of the latest process started under name, or -1; c.mu is held.
func (c *Cluster) partIndex(name string) int {
	for i := len(c.procs) - 1; i >= 0; i-- {
		if c.procs[i].name == name {
			return i
		}
	}
	return -1
}

// Running reports whether the part is started and has not exited.
func (c *Cluster) Running(name string) bool {
	p, err := c.part(name)
	if err != nil {
		return false
	}
	done, _ := p.exited()
	return !done
}

// StopPart stops a part (SIGTERM to its process group, SIGKILL after 15 s), e.g. the tests' shared
// operator while a test runs one of its own; RestartPart starts it again.
func (c *Cluster) StopPart(name string) error {
	p, err := c.part(name)
	if err != nil {
		return err
	}
	p.stop(15 * time.Second)
	return nil
}

// KillPart sends SIGKILL to a part's process, as the kernel's OOM killer or a node failure would
// end it (no shutdown, nothing flushed), and returns its pid once it has exited.
func (c *Cluster) KillPart(name string, timeout time.Duration) (int, error) {
	p, err := c.part(name)
	if err != nil {
		return 0, err
	}
	pid := p.cmd.Process.Pid
	if done, _ := p.exited(); done {
		return pid, &PartError{Part: name, Log: p.logPath, Err: fmt.Errorf("not running (pid %d has exited)", pid)}
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return pid, &PartError{Part: name, Log: p.logPath, Err: fmt.Errorf("killing pid %d: %w", pid, err)}
	}
	select {
	case <-p.done:
		return pid, nil
	case <-time.After(timeout):
		return pid, &PartError{Part: name, Log: p.logPath, Err: fmt.Errorf("pid %d still there %s after SIGKILL", pid, timeout)}
	}
}

// RestartPart starts a part that has exited (stopped or killed) again, with the same binary, flags
// and environment, appending to its log, and waits until it is ready.
func (c *Cluster) RestartPart(ctx context.Context, name string) error {
	c.mu.Lock()
	i := c.partIndex(name)
	if i < 0 {
		c.mu.Unlock()
		return &PartError{Part: name, Err: errors.New("no such part was started")}
	}
	old := c.procs[i]
	if done, _ := old.exited(); !done {
		c.mu.Unlock()
		return &PartError{Part: name, Log: old.logPath, Err: errors.New("still running: stop or kill it first")}
	}
	// Started and put in place under the lock, so that KillPart never finds the old, dead pid
	// once the new process may be talking to the API server.
	p, err := startProcess(name, old.bin, c.Dir, old.args, old.env, old.ready, true)
	if err == nil {
		c.procs[i] = p
	}
	c.mu.Unlock()
	if err != nil {
		return &PartError{Part: name, Log: old.logPath, Err: err}
	}
	return c.waitReady(ctx, p)
}

// AuditLogPath is the API server's audit log (JSON lines, audit.k8s.io/v1 Events), written when
// Options.AuditUsers is set.
func (c *Cluster) AuditLogPath() string { return filepath.Join(c.Dir, "audit.log") }

// auditPolicy logs the requests of users at level Metadata, at their response (a watch's start and
// end), and nothing else.
func auditPolicy(users []string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"apiVersion": "audit.k8s.io/v1",
		"kind":       "Policy",
		"omitStages": []string{"RequestReceived"},
		"rules":      []map[string]any{{"level": "Metadata", "users": users}, {"level": "None"}},
	})
}

// LogPath is the log file of a part, e.g. "kuberay-operator".
func (c *Cluster) LogPath(part string) string { return filepath.Join(c.Dir, part+".log") }

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// healthz checks the /healthz of a component serving its own self-signed certificate.
func healthz(port int) func(context.Context) bool {
	return httpOKWith(&http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // a loopback probe of a component serving a self-signed certificate
	}, fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
}

func httpOK(url string) func(context.Context) bool {
	return httpOKWith(&http.Client{Timeout: 2 * time.Second}, url)
}

func httpOKWith(hc *http.Client, url string) func(context.Context) bool {
	return func(ctx context.Context) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}
