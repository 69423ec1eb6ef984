// Command converge measures how fast fleets converge at scale, against the floor of the real KubeRay
// operator alone, on the local cluster with fake (kwok) nodes (`make bench`, issue 14):
//
//   - at each N of --sizes: the floor, N RayClusters of 1 head + 4 workers created at once with
//     client-go (what rayspecs builds for a fleet of 4 CPU workers, without its owner), timed until
//     every one has HeadPodReady and 4 ready workers; then N AgentFleets of 4 replicas created at
//     once, timed until every one is Ready; the ratio of the two (goal <= 1.25) and a linear fit of
//     each curve;
//   - what each phase costs: CPU seconds and peak RSS of every process of the cluster (both
//     operators, kube-apiserver, etcd, kube-scheduler, kwok, kube-controller-manager), API requests
//     per object and reconciles of both operators from their own metrics, and KubeRay's work queue
//     (depth, time per reconcile), which say where the time goes;
//   - steady state with the N fleets Ready and nothing changing: reconciles/s and API writes/s of
//     both operators (goal: no writes of ours).
//
// Every wait is bounded: a size whose objects are not all Ready within --size-timeout is reported as
// not converged, with how many were. The figures go to stdout and, with the machine's cores, memory
// and every setting of the test bed, to bench/results/converge.json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/bench/internal/benchmetrics"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

const (
	ourOperator     = "agentfleet-operator"
	kuberayOperator = "kuberay-operator"
	procKwok        = "kwok"

	// KubeRay's own defaults (ray-operator apis/config/v1alpha1/defaults.go, v1.6.1).
	kuberayDefaultConcurrency = 1
	kuberayDefaultQPS         = 100
	kuberayDefaultBurst       = 200

	buildTimeout   = 10 * time.Minute       // building the operator
	cleanupTimeout = 10 * time.Minute       // one phase's objects, pods and namespace gone
	pollEvery      = 250 * time.Millisecond // how often readiness is counted (in the bench's cache)
	progressEvery  = 5 * time.Second        // a point of the readiness curve, and a look at the queues
	printEvery     = 30 * time.Second       // a progress line on stdout
	settle         = 10 * time.Second       // after the last fleet turns Ready, before the steady state
	podsPerNode    = 200                    // of kwok's 250 per node (cluster.Node), with room to spare
)

// processes whose cost is reported, in the order of the tables.
var processes = []string{"kube-apiserver", "etcd", kuberayOperator, ourOperator, "kube-scheduler", procKwok, "kube-controller-manager"}

func main() {
	var s settings
	sizes := flag.String("sizes", "50,100,200", "numbers of fleets (and of RayClusters for the floor) measured, comma-separated; the issue's full curve is 50,100,200,500,1000")
	flag.IntVar(&s.Workers, "workers", 4, "workers per fleet (and per RayCluster)")
	flag.DurationVar(&s.SizeTimeout, "size-timeout", 15*time.Minute, "how long each phase of a size may take to be all Ready before it is reported as not converged")
	flag.IntVar(&s.KubeRayConcurrency, "kuberay-concurrency", kuberayDefaultConcurrency, "KubeRay's --reconcile-concurrency, for both phases (KubeRay's default: 1)")
	flag.Float64Var(&s.KubeRayQPS, "kuberay-qps", kuberayDefaultQPS, "KubeRay's --qps (client-side rate limit), for both phases")
	flag.IntVar(&s.KubeRayBurst, "kuberay-burst", kuberayDefaultBurst, "KubeRay's --burst, for both phases")
	flag.IntVar(&s.OurConcurrency, "our-concurrency", 4, "our operator's --max-concurrent-reconciles")
	flag.IntVar(&s.Repeat, "repeat", 1, "runs of each size (the phases take turns going first); the table gives each, and the median ratio")
	flag.DurationVar(&s.OurStatusWriteInterval, "our-status-write-interval", fleet.DefaultStatusWriteInterval, "our operator's --status-write-interval (0: every change of a fleet's progress written at once)")
	flag.Float64Var(&s.SchedulerQPS, "scheduler-qps", 0, "kube-scheduler's --kube-api-qps (burst twice that); 0: its default, 50 (burst 100)")
	flag.IntVar(&s.Creators, "creators", 8, "goroutines creating a phase's objects")
	flag.DurationVar(&s.SteadyFor, "steady-for", 30*time.Second, "how long the steady state is measured at each converged size")
	flag.BoolVar(&s.SkipAfterFloorFails, "stop-when-floor-fails", true, "measure no larger size once the floor did not converge")
	phases := flag.String("phases", "floor,agentfleet", "phases run at each size: floor, agentfleet or both")
	results := flag.String("results", "", "where the results go as JSON (default: bench/results/converge.json at the repository root)")
	flag.StringVar(&s.ProfileDir, "cpu-profile", "", "a folder: CPU profiles of our operator and of kube-apiserver during each phase go there, in 10 s pieces named <process>-<phase>-<N>[-<run>]-<k>.pprof (read a process's together: go tool pprof -top <files>); each phase then ends with its last piece, up to 10 s after it converged; empty: none taken")
	keepLogs := flag.Bool("keep-logs", false, "keep the cluster's logs (they are kept anyway when the bench fails)")
	timeout := flag.Duration("timeout", 4*time.Hour, "the whole run's deadline: every wait ends by then at the latest")
	flag.Parse()
	var err error
	if s.Sizes, err = parseSizes(*sizes); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, p := range strings.Split(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case phaseFloor, phaseFleet:
			s.Phases = append(s.Phases, p)
		default:
			fmt.Fprintf(os.Stderr, "--phases: %q is neither %s nor %s\n", p, phaseFloor, phaseFleet)
			os.Exit(2)
		}
	}
	// The bench's own cache logs nothing worth reading (the cluster's parts have their logs).
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	err = run(ctx, s, *results, *keepLogs)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--sizes: %q is not a positive number", f)
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	return slices.Compact(sizes), nil
}

const (
	phaseFloor = "floor"
	phaseFleet = "agentfleet"
)

