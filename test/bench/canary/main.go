// Command canary measures canary rollouts (issue 12) on the local cluster with the real KubeRay
// operator and the operator as a process (`make bench`):
//
//   - verdict latency, over N canaries of one worker in a fleet of four: from the canary's
//     minTasks-th outcome written (its agent's TaskDone returned: TaskDone writes the Lease at once)
//     to a watch of the fleet seeing status.rollout.phase Promoting;
//   - steady state: the operator's API requests, reconciles and CPU while every agent heartbeats and
//     steps without finishing a task, first with no canary, then during a canary that cannot reach
//     its verdict (minTasks out of reach).
//
// Goals (issue 12): the verdict within 1 s of the minTasks-th outcome; no API write a canary adds at
// steady state. The figures go to stdout and, with the machine's cores and memory, to
// bench/results/canary.json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/sdk/go/heartbeat"
	"github.com/agentfleet/agentfleet/test/bench/internal/benchmetrics"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

func main() {
	runs := flag.Int("runs", 5, "canaries whose verdict latency is measured")
	minTasks := flag.Int("min-tasks", 10, "the canary's analysis.minTasks in the latency runs")
	steadyFor := flag.Duration("steady-for", 30*time.Second, "how long each steady state is measured")
	timeout := flag.Duration("timeout", 45*time.Minute, "the whole run's deadline: every wait ends by then at the latest")
	results := flag.String("results", "", "where the results go as JSON (default: bench/results/canary.json at the repository root)")
	keepLogs := flag.Bool("keep-logs", false, "keep the cluster's folder (every part's log) after a run that succeeds too")
	flag.Parse()
	if *runs < 1 || *minTasks < 1 || *steadyFor <= 0 {
		fmt.Fprintln(os.Stderr, "--runs and --min-tasks must be at least 1, --steady-for positive")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	err := run(ctx, *runs, *minTasks, *steadyFor, *results, *keepLogs)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

const (
	fleetName = "canary"
	replicas  = 4
	interval  = time.Second // the agents' heartbeat interval
	// steadyMinTasks and steadyMaxDuration keep the steady state's canary in phase Canary: the
	// largest values the API takes.
	steadyMinTasks    = 1000000
	steadyMaxDuration = 604800
)

// How long each wait of the bench may take: none is unbounded, and all end with the -timeout
// context at the latest.
const (
	buildTimeout    = 10 * time.Minute // building the operator
	readyTimeout    = 5 * time.Minute  // the fleet's workers Ready, one revision, each with its agent
	phaseTimeout    = 2 * time.Minute  // a change becoming a canary; a promotion finishing
	outcomesTimeout = 2 * time.Minute  // the canary agent's minTasks outcomes written
	verdictTimeout  = time.Minute      // the verdict after the minTasks-th outcome
	scrapeTimeout   = 10 * time.Second // one read of the operator's metrics
	agentTimeout    = 15 * time.Second // one API request of an agent
	settle          = 10 * time.Second // before a steady state is measured
	pollEvery       = 5 * time.Millisecond
	readyEvery      = 250 * time.Millisecond
	syncEvery       = 200 * time.Millisecond // how often agents are started for new Ready workers
	canaryTaskEvery = 250 * time.Millisecond // the canary agent's pace: minTasks 10 in 2.5 s
	stableTaskEvery = time.Second
)

type bench struct {
	c   *cluster.Cluster
	k8s client.WithWatch
}

func run(ctx context.Context, runs, minTasks int, steadyFor time.Duration, resultsPath string, keepLogs bool) (err error) {
	if resultsPath == "" {
		p, err := cluster.RepoPath("bench/results/canary.json")
		if err != nil {
			return err
		}
		resultsPath = p
	}
	crds, err := cluster.RepoPath("config/crd/bases")
	if err != nil {
		return err
	}
	nodes := []cluster.Node{{Name: "cpu-0", CPU: "64", Memory: "256Gi"}, {Name: "cpu-1", CPU: "64", Memory: "256Gi"}}
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
	buildCtx, cancelBuild := context.WithTimeout(ctx, buildTimeout)
	defer cancelBuild()
	manager, err := c.BuildOperator(buildCtx)
	if err != nil {
		return err
	}
	if err := c.StartOperator(ctx, "agentfleet-operator", manager); err != nil {
		return err
	}
	scheme := cluster.Scheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	k8s, err := client.NewWithWatch(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	b := &bench{c: c, k8s: k8s}

	res := newResults(runs, minTasks, steadyFor)
	start := time.Now()
	key, err := b.fleet(ctx, int32(minTasks))
	if err != nil {
		return err
	}
	a, err := b.startAgents(ctx, key, minTasks)
	if err != nil {
		return err
	}
	defer a.stop()
	if err := b.settled(ctx, key, a); err != nil {
		return err
	}
	fmt.Printf("Fleet of %d workers Ready, each with its agent, in %s\n\n", replicas, time.Since(start).Round(time.Second))

	fmt.Printf("Verdict latency: %d canaries of 1 worker in %d, minTasks %d, heartbeat every %s (goal: < 1 s from the minTasks-th outcome to phase Promoting)\n",
		runs, replicas, minTasks, interval)
	for i := range runs {
		r, err := b.verdict(ctx, key, a, fmt.Sprintf("bench-%d", i+1))
		if err != nil {
			return fmt.Errorf("canary %d: %w", i+1, err)
		}
		res.Verdict.Runs = append(res.Verdict.Runs, r)
		fmt.Printf("  canary %d: %6.0f ms   (canary tasks at the verdict: %d; canary began %.0f ms after the change; promoted %.1f s after the verdict)\n",
			i+1, r.LatencyMs, r.CanaryTasksAtVerdict, 1000*r.ChangeToCanaryS, r.VerdictToPromotedS)
	}
	var lat []float64
	for _, r := range res.Verdict.Runs {
		lat = append(lat, r.LatencyMs)
	}
	res.Verdict.P50Ms, res.Verdict.P99Ms, res.Verdict.MaxMs = benchmetrics.Percentile(lat, 50), benchmetrics.Percentile(lat, 99), benchmetrics.Percentile(lat, 100)
	fmt.Printf("  p50 %6.0f ms   p99 %6.0f ms   max %6.0f ms   (n=%d)\n", res.Verdict.P50Ms, res.Verdict.P99Ms, res.Verdict.MaxMs, len(lat))

	fmt.Printf("\nSteady state: %d agents heartbeating every %s and stepping every second, finishing no task; measured for %s, %s after the Leases of workers gone were cleaned up (goal: 0 API writes/s)\n",
		replicas, interval, steadyFor, settle)
	a.mode.Store(modeSteady)
	baseline, err := b.steady(ctx, a, steadyFor)
	if err != nil {
		return fmt.Errorf("steady state without a canary: %w", err)
	}
	during, err := b.steadyCanary(ctx, key, a, steadyFor)
	if err != nil {
		return fmt.Errorf("steady state during a canary: %w", err)
	}
	res.Steady.NoCanary, res.Steady.Canary = baseline, during
	fmt.Printf("  %-28s %12s %12s\n", "", "no canary", "canary")
	row := func(name, format string, v func(steadyPhase) float64) {
		fmt.Printf("  %-28s %12s %12s\n", name, fmt.Sprintf(format, v(baseline)), fmt.Sprintf(format, v(during)))
	}
	row("operator API writes/s", "%.2f", func(p steadyPhase) float64 { return p.APIWritesPerS })
	row("  besides status.usage/s", "%.2f", func(p steadyPhase) float64 { return p.APIWritesBesidesUsagePerS })
	for _, m := range []string{"PATCH", "PUT", "POST", "DELETE"} {
		row("  "+m+"/s", "%.2f", func(p steadyPhase) float64 { return p.APIWritesByMethodPerS[m] })
	}
	row("operator API reads/s", "%.2f", func(p steadyPhase) float64 { return p.APIReadsPerS })
	row("reconciles/s (agentfleet)", "%.2f", func(p steadyPhase) float64 { return p.ReconcilesPerS })
	row("operator CPU, % of one core", "%.1f", func(p steadyPhase) float64 { return p.CPUPercent })
	row("agent Lease writes/s", "%.2f", func(p steadyPhase) float64 { return p.AgentWritesPerS })
	row("AgentFleet changes", "%.0f", func(p steadyPhase) float64 { return float64(p.FleetWrites) })
	row("  of which status.usage only", "%.0f", func(p steadyPhase) float64 { return float64(p.UsageRefreshes) })
	// status.usage is refreshed once a minute while the fleet shows use, with or without a canary:
	// one window may hold a refresh that the other does not.
	fmt.Printf("  the canary adds %+.2f operator API writes/s besides status.usage refreshes (%+.2f in all) and %+.2f reconciles/s (phase %s throughout)\n",
		during.APIWritesBesidesUsagePerS-baseline.APIWritesBesidesUsagePerS, during.APIWritesPerS-baseline.APIWritesPerS,
		during.ReconcilesPerS-baseline.ReconcilesPerS, during.Phase)

	if err := res.write(resultsPath); err != nil {
		return err
	}
	fmt.Printf("\nResults written to %s\n", resultsPath)
	return nil
}

// fleet creates the bench's fleet: 4 workers under the Canary strategy, one canary worker, a
// verdict after minTasks of its tasks.
func (b *bench) fleet(ctx context.Context, minTasks int32) (client.ObjectKey, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: fleetName + "-"}}
	if err := b.k8s.Create(ctx, ns); err != nil {
		return client.ObjectKey{}, fmt.Errorf("creating the bench's namespace: %w", err)
	}
	// A progress deadline far above the interval: a worker slowed by a busy machine is not replaced
	// as stalled, which would count against the canary.
	f := builder.MakeAgentFleet(fleetName, ns.Name).Replicas(replicas).Heartbeat(int32(interval.Seconds()), 30, 5, 100000).Mutate(func(f *v1alpha1.AgentFleet) {
		f.UID, f.Generation = "", 0
		f.Spec.Worker.CPU, f.Spec.Worker.Memory = ptr.To(resource.MustParse("100m")), ptr.To(resource.MustParse("128Mi"))
		f.Spec.Rollout.Strategy = v1alpha1.RolloutCanary
		f.Spec.Rollout.Canary = &v1alpha1.CanarySpec{Workers: ptr.To(intstr.FromInt32(1)), Analysis: v1alpha1.CanaryAnalysis{
			// Every agent succeeds: the verdict is Promote once the canary finished minTasks.
			MinTasks: minTasks, MaxDurationSeconds: 600, MaxFailureRateIncrease: "0.5", MaxRestarts: ptr.To(int32(3)),
		}}
	}).Obj()
	if err := b.k8s.Create(ctx, f); err != nil {
		return client.ObjectKey{}, fmt.Errorf("creating the bench's fleet: %w", err)
	}
	return client.ObjectKeyFromObject(f), nil
}

// settled waits until the fleet has no canary (phase Stable or Promoted) and its replicas workers
// are Ready on one revision, each with its agent running.
func (b *bench) settled(ctx context.Context, key client.ObjectKey, a *agents) error {
	var state string
	err := wait.PollUntilContextTimeout(ctx, readyEvery, readyTimeout, true, func(ctx context.Context) (bool, error) {
		f := &v1alpha1.AgentFleet{}
		if err := b.k8s.Get(ctx, key, f); err != nil {
			state = err.Error()
			return false, nil //nolint:nilerr // retried until the deadline, whose error names it
		}
		phase := "none"
		if f.Status.Rollout != nil {
			phase = string(f.Status.Rollout.Phase)
		}
		pods, err := b.pods(ctx, key)
		if err != nil {
			state = err.Error()
			return false, nil //nolint:nilerr // retried until the deadline, whose error names it
		}
		ready, canary, revisions := 0, 0, map[string]bool{}
		for i := range pods {
			p := &pods[i]
			revisions[p.Labels[v1alpha1.LabelWorkerHash]] = true
			if p.Labels[rayutils.RayNodeGroupLabelKey] == v1alpha1.CanaryGroup {
				canary++
			}
			if podReady(p) {
				ready++
			}
		}
		running := a.running(pods)
		state = fmt.Sprintf("rollout phase %s, %d workers (%d Ready, %d canary, %d revisions), %d agents running", phase, len(pods), ready, canary, len(revisions), running)
		return (phase == string(v1alpha1.RolloutPhaseStable) || phase == string(v1alpha1.RolloutPhasePromoted)) &&
			len(pods) == replicas && ready == replicas && canary == 0 && len(revisions) == 1 && running == replicas, nil
	})
	if err != nil {
		return fmt.Errorf("fleet %s not settled within %s (%s; agents: %s; operator log: %s): %w",
			key, readyTimeout, state, a.lastErrors(), b.c.LogPath("agentfleet-operator"), err)
	}
	return nil
}

// pods are the fleet's agent workers, those being deleted left out.
func (b *bench) pods(ctx context.Context, key client.ObjectKey) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := b.k8s.List(ctx, &list, client.InNamespace(key.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: key.Name, v1alpha1.LabelRole: v1alpha1.RoleAgent}); err != nil {
		return nil, fmt.Errorf("listing the workers of %s: %w", key, err)
	}
	pods := list.Items[:0]
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// change sets the fleet's model version, a new revision of its workers (and the canary analysis's
// minTasks and deadline, which do not change the workers' revision).
func (b *bench) change(ctx context.Context, key client.ObjectKey, version string, minTasks, maxDuration int32) error {
	f := &v1alpha1.AgentFleet{}
	if err := b.k8s.Get(ctx, key, f); err != nil {
		return fmt.Errorf("reading fleet %s: %w", key, err)
	}
	patch := client.MergeFrom(f.DeepCopy())
	f.Spec.Model.Version = version
	f.Spec.Rollout.Canary.Analysis.MinTasks, f.Spec.Rollout.Canary.Analysis.MaxDurationSeconds = minTasks, maxDuration
	if err := b.k8s.Patch(ctx, f, patch); err != nil {
		return fmt.Errorf("changing the model version of %s to %s: %w", key, version, err)
	}
	return nil
}

// verdictRun is one canary of the latency runs.
type verdictRun struct {
	// LatencyMs is from the canary's minTasks-th outcome written to phase Promoting seen.
	LatencyMs float64 `json:"latencyMs"`
	// CanaryTasksAtVerdict is the canary's tasks the Promoting status counts.
	CanaryTasksAtVerdict int64   `json:"canaryTasksAtVerdict"`
	ChangeToCanaryS      float64 `json:"changeToCanarySeconds"`
	VerdictToPromotedS   float64 `json:"verdictToPromotedSeconds"`
}

// verdict runs one canary of a new model version to its promotion and measures its verdict.
func (b *bench) verdict(ctx context.Context, key client.ObjectKey, a *agents, version string) (verdictRun, error) {
	minTasks := a.minTasks
	w, err := b.watchRollout(ctx, key)
	if err != nil {
		return verdictRun{}, err
	}
	defer w.stop()
	changed := time.Now()
	if err := b.change(ctx, key, version, int32(minTasks), 600); err != nil {
		return verdictRun{}, err
	}
	began, st, err := w.wait(ctx, v1alpha1.RolloutPhaseCanary, version, phaseTimeout)
	if err != nil {
		return verdictRun{}, err
	}
	revision := st.Canary.Revision
	reached, err := a.waitReached(ctx, revision, outcomesTimeout)
	if err != nil {
		return verdictRun{}, err
	}
	verdictAt, st, err := w.wait(ctx, v1alpha1.RolloutPhasePromoting, version, verdictTimeout)
	if err != nil {
		return verdictRun{}, fmt.Errorf("no verdict within %s of the canary's %d-th outcome: %w", verdictTimeout, minTasks, err)
	}
	promoted, _, err := w.wait(ctx, v1alpha1.RolloutPhasePromoted, version, readyTimeout)
	if err != nil {
		return verdictRun{}, err
	}
	if err := b.settled(ctx, key, a); err != nil {
		return verdictRun{}, err
	}
	return verdictRun{
		LatencyMs:            float64(verdictAt.Sub(reached).Microseconds()) / 1000,
		CanaryTasksAtVerdict: st.Canary.TasksSucceeded + st.Canary.TasksFailed,
		ChangeToCanaryS:      began.Sub(changed).Seconds(),
		VerdictToPromotedS:   promoted.Sub(verdictAt).Seconds(),
	}, nil
}

// rolloutWatch records when a watch of the fleet first saw each rollout phase, by the canary's
// model version.
type rolloutWatch struct {
	b     *bench
	stop  func()
	mu    sync.Mutex
	seen  map[string]seenPhase
	ended bool
}

type seenPhase struct {
	at     time.Time
	status v1alpha1.RolloutStatus
}

func (b *bench) watchRollout(ctx context.Context, key client.ObjectKey) (*rolloutWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	var fleets v1alpha1.AgentFleetList
	w, err := b.k8s.Watch(ctx, &fleets, client.InNamespace(key.Namespace), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", key.Name)})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching AgentFleet %s: %w", key, err)
	}
	rw := &rolloutWatch{b: b, seen: map[string]seenPhase{}}
	rw.stop = func() { cancel(); w.Stop() }
	go func() {
		defer func() {
			rw.mu.Lock()
			rw.ended = true
			rw.mu.Unlock()
		}()
		for ev := range w.ResultChan() {
			now := time.Now() // the event's arrival, before anything else is done with it
			f, ok := ev.Object.(*v1alpha1.AgentFleet)
			if !ok || f.Status.Rollout == nil || f.Status.Rollout.Canary == nil {
				continue
			}
			ro := f.Status.Rollout
			k := string(ro.Phase) + "/" + ro.Canary.ModelVersion
			rw.mu.Lock()
			if _, ok := rw.seen[k]; !ok {
				rw.seen[k] = seenPhase{at: now, status: *ro.DeepCopy()}
			}
			rw.mu.Unlock()
		}
	}()
	return rw, nil
}

// wait returns when the watch first saw phase for the canary of version, and the status then. An
// aborted canary of version is an error at once.
func (rw *rolloutWatch) wait(ctx context.Context, phase v1alpha1.RolloutPhase, version string, timeout time.Duration) (time.Time, v1alpha1.RolloutStatus, error) {
	var got seenPhase
	err := wait.PollUntilContextTimeout(ctx, pollEvery, timeout, true, func(context.Context) (bool, error) {
		rw.mu.Lock()
		defer rw.mu.Unlock()
		if s, ok := rw.seen[string(v1alpha1.RolloutPhaseAborted)+"/"+version]; ok {
			return false, fmt.Errorf("the canary of model version %s was aborted: %s", version, s.status.Message)
		}
		s, ok := rw.seen[string(phase)+"/"+version]
		if !ok && rw.ended {
			return false, errors.New("the AgentFleet watch ended")
		}
		got = s
		return ok, nil
	})
	if err != nil {
		rw.mu.Lock()
		var phases []string
		for k := range rw.seen {
			phases = append(phases, k)
		}
		rw.mu.Unlock()
		slices.Sort(phases)
		return time.Time{}, v1alpha1.RolloutStatus{}, fmt.Errorf("rollout phase %s of model version %s not seen within %s (seen: %s; operator log: %s): %w",
			phase, version, timeout, strings.Join(phases, ", "), rw.b.c.LogPath("agentfleet-operator"), err)
	}
	return got.at, got.status, nil
}