// settings are every knob of the test bed that bears on the result; all go in the JSON.
type settings struct {
	Sizes              []int         `json:"sizes"`
	Phases             []string      `json:"phases"`
	Workers            int           `json:"workersPerObject"`
	SizeTimeout        time.Duration `json:"-"`
	SizeTimeoutSeconds float64       `json:"sizeTimeoutSeconds"`
	KubeRayConcurrency int           `json:"kuberayReconcileConcurrency"`
	KubeRayQPS         float64       `json:"kuberayClientQPS"`
	KubeRayBurst       int           `json:"kuberayClientBurst"`
	OurConcurrency     int           `json:"ourMaxConcurrentReconciles"`
	// Repeat is how many times each size is measured (both phases, taking turns going first).
	Repeat int `json:"repeat"`
	// OurStatusWriteInterval is our --status-write-interval.
	OurStatusWriteInterval time.Duration `json:"ourStatusWriteInterval"`
	OurClient              string        `json:"ourClientRateLimit"`
	SchedulerQPS           float64       `json:"schedulerQPS"`
	SchedulerClient        string        `json:"schedulerClientRateLimit"`
	KwokClient             string        `json:"kwokClientRateLimit"`
	ControllerManager      string        `json:"controllerManagerClientRateLimit"`
	APIServer              string        `json:"apiServer"`
	BenchClient            string        `json:"benchClientRateLimit"`
	Creators               int           `json:"creators"`
	Nodes                  int           `json:"nodes"`
	Node                   string        `json:"node"`
	SteadyFor              time.Duration `json:"-"`
	SteadyForSeconds       float64       `json:"steadyForSeconds"`
	SkipAfterFloorFails    bool          `json:"stopWhenFloorFails"`
	// ProfileDir, when set, holds CPU profiles of our operator and kube-apiserver during the phases.
	ProfileDir string `json:"cpuProfileDir,omitempty"`
}

func (s *settings) describe() []string {
	return []string{
		fmt.Sprintf("sizes %v, %d workers per object (pods per object: %d), phases %s, %s per phase at most", s.Sizes, s.Workers, s.Workers+1, strings.Join(s.Phases, "+"), s.SizeTimeout),
		fmt.Sprintf("KubeRay operator: --reconcile-concurrency=%d --qps=%g --burst=%d (same for both phases)", s.KubeRayConcurrency, s.KubeRayQPS, s.KubeRayBurst),
		fmt.Sprintf("our operator: --max-concurrent-reconciles=%d, --status-write-interval=%s, client %s", s.OurConcurrency, s.OurStatusWriteInterval, s.OurClient),
		fmt.Sprintf("kube-scheduler client %s; kwok client %s; kube-controller-manager client %s", s.SchedulerClient, s.KwokClient, s.ControllerManager),
		fmt.Sprintf("kube-apiserver: %s", s.APIServer),
		fmt.Sprintf("bench client %s, %d creating goroutines; %d kwok nodes of %s", s.BenchClient, s.Creators, s.Nodes, s.Node),
		fmt.Sprintf("%d run(s) of each size, the phases taking turns going first; the floor's RayClusters carry no agentfleet.dev labels (our operator, running, ignores them)", max(s.Repeat, 1)),
	}
}

type bench struct {
	c     *cluster.Cluster
	k8s   client.Client
	cache cache.Cache
	s     settings
	pids  map[string]int
	urls  map[string]string
	prof  *profiler // nil: no profiles
}