// steadyPhase is one steady-state measurement.
type steadyPhase struct {
	Phase                 string             `json:"rolloutPhase"`
	APIWritesPerS         float64            `json:"operatorAPIWritesPerSecond"`
	APIWritesByMethodPerS map[string]float64 `json:"operatorAPIWritesByMethodPerSecond"`
	// APIWritesBesidesUsagePerS leaves out one write per status.usage refresh seen.
	APIWritesBesidesUsagePerS float64 `json:"operatorAPIWritesBesidesUsageRefreshesPerSecond"`
	APIReadsPerS              float64 `json:"operatorAPIReadsPerSecond"`
	ReconcilesPerS            float64 `json:"reconcilesPerSecond"`
	CPUPercent                float64 `json:"operatorCPUPercentOfOneCore"`
	AgentWritesPerS           float64 `json:"agentLeaseWritesPerSecond"`
	// FleetWrites are the changes of the AgentFleet a watch saw, of which UsageRefreshes changed
	// only status.usage (refreshed once a minute while the fleet shows use).
	FleetWrites    int `json:"fleetWrites"`
	UsageRefreshes int `json:"usageRefreshes"`
}

// steadyCanary starts a canary that cannot reach its verdict and measures the steady state during it.
func (b *bench) steadyCanary(ctx context.Context, key client.ObjectKey, a *agents, steadyFor time.Duration) (steadyPhase, error) {
	const version = "bench-steady"
	w, err := b.watchRollout(ctx, key)
	if err != nil {
		return steadyPhase{}, err
	}
	defer w.stop()
	if err := b.change(ctx, key, version, steadyMinTasks, steadyMaxDuration); err != nil {
		return steadyPhase{}, err
	}
	if _, _, err := w.wait(ctx, v1alpha1.RolloutPhaseCanary, version, phaseTimeout); err != nil {
		return steadyPhase{}, err
	}
	// The canary's worker Ready with its agent, and the stable group down to make room for it.
	var state string
	err = wait.PollUntilContextTimeout(ctx, readyEvery, readyTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := b.pods(ctx, key)
		if err != nil {
			state = err.Error()
			return false, nil //nolint:nilerr // retried until the deadline, whose error names it
		}
		ready, canary := 0, 0
		for i := range pods {
			if podReady(&pods[i]) {
				ready++
				if pods[i].Labels[rayutils.RayNodeGroupLabelKey] == v1alpha1.CanaryGroup {
					canary++
				}
			}
		}
		running := a.running(pods)
		state = fmt.Sprintf("%d workers, %d Ready, %d canary Ready, %d agents running", len(pods), ready, canary, running)
		return len(pods) == replicas && ready == replicas && canary == 1 && running == replicas, nil
	})
	if err != nil {
		return steadyPhase{}, fmt.Errorf("the canary's worker not running within %s (%s; agents: %s): %w", readyTimeout, state, a.lastErrors(), err)
	}
	p, err := b.steady(ctx, a, steadyFor)
	if err != nil {
		return steadyPhase{}, err
	}
	f := &v1alpha1.AgentFleet{}
	if err := b.k8s.Get(ctx, key, f); err != nil {
		return steadyPhase{}, fmt.Errorf("reading fleet %s: %w", key, err)
	}
	if ro := f.Status.Rollout; ro == nil || ro.Phase != v1alpha1.RolloutPhaseCanary || ro.Canary == nil || ro.Canary.ModelVersion != version {
		return steadyPhase{}, fmt.Errorf("the steady state's canary ended while measured: status.rollout %+v", ro)
	}
	// The watch saw the canary begin; a later phase would have been recorded too.
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.seen {
		if strings.HasSuffix(k, "/"+version) && k != string(v1alpha1.RolloutPhaseCanary)+"/"+version {
			return steadyPhase{}, fmt.Errorf("the steady state's canary went to %s while measured", k)
		}
	}
	return p, nil
}

// steady waits for things to settle (the Leases of workers gone deleted, then settle), then
// measures the operator and the agents for steadyFor.
func (b *bench) steady(ctx context.Context, a *agents, steadyFor time.Duration) (steadyPhase, error) {
	if err := b.leasesCleaned(ctx, a.key); err != nil {
		return steadyPhase{}, err
	}
	if err := sleep(ctx, settle); err != nil {
		return steadyPhase{}, err
	}
	fleetWrites, err := b.countFleetWrites(ctx, a.key)
	if err != nil {
		return steadyPhase{}, err
	}
	writes0 := a.writes()
	m0, err := benchmetrics.Scrape(ctx, b.c.MetricsURL("agentfleet-operator"), scrapeTimeout)
	if err != nil {
		return steadyPhase{}, err
	}
	start := time.Now()
	if err := sleep(ctx, steadyFor); err != nil {
		return steadyPhase{}, err
	}
	m1, err := benchmetrics.Scrape(ctx, b.c.MetricsURL("agentfleet-operator"), scrapeTimeout)
	if err != nil {
		return steadyPhase{}, err
	}
	secs := time.Since(start).Seconds()
	writes1 := a.writes()
	p := steadyPhase{
		APIWritesPerS: (m1.Requests["write"] - m0.Requests["write"]) / secs, APIWritesByMethodPerS: map[string]float64{},
		APIReadsPerS:    (m1.Requests["read"] - m0.Requests["read"]) / secs,
		ReconcilesPerS:  (m1.Reconciles - m0.Reconciles) / secs,
		CPUPercent:      100 * (m1.CPUSeconds - m0.CPUSeconds) / secs,
		AgentWritesPerS: float64(writes1-writes0) / secs,
	}
	for _, m := range []string{"PATCH", "PUT", "POST", "DELETE"} {
		p.APIWritesByMethodPerS[m] = (m1.Requests[m] - m0.Requests[m]) / secs
	}
	if p.FleetWrites, p.UsageRefreshes, err = fleetWrites(); err != nil {
		return steadyPhase{}, err
	}
	p.APIWritesBesidesUsagePerS = max(0, m1.Requests["write"]-m0.Requests["write"]-float64(p.UsageRefreshes)) / secs
	f := &v1alpha1.AgentFleet{}
	if err := b.k8s.Get(ctx, a.key, f); err == nil && f.Status.Rollout != nil {
		p.Phase = string(f.Status.Rollout.Phase)
	}
	return p, nil
}