func run(ctx context.Context, s settings, resultsPath string, keepLogs bool) (err error) {
	if resultsPath == "" {
		if resultsPath, err = cluster.RepoPath("bench/results/converge.json"); err != nil {
			return err
		}
	}
	crds, err := cluster.RepoPath("config/crd/bases")
	if err != nil {
		return err
	}
	largest := s.Sizes[len(s.Sizes)-1]
	s.Nodes = max(2, (largest*(s.Workers+1)+podsPerNode-1)/podsPerNode+1)
	s.Node = "1000 CPU, 4Ti, 250 pods"
	var nodes []cluster.Node
	for i := range s.Nodes {
		nodes = append(nodes, cluster.Node{Name: fmt.Sprintf("cpu-%d", i), CPU: "1000", Memory: "4Ti"})
	}
	fmt.Printf("Starting the local cluster with %d fake nodes...\n", s.Nodes)
	c, err := cluster.Start(ctx, cluster.Options{CRDDirectoryPaths: []string{crds}, Nodes: nodes})
	if err != nil {
		return err
	}
	defer func() {
		// The logs an error names stay.
		if err == nil && !keepLogs {
			_ = c.Stop()
			return
		}
		_ = c.StopKeepingLogs()
		fmt.Fprintf(os.Stderr, "the cluster's logs are in %s\n", c.Dir)
	}()
	if err := tune(ctx, c, &s); err != nil {
		return err
	}
	buildCtx, cancelBuild := context.WithTimeout(ctx, buildTimeout)
	defer cancelBuild()
	manager, err := c.BuildOperator(buildCtx)
	if err != nil {
		return err
	}
	args := []string{fmt.Sprintf("--max-concurrent-reconciles=%d", s.OurConcurrency), fmt.Sprintf("--status-write-interval=%s", s.OurStatusWriteInterval)}
	if err := c.StartOperatorWith(ctx, ourOperator, manager, cluster.OperatorOptions{Pprof: s.ProfileDir != ""}, args...); err != nil {
		return err
	}
	var prof *profiler
	if s.ProfileDir != "" {
		if prof, err = newProfiler(s.ProfileDir, c.PprofURL(ourOperator), c.Config); err != nil {
			return err
		}
	}
	b, err := newBench(ctx, c, s)
	if err != nil {
		return err
	}
	b.prof = prof
	fmt.Println("Settings:")
	for _, l := range b.s.describe() {
		fmt.Println("  " + l)
	}
	res := &results{Bench: "converge", Date: time.Now().UTC().Format(time.RFC3339), Settings: b.s,
		Machine: machine{Cores: runtime.NumCPU(), MemoryBytes: benchmetrics.MemTotal(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()},
		Logs:    c.Dir}
	fmt.Printf("Machine: %d cores, %.1f GiB\n", res.Machine.Cores, float64(res.Machine.MemoryBytes)/(1<<30))

sizes:
	for _, n := range b.s.Sizes {
		var sr sizeResult
		for rep := range max(b.s.Repeat, 1) {
			sr = sizeResult{N: n, Run: rep + 1}
			// The phases take turns going first, so that neither always runs on the cluster the
			// other just cleaned up after.
			phases := slices.Clone(b.s.Phases)
			if rep%2 == 1 {
				slices.Reverse(phases)
			}
			for _, phase := range phases {
				pr, err := b.phase(ctx, phase, n, rep)
				if err != nil {
					res.Sizes = append(res.Sizes, sr)
					_ = res.write(resultsPath)
					return fmt.Errorf("%s at N=%d: %w", phase, n, err)
				}
				if phase == phaseFloor {
					sr.Floor = pr
				} else {
					sr.AgentFleet = pr
				}
			}
			if sr.Floor != nil && sr.AgentFleet != nil && sr.Floor.Converged && sr.AgentFleet.Converged {
				sr.Ratio = sr.AgentFleet.Seconds / sr.Floor.Seconds
			}
			res.Sizes = append(res.Sizes, sr)
			// Written after every run, so that a run cut short keeps what it measured.
			if err := res.write(resultsPath); err != nil {
				return err
			}
			if sr.Floor != nil && !sr.Floor.Converged {
				break
			}
		}
		if sr.Floor != nil && !sr.Floor.Converged && b.s.SkipAfterFloorFails {
			res.Skipped = append(res.Skipped, b.s.Sizes[slices.Index(b.s.Sizes, n)+1:]...)
			fmt.Printf("\nThe floor did not converge at N=%d: larger sizes %v skipped\n", n, res.Skipped)
			break sizes
		}
	}
	res.fits()
	res.print()
	if err := res.write(resultsPath); err != nil {
		return err
	}
	fmt.Printf("\nResults written to %s; logs in %s\n", resultsPath, c.Dir)
	return nil
}

// tune applies the settings to the cluster's parts and records those that are not flags of this
// bench.
func tune(ctx context.Context, c *cluster.Cluster, s *settings) error {
	s.SizeTimeoutSeconds, s.SteadyForSeconds = s.SizeTimeout.Seconds(), s.SteadyFor.Seconds()
	if s.KubeRayConcurrency != kuberayDefaultConcurrency || s.KubeRayQPS != kuberayDefaultQPS || s.KubeRayBurst != kuberayDefaultBurst {
		if err := c.RestartPartWithArgs(ctx, kuberayOperator, fmt.Sprintf("--reconcile-concurrency=%d", s.KubeRayConcurrency),
			fmt.Sprintf("--qps=%g", s.KubeRayQPS), fmt.Sprintf("--burst=%d", s.KubeRayBurst)); err != nil {
			return fmt.Errorf("restarting KubeRay's operator with the bench's settings: %w", err)
		}
	}
	s.SchedulerClient = "QPS 50, burst 100 (kube-scheduler's defaults)"
	if s.SchedulerQPS > 0 {
		if err := c.RestartPartWithArgs(ctx, "kube-scheduler", fmt.Sprintf("--kube-api-qps=%g", s.SchedulerQPS), fmt.Sprintf("--kube-api-burst=%d", int(2*s.SchedulerQPS))); err != nil {
			return fmt.Errorf("restarting kube-scheduler with the bench's settings: %w", err)
		}
		s.SchedulerClient = fmt.Sprintf("QPS %g, burst %d", s.SchedulerQPS, int(2*s.SchedulerQPS))
	}
	// Neither operator's client is set here otherwise: ours takes controller-runtime's default
	// (client-side limit off, API priority and fairness only); kwok sets a limiter that always
	// admits (kwok pkg/utils/client); kube-controller-manager keeps its defaults (test/cluster).
	s.OurClient = "unlimited (controller-runtime's default QPS -1: API priority and fairness only)"
	s.KwokClient = "unlimited (kwok's always-admit rate limiter)"
	s.ControllerManager = "QPS 20, burst 30 (its defaults; only the garbage collector and node lifecycle act here)"
	s.APIServer = "envtest's defaults: --max-requests-inflight 400, --max-mutating-requests-inflight 200, priority and fairness on"
	s.BenchClient = "QPS 2000, burst 4000"
	return nil
}

func newBench(ctx context.Context, c *cluster.Cluster, s settings) (*bench, error) {
	scheme := cluster.Scheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	// Readiness is counted in a cache of RayClusters and AgentFleets, not by listing thousands of
	// objects every poll: the watch costs the API server the same in both phases.
	ca, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	go func() { _ = ca.Start(ctx) }()
	for _, obj := range []client.Object{&rayv1.RayCluster{}, &v1alpha1.AgentFleet{}} {
		if _, err := ca.GetInformer(ctx, obj); err != nil {
			return nil, fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	if !ca.WaitForCacheSync(ctx) {
		return nil, errors.New("the bench's cache of RayClusters and AgentFleets did not sync")
	}
	b := &bench{c: c, k8s: k8s, cache: ca, s: s, pids: c.Pids(), urls: map[string]string{ourOperator: c.MetricsURL(ourOperator)}}
	api, err := url.Parse(c.Config.Host)
	if err != nil {
		return nil, fmt.Errorf("the API server's address %q: %w", c.Config.Host, err)
	}
	cp, err := controlPlanePids(api.Port())
	if err != nil {
		return nil, err
	}
	maps.Copy(b.pids, cp)
	addr, err := c.PartFlag(kuberayOperator, "metrics-addr")
	if err != nil {
		return nil, err
	}
	b.urls[kuberayOperator] = "http://" + addr + "/metrics"
	for name, url := range b.urls {
		if _, err := scrapeOperator(ctx, url); err != nil {
			return nil, fmt.Errorf("the metrics of %s: %w", name, err)
		}
	}
	return b, nil
}

// phaseResult is one phase at one size.
type phaseResult struct {
	N         int  `json:"n"`
	Converged bool `json:"converged"`
	Ready     int  `json:"ready"`
	// Seconds is from the first create to the last object Ready, or to the deadline.
	Seconds          float64 `json:"seconds"`
	HalfReadySeconds float64 `json:"halfReadySeconds"`
	// RayClustersReadySeconds is when every RayCluster of the phase was Ready (KubeRay's part); 0 if
	// KubeRay's status did not say so before the phase ended.
	RayClustersReadySeconds float64 `json:"rayClustersReadySeconds"`
	CreateSeconds           float64 `json:"createSeconds"`
	// RayClustersCreatedSeconds is when every RayCluster of the phase existed: the bench's creates
	// in the floor, our operator's in the fleet phase (how long our first passes take to reach
	// every fleet).
	RayClustersCreatedSeconds float64 `json:"rayClustersCreatedSeconds"`
	CleanupSeconds            float64 `json:"cleanupSeconds"`
	// QuietSeconds is how long after the cleanup the cluster took to be quiet (quiesce).
	QuietSeconds float64                 `json:"quietSeconds"`
	Curve        []curvePoint            `json:"curve"`
	Processes    map[string]processCost  `json:"processes"`
	Operators    map[string]operatorCost `json:"operators"`
	Steady       *steadyResult           `json:"steadyState,omitempty"`
}

type curvePoint struct {
	Seconds float64 `json:"seconds"`
	Ready   int     `json:"ready"`
	// RayClustersReady counts RayClusters with HeadPodReady and every worker ready.
	RayClustersReady int `json:"rayClustersReady"`
	// KubeRayQueue is KubeRay's RayCluster work queue depth then.
	KubeRayQueue float64 `json:"kuberayQueueDepth"`
	OurQueue     float64 `json:"ourQueueDepth"`
}

type processCost struct {
	CPUSeconds float64 `json:"cpuSeconds"`
	// CPUPercent is of one core over the phase: 100 is one core busy throughout.
	CPUPercent   float64 `json:"cpuPercentOfOneCore"`
	PeakRSSBytes int64   `json:"peakRSSBytes"`
	// PeakSinceStart says the peak is the process's since it started (its peak could not be reset).
	PeakSinceStart bool `json:"peakSinceStart,omitempty"`
}

type operatorCost struct {
	ReadsPerObject   float64            `json:"apiReadsPerObject"`
	WritesPerObject  float64            `json:"apiWritesPerObject"`
	ByMethod         map[string]float64 `json:"apiRequestsByMethodPerObject"`
	Reconciles       map[string]float64 `json:"reconciles"`
	MeanReconcileMs  map[string]float64 `json:"meanReconcileMs"`
	MaxQueueDepth    map[string]float64 `json:"maxQueueDepth"`
	ReconcilesPerObj float64            `json:"reconcilesPerObject"`
}

type snapshot struct {
	at    time.Time
	procs map[string]procSample
	ops   map[string]operatorMetrics
}

func (b *bench) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{at: time.Now(), ops: map[string]operatorMetrics{}}
	var err error
	if s.procs, err = b.readProcs(); err != nil {
		return s, err
	}
	for name, url := range b.urls {
		m, err := scrapeOperator(ctx, url)
		if err != nil {
			return s, err
		}
		s.ops[name] = m
	}
	return s, nil
}

// readProcs reads what /proc says of each of the cluster's processes now.
func (b *bench) readProcs() (map[string]procSample, error) {
	procs := make(map[string]procSample, len(processes))
	for _, name := range processes {
		p, err := readProc(b.pids[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		procs[name] = p
	}
	return procs, nil
}

// phase creates n objects of the phase at once, waits for all to be Ready (or the size's
// deadline), measures what it cost, and removes them again.
func (b *bench) phase(ctx context.Context, phase string, n, rep int) (*phaseResult, error) {
	ns := fmt.Sprintf("%s-%d", phase, n)
	if rep > 0 {
		ns = fmt.Sprintf("%s-%d-%d", phase, n, rep+1)
	}
	fmt.Printf("\n%s, N=%d: creating %d %s in namespace %s\n", phase, n, n, map[string]string{phaseFloor: "RayClusters", phaseFleet: "AgentFleets"}[phase], ns)
	if err := b.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	objs, err := b.objects(phase, ns, n)
	if err != nil {
		return nil, err
	}
	resetOK := map[string]bool{}
	for _, name := range processes {
		resetOK[name] = resetPeak(b.pids[name]) == nil
	}
	before, err := b.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	res := &phaseResult{N: n}
	stopProfile := func() ([]string, error) { return nil, nil }
	if b.prof != nil {
		stopProfile = b.prof.during(ctx, ns)
		defer func() { _, _ = stopProfile() }() // a phase that fails ends its profiles too
	}
	start := time.Now()
	if err := b.create(ctx, objs); err != nil {
		return nil, err
	}
	res.CreateSeconds = time.Since(start).Seconds()

	maxDepth := map[string]map[string]float64{ourOperator: {}, kuberayOperator: {}}
	deadline := start.Add(b.s.SizeTimeout)
	nextPoint, nextPrint := start, start.Add(printEvery)
	for {
		// KubeRay's view in both phases; in the fleet phase, the gap between the RayClusters all
		// Ready and the fleets all Ready is ours.
		rcReady, rcs, err := b.countRayClusters(ctx, ns)
		if err != nil {
			return nil, err
		}
		ready := rcReady
		if phase == phaseFleet {
			if ready, err = b.countFleetsReady(ctx, ns); err != nil {
				return nil, err
			}
		}
		now := time.Now()
		if res.RayClustersCreatedSeconds == 0 && rcs == n {
			res.RayClustersCreatedSeconds = now.Sub(start).Seconds()
		}
		if res.RayClustersReadySeconds == 0 && rcReady == n {
			res.RayClustersReadySeconds = now.Sub(start).Seconds()
		}
		if res.HalfReadySeconds == 0 && 2*ready >= n {
			res.HalfReadySeconds = now.Sub(start).Seconds()
		}
		res.Ready = ready
		if ready == n {
			res.Converged = true
		}
		if res.Converged || !now.Before(nextPoint) || now.After(deadline) {
			// A point of the curve, with both queues, every progressEvery and at the end.
			pt := curvePoint{Seconds: now.Sub(start).Seconds(), Ready: ready, RayClustersReady: rcReady}
			for name, url := range b.urls {
				m, err := scrapeOperator(ctx, url)
				if err != nil {
					continue // a slow scrape under load loses a point of the curve, not the run
				}
				for q, d := range m.Depth {
					maxDepth[name][q] = max(maxDepth[name][q], d)
				}
				if name == kuberayOperator {
					pt.KubeRayQueue = sum(m.Depth)
				} else {
					pt.OurQueue = sum(m.Depth)
				}
			}
			res.Curve = append(res.Curve, pt)
			nextPoint = nextPoint.Add(progressEvery)
			if now.After(nextPrint) {
				fmt.Printf("  %4.0fs: %d/%d Ready (RayClusters %d); work queues: KubeRay %.0f, ours %.0f\n", pt.Seconds, ready, n, rcReady, pt.KubeRayQueue, pt.OurQueue)
				nextPrint = nextPrint.Add(printEvery)
			}
		}
		if res.Converged || now.After(deadline) {
			res.Seconds = now.Sub(start).Seconds()
			break
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return nil, err
		}
	}
	profiles, err := stopProfile()
	if err != nil {
		return nil, err
	}
	if len(profiles) > 0 {
		fmt.Printf("  CPU profiles of the phase: %s\n", strings.Join(profiles, " "))
	}
	after, err := b.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	res.costs(before, after, resetOK, maxDepth)
	if res.Converged {
		clusters := fmt.Sprintf("RayClusters all Ready at %.1f s", res.RayClustersReadySeconds)
		if res.RayClustersReadySeconds == 0 {
			// The fleets are Ready from their pods; KubeRay's status of the RayClusters may lag.
			clusters = "KubeRay's status of the RayClusters not all Ready yet"
		}
		fmt.Printf("  all %d Ready in %.1f s (half in %.1f s; %s; creating took %.1f s, the RayClusters all existed at %.1f s)\n", n, res.Seconds, res.HalfReadySeconds, clusters, res.CreateSeconds, res.RayClustersCreatedSeconds)
	} else {
		fmt.Printf("  did not converge: %d/%d Ready after %.0f s (KubeRay's log: %s)\n", res.Ready, n, res.Seconds, b.c.LogPath(kuberayOperator))
	}
	if phase == phaseFleet && res.Converged {
		if res.Steady, err = b.steady(ctx, n); err != nil {
			return nil, err
		}
	}
	cleanStart := time.Now()
	if err := b.cleanup(ctx, phase, ns); err != nil {
		return nil, err
	}
	res.CleanupSeconds = time.Since(cleanStart).Seconds()
	quiet, load, err := b.quiesce(ctx)
	if err != nil {
		return nil, err
	}
	res.QuietSeconds = quiet.Seconds()
	fmt.Printf("  cleaned up in %.1f s; the cluster quiet %.1f s later (%.0f %% of a core)\n", res.CleanupSeconds, res.QuietSeconds, 100*load)
	return res, nil
}

// The cluster is quiet when all its processes together use less than quietLoad of a core over
// quietWindows windows of quietWindow in a row; a phase's cleanup waits for that, at most
// quietTimeout (then it says so and goes on). The API server forgets a phase's pods at once, but kwok
// plays its delete stage for each afterwards, one by one: at N = 1,000 that once went on for two
// minutes into the next phase, kwok's CPU 72.8 s in that phase against 23.0 s in the one before, its
// pods made Ready late. The wait does not catch all of kwok's extra work: once a phase that began
// after it had kwok at 80.8 s for reasons not known (BENCH.md, N = 1,000 both orders twice). The
// threshold is well above a cluster at rest (in the steady-state measurements kube-apiserver takes
// 2–3 % of a core, each operator 1–2 %).
const (
	quietLoad    = 0.25
	quietWindow  = 2 * time.Second
	quietWindows = 2
	quietTimeout = 5 * time.Minute
)

// quiesce waits until the cluster is quiet (quietLoad), and says after how long and its load in
// the last window.
func (b *bench) quiesce(ctx context.Context) (time.Duration, float64, error) {
	start := time.Now()
	cpu := func() (float64, error) {
		procs, err := b.readProcs()
		var total float64
		for _, p := range procs {
			total += p.CPUSeconds
		}
		return total, err
	}
	quiet := 0
	for {
		before, err := cpu()
		if err != nil {
			return 0, 0, err
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(quietWindow):
		}
		after, err := cpu()
		if err != nil {
			return 0, 0, err
		}
		load := (after - before) / quietWindow.Seconds()
		if load < quietLoad {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= quietWindows || time.Since(start) >= quietTimeout {
			if quiet < quietWindows {
				fmt.Printf("  the cluster not quiet after %s (%.0f %% of a core): going on\n", quietTimeout, 100*load)
			}
			return time.Since(start), load, nil
		}
	}
}

func (r *phaseResult) costs(before, after snapshot, resetOK map[string]bool, maxDepth map[string]map[string]float64) {
	secs := after.at.Sub(before.at).Seconds()
	r.Processes = map[string]processCost{}
	for _, name := range processes {
		cpu := after.procs[name].CPUSeconds - before.procs[name].CPUSeconds
		r.Processes[name] = processCost{CPUSeconds: cpu, CPUPercent: 100 * cpu / secs, PeakRSSBytes: after.procs[name].PeakRSS, PeakSinceStart: !resetOK[name]}
	}
	r.Operators = map[string]operatorCost{}
	n := float64(r.N)
	for name, a := range after.ops {
		b := before.ops[name]
		oc := operatorCost{ByMethod: map[string]float64{}, Reconciles: map[string]float64{}, MeanReconcileMs: map[string]float64{}, MaxQueueDepth: maxDepth[name]}
		for m, v := range a.Requests {
			d := (v - b.Requests[m]) / n
			switch m {
			case "read":
				oc.ReadsPerObject = d
			case "write":
				oc.WritesPerObject = d
			default:
				oc.ByMethod[m] = d
			}
		}
		var reconciles float64
		for ctrl, v := range a.Reconciles {
			if d := v - b.Reconciles[ctrl]; d > 0 {
				oc.Reconciles[ctrl] = d
				reconciles += d
			}
		}
		oc.ReconcilesPerObj = reconciles / n
		for q, v := range a.WorkSeconds {
			if count := a.WorkCount[q] - b.WorkCount[q]; count > 0 {
				oc.MeanReconcileMs[q] = 1000 * (v - b.WorkSeconds[q]) / count
			}
		}
		r.Operators[name] = oc
	}
}

// objects are a phase's n objects: RayClusters as rayspecs builds them for a fleet of the bench's
// size, without the owner (the floor), or the fleets themselves.
func (b *bench) objects(phase, ns string, n int) ([]client.Object, error) {
	objs := make([]client.Object, 0, n)
	for i := range n {
		f := builder.MakeAgentFleet(fmt.Sprintf("f-%04d", i), ns).Replicas(int32(b.s.Workers)).Mutate(func(f *v1alpha1.AgentFleet) {
			f.UID, f.Generation = "", 0
		}).Obj()
		if phase == phaseFleet {
			objs = append(objs, f)
			continue
		}
		rc, err := rayspecs.RayCluster(f, rayspecs.Inputs{}, rayspecs.Options{})
		if err != nil {
			return nil, err
		}
		rc.OwnerReferences = nil
		// KubeRay alone: without our labels, our operator (running, for the phases' same cluster)
		// neither caches nor reconciles anything of the floor's; with them, every pod event of the
		// floor woke it (13 reconciles per RayCluster, 8 % of a core, seen in the first runs).
		for _, labels := range []map[string]string{rc.Labels, rc.Spec.HeadGroupSpec.Labels, rc.Spec.HeadGroupSpec.Template.Labels} {
			stripOurs(labels)
		}
		for i := range rc.Spec.WorkerGroupSpecs {
			stripOurs(rc.Spec.WorkerGroupSpecs[i].Labels)
			stripOurs(rc.Spec.WorkerGroupSpecs[i].Template.Labels)
		}
		objs = append(objs, rc)
	}
	return objs, nil
}

// stripOurs removes the agentfleet.dev labels.
func stripOurs(labels map[string]string) {
	for k := range labels {
		if strings.HasPrefix(k, v1alpha1.GroupVersion.Group+"/") {
			delete(labels, k)
		}
	}
}

// create creates objs from b.s.Creators goroutines at once.
func (b *bench) create(ctx context.Context, objs []client.Object) error {
	next := make(chan client.Object)
	errs := make(chan error, b.s.Creators)
	var wg sync.WaitGroup
	for range b.s.Creators {
		wg.Go(func() {
			for obj := range next {
				if err := b.k8s.Create(ctx, obj); err != nil {
					errs <- fmt.Errorf("creating %s: %w", obj.GetName(), err)
					for range next { // drain, so that the feeder ends
					}
					return
				}
			}
		})
	}
	for _, obj := range objs {
		next <- obj
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// countRayClusters counts a namespace's RayClusters that are ready (the head pod Ready and every
// worker ready) and those that exist.
func (b *bench) countRayClusters(ctx context.Context, ns string) (ready, existing int, err error) {
	var rcs rayv1.RayClusterList
	if err := b.cache.List(ctx, &rcs, client.InNamespace(ns)); err != nil {
		return 0, 0, err
	}
	for _, rc := range rcs.Items {
		if meta.IsStatusConditionTrue(rc.Status.Conditions, string(rayv1.HeadPodReady)) && rc.Status.ReadyWorkerReplicas == int32(b.s.Workers) {
			ready++
		}
	}
	return ready, len(rcs.Items), nil
}

// countFleetsReady counts a namespace's fleets with condition Ready=True.
func (b *bench) countFleetsReady(ctx context.Context, ns string) (int, error) {
	var fleets v1alpha1.AgentFleetList
	if err := b.cache.List(ctx, &fleets, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	ready := 0
	for _, f := range fleets.Items {
		if meta.IsStatusConditionTrue(f.Status.Conditions, v1alpha1.ConditionReady) {
			ready++
		}
	}
	return ready, nil
}

// steadyResult is both operators at rest with n fleets Ready.
type steadyResult struct {
	N                int                `json:"n"`
	Seconds          float64            `json:"seconds"`
	OurReconcilesPS  float64            `json:"ourReconcilesPerSecond"`
	OurWritesPS      float64            `json:"ourAPIWritesPerSecond"`
	OurWritesByM     map[string]float64 `json:"ourAPIWritesByMethodPerSecond"`
	OurReadsPS       float64            `json:"ourAPIReadsPerSecond"`
	OurCPUPercent    float64            `json:"ourCPUPercentOfOneCore"`
	KubeRayReconPS   float64            `json:"kuberayReconcilesPerSecond"`
	KubeRayWritesPS  float64            `json:"kuberayAPIWritesPerSecond"`
	KubeRayReadsPS   float64            `json:"kuberayAPIReadsPerSecond"`
	KubeRayCPUPct    float64            `json:"kuberayCPUPercentOfOneCore"`
	APIServerCPUPct  float64            `json:"apiServerCPUPercentOfOneCore"`
	OurReconcilesBy  map[string]float64 `json:"ourReconcilesPerSecondByController"`
	KubeRayRecByCtrl map[string]float64 `json:"kuberayReconcilesPerSecondByController"`
}

func (b *bench) steady(ctx context.Context, n int) (*steadyResult, error) {
	if err := sleep(ctx, settle); err != nil {
		return nil, err
	}
	before, err := b.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, b.s.SteadyFor); err != nil {
		return nil, err
	}
	after, err := b.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	secs := after.at.Sub(before.at).Seconds()
	rate := func(op, key string, pick func(operatorMetrics) map[string]float64) float64 {
		return (pick(after.ops[op])[key] - pick(before.ops[op])[key]) / secs
	}
	req := func(m operatorMetrics) map[string]float64 { return m.Requests }
	rec := func(m operatorMetrics) map[string]float64 { return m.Reconciles }
	cpu := func(p string) float64 { return 100 * (after.procs[p].CPUSeconds - before.procs[p].CPUSeconds) / secs }
	s := &steadyResult{N: n, Seconds: secs, OurWritesByM: map[string]float64{}, OurReconcilesBy: map[string]float64{}, KubeRayRecByCtrl: map[string]float64{},
		OurWritesPS: rate(ourOperator, "write", req), OurReadsPS: rate(ourOperator, "read", req), OurCPUPercent: cpu(ourOperator),
		KubeRayWritesPS: rate(kuberayOperator, "write", req), KubeRayReadsPS: rate(kuberayOperator, "read", req), KubeRayCPUPct: cpu(kuberayOperator),
		APIServerCPUPct: cpu("kube-apiserver")}
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		s.OurWritesByM[m] = rate(ourOperator, m, req)
	}
	for ctrl := range after.ops[ourOperator].Reconciles {
		s.OurReconcilesBy[ctrl] = rate(ourOperator, ctrl, rec)
		s.OurReconcilesPS += s.OurReconcilesBy[ctrl]
	}
	for ctrl := range after.ops[kuberayOperator].Reconciles {
		s.KubeRayRecByCtrl[ctrl] = rate(kuberayOperator, ctrl, rec)
		s.KubeRayReconPS += s.KubeRayRecByCtrl[ctrl]
	}
	fmt.Printf("  steady state, %d fleets Ready, over %.0f s (goal: 0 writes of ours): ours %.2f reconciles/s, %.2f writes/s, %.2f reads/s, CPU %.1f%%; KubeRay %.2f reconciles/s, %.2f writes/s, CPU %.1f%%\n",
		n, secs, s.OurReconcilesPS, s.OurWritesPS, s.OurReadsPS, s.OurCPUPercent, s.KubeRayReconPS, s.KubeRayWritesPS, s.KubeRayCPUPct)
	return s, nil
}

// cleanup deletes a phase's objects and their pods, and its namespace, and waits until they are
// gone, so that the next phase starts on an empty cluster.
func (b *bench) cleanup(ctx context.Context, phase, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	in := client.InNamespace(ns)
	// The owners first, then what they own: pods deleted under a living RayCluster would be made
	// again.
	kinds := []client.Object{&rayv1.RayCluster{}}
	if phase == phaseFleet {
		kinds = []client.Object{&v1alpha1.AgentFleet{}, &rayv1.RayCluster{}}
	}
	for _, obj := range kinds {
		if err := b.k8s.DeleteAllOf(ctx, obj, in); err != nil {
			return fmt.Errorf("deleting the %T of %s: %w", obj, ns, err)
		}
		err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
			return b.count(ctx, obj, ns) == 0, nil
		})
		if err != nil {
			return fmt.Errorf("the %T of %s not gone within %s: %w", obj, ns, cleanupTimeout, err)
		}
	}
	// Pods at once (grace period 0: kwok runs no containers to stop) rather than one by one by the
	// garbage collector at kube-controller-manager's 20 requests/s.
	if err := b.k8s.DeleteAllOf(ctx, &corev1.Pod{}, in, client.GracePeriodSeconds(0)); err != nil {
		return fmt.Errorf("deleting the pods of %s: %w", ns, err)
	}
	if err := b.k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return fmt.Errorf("deleting namespace %s: %w", ns, err)
	}
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		err := b.k8s.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s not gone within %s: %w", ns, cleanupTimeout, err)
	}
	return nil
}

// count is how many objects of obj's kind are in ns, from a list of at most one item and the
// number the API server says remain: no list of thousands.
func (b *bench) count(ctx context.Context, obj client.Object, ns string) int {
	gvk, err := apiutil.GVKForObject(obj, b.k8s.Scheme())
	if err != nil {
		return -1
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := b.k8s.List(ctx, list, client.InNamespace(ns), client.Limit(1)); err != nil {
		return -1
	}
	n := len(list.Items)
	if list.RemainingItemCount != nil {
		n += int(*list.RemainingItemCount)
	}
	return n
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// results is what bench/results/converge.json holds.
type results struct {
	Bench    string         `json:"bench"`
	Date     string         `json:"date"`
	Machine  machine        `json:"machine"`
	Settings settings       `json:"settings"`
	Sizes    []sizeResult   `json:"sizes"`
	Skipped  []int          `json:"skippedSizes,omitempty"`
	Fits     map[string]fit `json:"fits"`
	Logs     string         `json:"logs"`
}

type sizeResult struct {
	N int `json:"n"`
	// Run is which of the --repeat runs at N this is, from 1.
	Run        int          `json:"run"`
	Floor      *phaseResult `json:"floor,omitempty"`
	AgentFleet *phaseResult `json:"agentfleet,omitempty"`
	// Ratio is AgentFleet's time over the floor's (goal <= 1.25); 0 unless both converged.
	Ratio float64 `json:"ratio"`
}

type machine struct {
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memoryBytes"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	GoVersion   string `json:"goVersion"`
}

// ratioSummary is the spread of the ratios measured at one N.
type ratioSummary struct {
	N, Runs          int
	Median, Min, Max float64
}

// medianRatios summarizes the ratios of the runs at each N, in the order measured.
func (r *results) medianRatios() []ratioSummary {
	byN := map[int][]float64{}
	var order []int
	for _, sr := range r.Sizes {
		if sr.Ratio <= 0 {
			continue
		}
		if _, ok := byN[sr.N]; !ok {
			order = append(order, sr.N)
		}
		byN[sr.N] = append(byN[sr.N], sr.Ratio)
	}
	var out []ratioSummary
	for _, n := range order {
		v := slices.Sorted(slices.Values(byN[n]))
		m := v[len(v)/2]
		if len(v)%2 == 0 {
			m = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		out = append(out, ratioSummary{N: n, Runs: len(v), Median: m, Min: v[0], Max: v[len(v)-1]})
	}
	return out
}

// fits fits the time to Ready and the costs against N, over the sizes that converged.
func (r *results) fits() {
	r.Fits = map[string]fit{}
	series := map[string][2][]float64{}
	add := func(key string, n int, v float64) {
		s := series[key]
		s[0], s[1] = append(s[0], float64(n)), append(s[1], v)
		series[key] = s
	}
	for _, sr := range r.Sizes {
		for phase, pr := range map[string]*phaseResult{phaseFloor: sr.Floor, phaseFleet: sr.AgentFleet} {
			if pr == nil || !pr.Converged {
				continue
			}
			add(phase+" seconds", sr.N, pr.Seconds)
			for _, p := range processes {
				add(phase+" "+p+" CPU seconds", sr.N, pr.Processes[p].CPUSeconds)
				add(phase+" "+p+" peak RSS MiB", sr.N, float64(pr.Processes[p].PeakRSSBytes)/(1<<20))
			}
			for _, op := range []string{ourOperator, kuberayOperator} {
				oc := pr.Operators[op]
				add(phase+" "+op+" API requests", sr.N, (oc.ReadsPerObject+oc.WritesPerObject)*float64(sr.N))
			}
		}
	}
	for key, s := range series {
		r.Fits[key] = fitLine(s[0], s[1])
	}
}

func (r *results) print() {
	fmt.Printf("\nConvergence: N objects of 1 head + %d workers created at once, seconds until all Ready (goal: ratio <= 1.25)\n", r.Settings.Workers)
	for _, l := range r.Settings.describe() {
		fmt.Println("  " + l)
	}
	fmt.Printf("  machine: %d cores, %.1f GiB\n", r.Machine.Cores, float64(r.Machine.MemoryBytes)/(1<<30))
	// kwok's CPU beside each run: it is about the same in every phase of a size, and a phase in
	// which it was a multiple of that (once 80.8 s, 31 % of a core, against 20.5-24.1 s and 12-18 % at
	// N = 1,000) was far slower, for reasons not known; the column shows which runs that touched.
	fmt.Printf("  %6s  %14s  %14s  %7s  %s\n", "N", "floor (s)", "AgentFleet (s)", "ratio", "kwok CPU s, % of a core (floor / AgentFleet)")
	cell := func(p *phaseResult) string {
		switch {
		case p == nil:
			return "-"
		case p.Converged:
			return fmt.Sprintf("%.1f", p.Seconds)
		default:
			return fmt.Sprintf("DNC %d/%d", p.Ready, p.N)
		}
	}
	for _, sr := range r.Sizes {
		ratio := "-"
		if sr.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", sr.Ratio)
		}
		kwok := func(p *phaseResult) string {
			if p == nil {
				return "-"
			}
			k := p.Processes[procKwok]
			return fmt.Sprintf("%.1f, %.0f %%", k.CPUSeconds, k.CPUPercent)
		}
		fmt.Printf("  %6d  %14s  %14s  %7s  %s / %s\n", sr.N, cell(sr.Floor), cell(sr.AgentFleet), ratio, kwok(sr.Floor), kwok(sr.AgentFleet))
	}
	if r.Settings.Repeat > 1 {
		for _, m := range r.medianRatios() {
			fmt.Printf("  N=%d: median ratio %.2f over %d runs (min %.2f, max %.2f)\n", m.N, m.Median, m.Runs, m.Min, m.Max)
		}
	}
	if len(r.Skipped) > 0 {
		fmt.Printf("  skipped (the floor did not converge before them): %v\n", r.Skipped)
	}
	for _, phase := range []string{phaseFloor, phaseFleet} {
		if f, ok := r.Fits[phase+" seconds"]; ok && f.line() {
			fmt.Printf("  fit %-10s time = %.2f + %.4f*N s (R^2 %.3f; grows as N^%.2f)\n", phase+":", f.A, f.B, f.R2, f.K)
		}
	}

	for _, phase := range []string{phaseFloor, phaseFleet} {
		fmt.Printf("\nCost in the %s phase, from creation to all Ready: CPU seconds (%% of one core) / peak RSS MiB\n", phase)
		fmt.Printf("  %6s", "N")
		for _, p := range processes {
			fmt.Printf("  %24s", p)
		}
		fmt.Println()
		for _, sr := range r.Sizes {
			pr := map[string]*phaseResult{phaseFloor: sr.Floor, phaseFleet: sr.AgentFleet}[phase]
			if pr == nil {
				continue
			}
			fmt.Printf("  %6d", sr.N)
			for _, p := range processes {
				pc := pr.Processes[p]
				fmt.Printf("  %24s", fmt.Sprintf("%.1f (%3.0f%%) / %.0f", pc.CPUSeconds, pc.CPUPercent, float64(pc.PeakRSSBytes)/(1<<20)))
			}
			fmt.Println()
		}
		fmt.Printf("  API requests per object (reads/writes), reconciles per object, mean reconcile, max work queue depth:\n")
		for _, sr := range r.Sizes {
			pr := map[string]*phaseResult{phaseFloor: sr.Floor, phaseFleet: sr.AgentFleet}[phase]
			if pr == nil {
				continue
			}
			for _, op := range []string{kuberayOperator, ourOperator} {
				oc := pr.Operators[op]
				fmt.Printf("  %6d  %-20s %6.1f / %5.1f   %5.1f reconciles   %s   depth %s\n", sr.N, op, oc.ReadsPerObject, oc.WritesPerObject, oc.ReconcilesPerObj,
					formatMap(oc.MeanReconcileMs, "%.0f ms"), formatMap(oc.MaxQueueDepth, "%.0f"))
			}
		}
		var keys []string
		for k := range r.Fits {
			if strings.HasPrefix(k, phase+" ") && k != phase+" seconds" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		printed := false
		for _, k := range keys {
			f := r.Fits[k]
			if !f.line() {
				continue
			}
			if !printed {
				fmt.Printf("  fits vs N (exponent <= 1: linear or better):\n")
				printed = true
			}
			fmt.Printf("    %-52s = %9.3f + %8.4f*N   R^2 %.3f   N^%.2f\n", strings.TrimPrefix(k, phase+" "), f.A, f.B, f.R2, f.K)
		}
	}
	var steady *phaseResult
	for _, sr := range r.Sizes {
		if sr.AgentFleet != nil && sr.AgentFleet.Steady != nil {
			steady = sr.AgentFleet
		}
	}
	if steady != nil {
		s := steady.Steady
		fmt.Printf("\nSteady state at the largest converged N=%d, nothing changing, %.0f s (goal: 0 API writes/s of ours)\n", s.N, s.Seconds)
		fmt.Printf("  %-22s %14s %14s\n", "", "ours", "KubeRay")
		fmt.Printf("  %-22s %14.2f %14.2f\n", "reconciles/s", s.OurReconcilesPS, s.KubeRayReconPS)
		fmt.Printf("  %-22s %14.2f %14.2f\n", "API writes/s", s.OurWritesPS, s.KubeRayWritesPS)
		fmt.Printf("  %-22s %14.2f %14.2f\n", "API reads/s", s.OurReadsPS, s.KubeRayReadsPS)
		fmt.Printf("  %-22s %14.1f %14.1f\n", "CPU, % of one core", s.OurCPUPercent, s.KubeRayCPUPct)
		fmt.Printf("  our writes by method: %s; kube-apiserver CPU %.1f%%\n", formatMap(s.OurWritesByM, "%.2f/s"), s.APIServerCPUPct)
	}
}

func formatMap(m map[string]float64, format string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+" "+fmt.Sprintf(format, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func (r *results) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing the results: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the results: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the results: %w", err)
	}
	return nil
}