// leasesCleaned waits until every heartbeat Lease of the fleet is a live worker's: the operator
// deletes a gone worker's Lease once it is older than the progress deadline, a write that follows
// every rollout by that much and is no part of a steady state.
func (b *bench) leasesCleaned(ctx context.Context, key client.ObjectKey) error {
	var state string
	err := wait.PollUntilContextTimeout(ctx, readyEvery, readyTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := b.pods(ctx, key)
		if err != nil {
			state = err.Error()
			return false, nil //nolint:nilerr // retried until the deadline, whose error names it
		}
		var leases coordinationv1.LeaseList
		if err := b.k8s.List(ctx, &leases, client.InNamespace(key.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: key.Name}); err != nil {
			state = err.Error()
			return false, nil //nolint:nilerr // retried until the deadline, whose error names it
		}
		live := map[string]bool{}
		for i := range pods {
			live[pods[i].Name] = true
		}
		var gone []string
		for _, l := range leases.Items {
			if !live[l.Name] {
				gone = append(gone, l.Name)
			}
		}
		state = fmt.Sprintf("Leases of workers gone: %v", gone)
		return len(gone) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("the heartbeat Leases of %s not cleaned up within %s (%s; operator log: %s): %w", key, readyTimeout, state, b.c.LogPath("agentfleet-operator"), err)
	}
	return nil
}

// countFleetWrites watches the fleet and counts its changes until the returned function is called,
// which returns them: all, and those that changed status.usage alone.
func (b *bench) countFleetWrites(ctx context.Context, key client.ObjectKey) (func() (all, usage int, err error), error) {
	ctx, cancel := context.WithCancel(ctx)
	var fleets v1alpha1.AgentFleetList
	w, err := b.k8s.Watch(ctx, &fleets, client.InNamespace(key.Namespace), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", key.Name)})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching AgentFleet %s: %w", key, err)
	}
	var mu sync.Mutex
	var all, usage int
	ended := false
	go func() {
		defer func() {
			mu.Lock()
			ended = true
			mu.Unlock()
		}()
		var prev *v1alpha1.AgentFleet // the first event is the fleet as it is: the baseline
		for ev := range w.ResultChan() {
			f, ok := ev.Object.(*v1alpha1.AgentFleet)
			if !ok {
				continue
			}
			if prev != nil && f.ResourceVersion != prev.ResourceVersion {
				mu.Lock()
				all++
				if equality.Semantic.DeepEqual(withoutUsage(prev), withoutUsage(f)) {
					usage++
				}
				mu.Unlock()
			}
			prev = f
		}
	}()
	return func() (int, int, error) {
		mu.Lock()
		watchEnded, n, u := ended, all, usage
		mu.Unlock()
		cancel()
		w.Stop()
		if watchEnded {
			return 0, 0, fmt.Errorf("the watch of AgentFleet %s ended while counting its changes", key)
		}
		return n, u, nil
	}, nil
}

// withoutUsage is the fleet without what a status.usage refresh changes.
func withoutUsage(f *v1alpha1.AgentFleet) *v1alpha1.AgentFleet {
	c := f.DeepCopy()
	c.ResourceVersion, c.ManagedFields, c.Status.Usage = "", nil, nil
	return c
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("the bench's deadline passed: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// Agent modes.
const (
	// modeTasks: the stable agents finish a task a second, the canary's one every canaryTaskEvery;
	// all succeed.
	modeTasks int32 = iota
	// modeSteady: every agent steps once a second and finishes nothing (renewals and coalesced
	// steps only).
	modeSteady
)

// agents runs a simulated agent for every Ready worker of the fleet, on the Go heartbeat client,
// as the fleet's worker ServiceAccount, as real workers do.
type agents struct {
	cs       kubernetes.Interface
	key      client.ObjectKey
	minTasks int
	mode     atomic.Int32
	cancel   context.CancelFunc

	mu      sync.Mutex
	agents  map[string]*agent // by pod
	retired int64             // Lease writes of the agents stopped
	errs    map[string]string // the last start error by pod
	// reached is when a canary agent's minTasks-th outcome was written, by the revision it runs.
	reached map[string]time.Time
}

type agent struct {
	cancel context.CancelFunc
	hb     *heartbeat.Client
}

func (b *bench) startAgents(ctx context.Context, key client.ObjectKey, minTasks int) (*agents, error) {
	cs, err := b.agentClient(ctx, key.Namespace, key.Name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	a := &agents{cs: cs, key: key, minTasks: minTasks, cancel: cancel, agents: map[string]*agent{}, errs: map[string]string{}, reached: map[string]time.Time{}}
	go func() {
		t := time.NewTicker(syncEvery)
		defer t.Stop()
		for {
			a.sync(ctx, b)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return a, nil
}

// agentClient is the client the bench's agents heartbeat with: as the fleet's worker
// ServiceAccount, through the Role the operator gives it, as real workers do. They share it.
func (b *bench) agentClient(ctx context.Context, ns, fleet string) (kubernetes.Interface, error) {
	f := &v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet, Namespace: ns}}
	sa := rayspecs.HeartbeatServiceAccount(f)
	// The operator makes the ServiceAccount with the fleet's first reconcile.
	var cfg *rest.Config
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, readyEvery, readyTimeout, true, func(ctx context.Context) (bool, error) {
		cfg, lastErr = b.c.ServiceAccountConfig(ctx, ns, sa, nil)
		return lastErr == nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("no token of the fleet's worker ServiceAccount %s/%s within %s (last: %w): %w", ns, sa, readyTimeout, lastErr, err)
	}
	cfg.QPS, cfg.Burst, cfg.Timeout = 1000, 2000, agentTimeout
	return kubernetes.NewForConfig(cfg)
}

func (a *agents) stop() {
	a.cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ag := range a.agents {
		ag.cancel()
	}
}

// sync stops the agents of workers gone or going (as their processes would end) and starts one for
// each Ready worker without one.
func (a *agents) sync(ctx context.Context, b *bench) {
	pods, err := b.pods(ctx, a.key)
	if err != nil {
		return // tried again at the next tick
	}
	exists := map[string]bool{}
	for i := range pods {
		exists[pods[i].Name] = true
	}
	a.mu.Lock()
	for name, ag := range a.agents {
		if !exists[name] {
			ag.cancel()
			a.retired += ag.hb.Writes()
			delete(a.agents, name)
		}
	}
	a.mu.Unlock()
	for i := range pods {
		p := &pods[i]
		a.mu.Lock()
		_, running := a.agents[p.Name]
		a.mu.Unlock()
		if running || !podReady(p) {
			continue
		}
		hb := heartbeat.New(a.cs, a.key.Namespace, a.key.Name, p.Name, interval)
		actx, cancel := context.WithCancel(ctx)
		if err := hb.Start(actx); err != nil {
			// Tried again at the next tick: RBAC may not see the operator's RoleBinding yet.
			cancel()
			a.mu.Lock()
			a.errs[p.Name] = err.Error()
			a.mu.Unlock()
			continue
		}
		a.mu.Lock()
		a.agents[p.Name] = &agent{cancel: cancel, hb: hb}
		delete(a.errs, p.Name)
		a.mu.Unlock()
		canary := p.Labels[rayutils.RayNodeGroupLabelKey] == v1alpha1.CanaryGroup
		go a.work(actx, hb, canary, p.Labels[v1alpha1.LabelWorkerHash])
	}
}

// work is an agent's loop: a step and a succeeded task at its pace in modeTasks, a step a second
// in modeSteady. A canary agent records when its minTasks-th outcome was written.
func (a *agents) work(ctx context.Context, hb *heartbeat.Client, canary bool, revision string) {
	done := 0
	for i := 0; ; i++ {
		mode := a.mode.Load()
		every := stableTaskEvery
		if canary && mode == modeTasks {
			every = canaryTaskEvery
		}
		if sleep(ctx, every) != nil {
			return
		}
		_ = hb.Step(ctx, fmt.Sprintf("step %d", i)) // a step from idle is written at once: a task starts
		if mode != modeTasks {
			continue
		}
		done++
		// TaskDone writes the Lease at once, every outcome so far with it: the first write that
		// returns without error once minTasks are done is the minTasks-th outcome written.
		err := hb.TaskDone(ctx, true)
		now := time.Now()
		if !canary || err != nil || done < a.minTasks {
			continue
		}
		a.mu.Lock()
		if _, ok := a.reached[revision]; !ok {
			a.reached[revision] = now
		}
		a.mu.Unlock()
	}
}

// waitReached returns when the canary agent of revision wrote its minTasks-th outcome.
func (a *agents) waitReached(ctx context.Context, revision string, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := wait.PollUntilContextTimeout(ctx, pollEvery, timeout, true, func(context.Context) (bool, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		t, ok := a.reached[revision]
		at = t
		return ok, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("the canary agent of revision %s did not write its %d-th outcome within %s (agents: %s): %w",
			revision, a.minTasks, timeout, a.lastErrors(), err)
	}
	return at, nil
}

// running counts the pods with an agent running.
func (a *agents) running(pods []corev1.Pod) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for i := range pods {
		if _, ok := a.agents[pods[i].Name]; ok {
			n++
		}
	}
	return n
}

// writes is how many Lease writes the agents made so far, those stopped included.
func (a *agents) writes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.retired
	for _, ag := range a.agents {
		n += ag.hb.Writes()
	}
	return n
}

func (a *agents) lastErrors() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.errs) == 0 {
		return "no start errors"
	}
	var s []string
	for pod, err := range a.errs {
		s = append(s, pod+": "+err)
	}
	slices.Sort(s)
	return strings.Join(s, "; ")
}

// results is what bench/results/canary.json holds.
type results struct {
	Bench   string  `json:"bench"`
	Date    string  `json:"date"`
	Machine machine `json:"machine"`
	Params  struct {
		Runs                     int     `json:"runs"`
		MinTasks                 int     `json:"minTasks"`
		Replicas                 int     `json:"replicas"`
		CanaryWorkers            int     `json:"canaryWorkers"`
		HeartbeatIntervalSeconds float64 `json:"heartbeatIntervalSeconds"`
		CanaryTaskEveryMs        int64   `json:"canaryTaskEveryMs"`
		StableTaskEveryMs        int64   `json:"stableTaskEveryMs"`
		SteadyForSeconds         float64 `json:"steadyForSeconds"`
		SettleSeconds            float64 `json:"settleSeconds"`
	} `json:"params"`
	Verdict struct {
		GoalMs float64      `json:"goalMs"`
		P50Ms  float64      `json:"p50Ms"`
		P99Ms  float64      `json:"p99Ms"`
		MaxMs  float64      `json:"maxMs"`
		Runs   []verdictRun `json:"runs"`
	} `json:"verdictLatency"`
	Steady struct {
		NoCanary steadyPhase `json:"noCanary"`
		Canary   steadyPhase `json:"canary"`
	} `json:"steadyState"`
}

type machine struct {
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memoryBytes"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	GoVersion   string `json:"goVersion"`
}

func newResults(runs, minTasks int, steadyFor time.Duration) *results {
	r := &results{Bench: "canary", Date: time.Now().UTC().Format(time.RFC3339),
		Machine: machine{Cores: runtime.NumCPU(), MemoryBytes: benchmetrics.MemTotal(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()}}
	r.Params.Runs, r.Params.MinTasks, r.Params.Replicas, r.Params.CanaryWorkers = runs, minTasks, replicas, 1
	r.Params.HeartbeatIntervalSeconds = interval.Seconds()
	r.Params.CanaryTaskEveryMs, r.Params.StableTaskEveryMs = canaryTaskEvery.Milliseconds(), stableTaskEvery.Milliseconds()
	r.Params.SteadyForSeconds, r.Params.SettleSeconds = steadyFor.Seconds(), settle.Seconds()
	r.Verdict.GoalMs = 1000
	return r
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
