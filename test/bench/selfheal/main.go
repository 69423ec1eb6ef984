// Command selfheal measures the supervisor on the local cluster with the real KubeRay operator and
// the operator as a process (`make bench`):
//
//   - detection-to-replacement latency, per reason, over N injections each: from the evidence (a
//     crashed container's status written; a stalled worker's deadline passing; a looping worker's
//     Lease written) to the worker appearing in the RayCluster's workersToDelete;
//   - the operator's CPU and API requests per second while W workers heartbeat every I seconds.
//
// Goals (issue 5): replacement requested within 250 ms of the evidence or the deadline; at most one
// API write per worker per interval in all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/sdk/go/heartbeat"
	"github.com/agentfleet/agentfleet/test/bench/internal/benchmetrics"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

func main() {
	injections := flag.Int("injections", 50, "injections per reason")
	workers := flag.Int("workers", 1000, "workers heartbeating in the load run")
	interval := flag.Int("interval", 10, "heartbeat interval of the load run, seconds")
	loadFor := flag.Duration("load-for", 60*time.Second, "how long the load run is measured")
	background := flag.Int("background-fleets", 0, "fleets of 4 workers (no heartbeat) Ready before and during the latency runs: self-healing under load")
	timeout := flag.Duration("timeout", 90*time.Minute, "the whole run's deadline: every wait ends by then at the latest")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	err := run(ctx, *injections, *workers, *interval, *loadFor, *background)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// How long each wait of the bench may take: none is unbounded, and all end with the -timeout
// context at the latest.
const (
	buildTimeout   = 10 * time.Minute       // building the operator
	readyTimeout   = 10 * time.Minute       // a fleet's workers all Ready
	replaceTimeout = 30 * time.Second       // a worker in workersToDelete after its evidence
	repeatsTimeout = 30 * time.Second       // a looping agent's Lease showing the repeats
	scrapeTimeout  = 10 * time.Second       // one read of the operator's metrics
	pollEvery      = 5 * time.Millisecond   // how often the latency waits look: well under the 250 ms goal
	readyEvery     = 500 * time.Millisecond // how often fleet readiness is looked at
)

type bench struct {
	c   *cluster.Cluster
	k8s client.WithWatch
	cs  kubernetes.Interface
}

func run(ctx context.Context, injections, workers, interval int, loadFor time.Duration, background int) error {
	crds, err := cluster.RepoPath("config/crd/bases")
	if err != nil {
		return err
	}
	nodes := []cluster.Node{}
	// Room for the background fleets too: a fake node holds 250 pods.
	for i := range 8 + (background*5+249)/250 {
		nodes = append(nodes, cluster.Node{Name: fmt.Sprintf("cpu-%d", i), CPU: "2000", Memory: "8Ti"})
	}
	c, err := cluster.Start(ctx, cluster.Options{CRDDirectoryPaths: []string{crds}, Nodes: nodes})
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()
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
	_ = v1alpha1.AddToScheme(scheme)
	k8s, err := client.NewWithWatch(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	b := &bench{c: c, k8s: k8s, cs: cs}

	if background > 0 {
		start := time.Now()
		if err := b.backgroundFleets(ctx, background); err != nil {
			return err
		}
		fmt.Printf("%d background fleets of 4 workers Ready in %.1f s; they run through the latency measurements\n", background, time.Since(start).Seconds())
	}
	fmt.Printf("Detection-to-replacement latency, %d injections per reason (goal: p99 <= 250ms to the request)\n", injections)
	for _, reason := range []string{"Crashed", "Stalled", "Looping"} {
		// A fleet takes at most the largest restart budget's worth of injections: more go to
		// further fleets.
		var lat, ready []float64
		for left := injections; left > 0; left -= v1alpha1.MaxRecentRestarts {
			l, r, err := b.latency(ctx, reason, min(left, v1alpha1.MaxRecentRestarts))
			if err != nil {
				return fmt.Errorf("%s: %w", reason, err)
			}
			lat, ready = append(lat, l...), append(ready, r...)
		}
		fmt.Printf("  %-8s to the request p50 %6.0f ms   p99 %6.0f ms   max %6.0f ms;   to the replacement Ready p50 %6.0f ms   p99 %6.0f ms   (n=%d)\n", reason,
			benchmetrics.Percentile(lat, 50), benchmetrics.Percentile(lat, 99), benchmetrics.Percentile(lat, 100),
			benchmetrics.Percentile(ready, 50), benchmetrics.Percentile(ready, 99), len(lat))
		if reason == "Stalled" {
			fmt.Printf("  (stalls whose agent's last write landed after it was stopped: %d of %d; measured from the Lease as it settled)\n", lateWrites.Load(), len(lat))
		}
	}
	return b.load(ctx, workers, interval, loadFor)
}

// fleet creates a fleet with a heartbeat and waits for its workers to be Ready.
func (b *bench) fleet(ctx context.Context, name string, replicas, interval, deadline int32, mutate ...func(*v1alpha1.AgentFleet)) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"}}
	if err := b.k8s.Create(ctx, ns); err != nil {
		return "", err
	}
	f := builder.MakeAgentFleet(name, ns.Name).Replicas(replicas).Heartbeat(interval, deadline, 5, 100000).Mutate(func(f *v1alpha1.AgentFleet) {
		f.UID, f.Generation = "", 0
		f.Spec.Worker.CPU, f.Spec.Worker.Memory = ptr.To(resourceQuantity("100m")), ptr.To(resourceQuantity("128Mi"))
		// The largest budget there is, in the shortest window: the bench measures replacement, not
		// the budget (run checks that the injections fit in it).
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To(int32(v1alpha1.MaxRecentRestarts)), WindowSeconds: 10}
		for _, m := range mutate {
			m(f)
		}
	}).Obj()
	if err := b.k8s.Create(ctx, f); err != nil {
		return "", err
	}
	err := wait.PollUntilContextTimeout(ctx, readyEvery, readyTimeout, true, func(ctx context.Context) (bool, error) {
		return len(b.readyPods(ctx, ns.Name, name)) >= int(replicas), nil
	})
	if err != nil {
		return "", fmt.Errorf("fleet %s: %d workers not Ready within %s: %w", name, replicas, readyTimeout, err)
	}
	return ns.Name, nil
}

func (b *bench) readyPods(ctx context.Context, ns, fleet string) []string {
	var pods corev1.PodList
	if err := b.k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelFleet: fleet, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup}); err != nil {
		return nil
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				names = append(names, p.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// requested watches the fleet's RayCluster and reports when each worker first appears in
// workersToDelete.
func (b *bench) requested(ctx context.Context, ns, name string) (func(pod string) (time.Time, error), func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	seen := map[string]time.Time{}
	watching := true
	var rcs rayv1.RayClusterList
	w, err := b.k8s.Watch(ctx, &rcs, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("watching RayCluster %s/%s: %w", ns, name, err)
	}
	go func() {
		defer func() {
			mu.Lock()
			watching = false
			mu.Unlock()
		}()
		for ev := range w.ResultChan() {
			rc, ok := ev.Object.(*rayv1.RayCluster)
			if !ok {
				continue
			}
			now := time.Now()
			mu.Lock()
			for _, g := range rc.Spec.WorkerGroupSpecs {
				for _, p := range g.ScaleStrategy.WorkersToDelete {
					if _, ok := seen[p]; !ok {
						seen[p] = now
					}
				}
			}
			mu.Unlock()
		}
	}()
	waitFor := func(pod string) (time.Time, error) {
		var at time.Time
		err := wait.PollUntilContextTimeout(ctx, pollEvery, replaceTimeout, true, func(context.Context) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			t, ok := seen[pod]
			if !ok && !watching {
				return false, errors.New("the RayCluster watch ended")
			}
			at = t
			return ok, nil
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("worker %s not replaced within %s (operator log: %s): %w", pod, replaceTimeout, b.c.LogPath("agentfleet-operator"), err)
		}
		return at, nil
	}
	return waitFor, func() { cancel(); w.Stop() }, nil
}

func (b *bench) latency(ctx context.Context, reason string, n int) (requested, replaced []float64, err error) {
	name := strings.ToLower(reason)
	const interval, deadline = 1, 3
	ns, err := b.fleet(ctx, name, int32(n), interval, deadline)
	if err != nil {
		return nil, nil, err
	}
	agents, err := b.agentClient(ctx, ns, name)
	if err != nil {
		return nil, nil, err
	}
	// An agent for every Ready worker, replacements included, stepping every 200 ms.
	agentCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	var mu sync.Mutex
	cancels := map[string]context.CancelFunc{}
	var loopers sync.Map
	startAgents := func() {
		for _, p := range b.readyPods(agentCtx, ns, name) {
			mu.Lock()
			_, running := cancels[p]
			mu.Unlock()
			if running {
				continue
			}
			hb := heartbeat.New(agents, ns, name, p, time.Duration(interval)*time.Second)
			actx, cancel := context.WithCancel(agentCtx)
			if err := hb.Start(actx); err != nil {
				cancel()
				continue
			}
			mu.Lock()
			cancels[p] = cancel
			mu.Unlock()
			go func() {
				for i := 0; actx.Err() == nil; i++ {
					action := fmt.Sprintf("step %d", i)
					if _, ok := loopers.Load(p); ok {
						action = "the same action"
					}
					_ = hb.Step(actx, action)
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}
	}
	startAgents()
	pods := b.readyPods(ctx, ns, name)[:n]
	go func() {
		for agentCtx.Err() == nil {
			startAgents()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second)
	waitFor, stop, err := b.requested(ctx, ns, name)
	if err != nil {
		return nil, nil, err
	}
	defer stop()
	// The fleet goes when measured, so that it does not load the next measurement.
	defer func() {
		_ = b.k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}()

	var lat, replacedAt []float64
	for _, p := range pods {
		var evidence time.Time
		switch reason {
		case "Crashed":
			// The evidence exists once the kubelet's (here: the test's) status write is done.
			if err := b.c.FailContainer(ctx, client.ObjectKey{Namespace: ns, Name: p}, "ray-worker", 1); err != nil {
				return nil, nil, err
			}
			evidence = time.Now()
		case "Stalled":
			// Its agent may not have started yet on a busy machine (a nil cancel panicked here
			// once): wait for it, so that the stall is of an agent that renewed.
			var cancel context.CancelFunc
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				cancel = cancels[p]
				return cancel != nil, nil
			})
			if err != nil {
				return nil, nil, fmt.Errorf("the agent of %s/%s did not start: %w", ns, p, err)
			}
			cancel()
			// The Lease as read at once can be older than the agent's last write: a renewal or a
			// step already sent when it stopped lands a moment later, and moves the deadline by up
			// to an interval: the bench's evidence, not the operator's detection, is then late by up
			// to 1 s (the likeliest cause of the one Stalled sample near 1 s in an earlier run; such
			// late writes are counted and printed now). The evidence is the Lease once it stopped
			// changing for longer than an interval.
			first, err := b.stallDeadline(ctx, ns, p, deadline*time.Second)
			if err != nil {
				return nil, nil, err
			}
			if evidence, err = b.settledStallDeadline(ctx, ns, p, deadline*time.Second, time.Duration(interval)*time.Second*3/2); err != nil {
				return nil, nil, err
			}
			if shift := evidence.Sub(first); shift > 0 {
				lateWrites.Add(1)
				fmt.Printf("  %s: the agent's last write landed after it was stopped: deadline %s later than the Lease read at once\n", p, shift.Round(time.Millisecond))
			}
		case "Looping":
			// The evidence is the Lease write that carries the 5th repeat.
			loopers.Store(p, true)
			if evidence, err = b.waitRepeats(ctx, ns, p, 5); err != nil {
				return nil, nil, err
			}
		}
		at, err := waitFor(p)
		if err != nil {
			return nil, nil, err
		}
		lat = append(lat, float64(at.Sub(evidence).Milliseconds()))
		// And until KubeRay's replacement is Ready: n Ready workers again, without this one.
		var readyAt time.Time
		err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
			pods := b.readyPods(ctx, ns, name)
			readyAt = time.Now()
			return len(pods) >= n && !slices.Contains(pods, p), nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("the replacement of %s/%s not Ready: %w", ns, p, err)
		}
		replacedAt = append(replacedAt, float64(readyAt.Sub(evidence).Milliseconds()))
		time.Sleep(100 * time.Millisecond)
	}
	return lat, replacedAt, nil
}

// waitRepeats returns the renewal time of the worker's Lease once it is seen with at least repeats
// repeats.
func (b *bench) waitRepeats(ctx context.Context, ns, pod string, repeats int) (time.Time, error) {
	var at time.Time
	err := wait.PollUntilContextTimeout(ctx, pollEvery, repeatsTimeout, true, func(ctx context.Context) (bool, error) {
		lease, err := b.cs.CoordinationV1().Leases(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // a failed read is retried until the deadline
		}
		n, _ := strconv.Atoi(lease.Annotations[heartbeatapi.AnnotationActionRepeats])
		if n < repeats || lease.Spec.RenewTime == nil {
			return false, nil
		}
		at = lease.Spec.RenewTime.Time
		return true, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("the Lease of %s/%s: %d repeats not seen within %s: %w", ns, pod, repeats, repeatsTimeout, err)
	}
	return at, nil
}

// agentClient is the client the bench's agents of a fleet heartbeat with: as the fleet's worker
// ServiceAccount, through the Role the operator gives it, as real workers do. They share it, and
// its rate limits are set for all of them.
func (b *bench) agentClient(ctx context.Context, ns, fleet string) (kubernetes.Interface, error) {
	f := &v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet, Namespace: ns}}
	cfg, err := b.c.ServiceAccountConfig(ctx, ns, rayspecs.HeartbeatServiceAccount(f), nil)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 2000, 4000
	return kubernetes.NewForConfig(cfg)
}

// load runs workers heartbeating every interval and reports the operator's CPU and API requests.
func (b *bench) load(ctx context.Context, workers, interval int, loadFor time.Duration) error {
	fmt.Printf("\nLoad: %d workers heartbeating every %ds (goal: <= 1 API write per worker per interval)\n", workers, interval)
	start := time.Now()
	ns, err := b.fleet(ctx, "load", int32(workers), int32(interval), int32(interval*6), func(f *v1alpha1.AgentFleet) {
		// Budgets that are never reached, so that the ledger's budget paths run at every event.
		f.Spec.Budgets = &v1alpha1.BudgetsSpec{
			MaxTokens: ptr.To(int64(1) << 40), MaxDurationSeconds: ptr.To(int32(86400)), MaxCost: "1000000",
			MaxTokensPerHour: ptr.To(int64(1) << 50), MaxCostPerDay: "1000000000",
		}
	})
	if err != nil {
		return err
	}
	fmt.Printf("  %d workers Ready in %s\n", workers, time.Since(start).Round(time.Second))
	agents, err := b.agentClient(ctx, ns, "load")
	if err != nil {
		return err
	}
	agentCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Two phases over the same agents: heartbeats alone (a step a second, a task ended every 20
	// steps), then the same with the tokens of every step and the task's outcome reported (the
	// ledger's work): both end their tasks alike, so the writes compare.
	var withTokens atomic.Bool
	var clients []*heartbeat.Client
	for _, p := range b.readyPods(ctx, ns, "load") {
		hb := heartbeat.New(agents, ns, "load", p, time.Duration(interval)*time.Second)
		if err := hb.Start(agentCtx); err != nil {
			return err
		}
		clients = append(clients, hb)
		go func() {
			for i := 0; agentCtx.Err() == nil; i++ {
				_ = hb.Step(agentCtx, fmt.Sprintf("step %d", i))
				tokens := withTokens.Load()
				if tokens {
					_ = hb.Tokens(agentCtx, 1200, 300)
				}
				if i%20 == 19 {
					if tokens {
						_ = hb.TaskDone(agentCtx, i%40 == 19)
					} else {
						_ = hb.Idle(agentCtx)
					}
				}
				time.Sleep(time.Second) // ten steps per interval: coalesced into one write
			}
		}()
	}
	time.Sleep(time.Duration(interval) * time.Second) // past the first writes
	type phase struct {
		name                string
		agentWrites, cpuPct float64
		requests            map[string]float64
	}
	measure := func(name string) (phase, error) {
		var writes0 int64
		for _, hb := range clients {
			writes0 += hb.Writes()
		}
		m0, err := benchmetrics.Scrape(ctx, b.c.MetricsURL("agentfleet-operator"), scrapeTimeout)
		if err != nil {
			return phase{}, err
		}
		time.Sleep(loadFor)
		m1, err := benchmetrics.Scrape(ctx, b.c.MetricsURL("agentfleet-operator"), scrapeTimeout)
		if err != nil {
			return phase{}, err
		}
		var writes1 int64
		for _, hb := range clients {
			writes1 += hb.Writes()
		}
		secs := loadFor.Seconds()
		ph := phase{name: name, agentWrites: float64(writes1-writes0) / secs, cpuPct: 100 * (m1.CPUSeconds - m0.CPUSeconds) / secs, requests: map[string]float64{}}
		for kind, n := range m1.Requests {
			ph.requests[kind] = (n - m0.Requests[kind]) / secs
		}
		return ph, nil
	}
	plain, err := measure("heartbeats")
	if err != nil {
		return err
	}
	withTokens.Store(true)
	time.Sleep(time.Duration(interval) * time.Second) // every agent past its first report
	tokens, err := measure("with tokens and outcomes")
	if err != nil {
		return err
	}
	for _, ph := range []phase{plain, tokens} {
		fmt.Printf("  %s:\n", ph.name)
		fmt.Printf("    agent Lease writes:   %.1f/s = %.2f per worker per interval\n", ph.agentWrites, ph.agentWrites*float64(interval)/float64(len(clients)))
		fmt.Printf("    operator CPU:         %.1f%% of one core\n", ph.cpuPct)
		for _, kind := range []string{"read", "write", "PATCH", "PUT", "POST", "DELETE"} {
			fmt.Printf("    operator API %-7s %.2f/s\n", kind+":", ph.requests[kind])
		}
	}
	fmt.Printf("  the ledger's cost (goal: no extra writes, < 10%% extra CPU): %+.2f operator writes/s, %+.2f agent writes/s, CPU %+.1f%% (%.1f%% -> %.1f%% of one core)\n",
		tokens.requests["write"]-plain.requests["write"], tokens.agentWrites-plain.agentWrites,
		100*(tokens.cpuPct-plain.cpuPct)/max(plain.cpuPct, 1e-9), plain.cpuPct, tokens.cpuPct)
	return nil
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// lateWrites counts the stalls whose agent's last write landed after the agent was stopped.
var lateWrites atomic.Int64

// stallDeadline is when a stopped agent's worker becomes Stalled, from its Lease as read now.
func (b *bench) stallDeadline(ctx context.Context, ns, pod string, deadline time.Duration) (time.Time, error) {
	lease, err := b.cs.CoordinationV1().Leases(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return time.Time{}, err
	}
	at, err := leaseStallDeadline(lease, deadline)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s/%s: %w", ns, pod, err)
	}
	return at, nil
}

// leaseStallDeadline is the deadline after a Lease's last step when working, else after its last
// renewal.
func leaseStallDeadline(lease *coordinationv1.Lease, deadline time.Duration) (time.Time, error) {
	if lease.Spec.RenewTime == nil {
		return time.Time{}, errors.New("the Lease was never renewed")
	}
	last := lease.Spec.RenewTime.Time
	if step, err := time.Parse(heartbeatapi.TimeFormat, lease.Annotations[heartbeatapi.AnnotationLastStepTime]); err == nil && step.Before(last) {
		last = step
	}
	return last.Add(deadline), nil
}

// settledStallDeadline is stallDeadline once the Lease has not changed for quiet (longer than the
// heartbeat interval: a renewing agent would have written within it), or as last read if the
// operator replaced the worker and deleted its Lease meanwhile.
func (b *bench) settledStallDeadline(ctx context.Context, ns, pod string, deadline, quiet time.Duration) (time.Time, error) {
	var version string
	var changed, at time.Time
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, repeatsTimeout, true, func(ctx context.Context) (bool, error) {
		lease, err := b.cs.CoordinationV1().Leases(ns).Get(ctx, pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && version != "" {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if lease.ResourceVersion != version {
			if at, err = leaseStallDeadline(lease, deadline); err != nil {
				return false, fmt.Errorf("%s/%s: %w", ns, pod, err)
			}
			version, changed = lease.ResourceVersion, time.Now()
			return false, nil
		}
		return time.Since(changed) > quiet, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("the Lease of %s/%s never stopped changing: %w", ns, pod, err)
	}
	return at, nil
}

// backgroundFleets makes n fleets of 4 workers without a heartbeat in a namespace of their own and
// waits until all are Ready: the load the latency runs then measure under.
func (b *bench) backgroundFleets(ctx context.Context, n int) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "background-"}}
	if err := b.k8s.Create(ctx, ns); err != nil {
		return err
	}
	for i := range n {
		f := builder.MakeAgentFleet(fmt.Sprintf("bg-%04d", i), ns.Name).Replicas(4).Mutate(func(f *v1alpha1.AgentFleet) {
			f.UID, f.Generation = "", 0
			f.Spec.Worker.CPU, f.Spec.Worker.Memory = ptr.To(resourceQuantity("100m")), ptr.To(resourceQuantity("128Mi"))
		}).Obj()
		if err := b.k8s.Create(ctx, f); err != nil {
			return err
		}
	}
	return wait.PollUntilContextTimeout(ctx, readyEvery, 3*readyTimeout, true, func(ctx context.Context) (bool, error) {
		var fleets v1alpha1.AgentFleetList
		if err := b.k8s.List(ctx, &fleets, client.InNamespace(ns.Name)); err != nil {
			return false, nil //nolint:nilerr // the API server may be busy; look again
		}
		ready := 0
		for _, f := range fleets.Items {
			if apimeta.IsStatusConditionTrue(f.Status.Conditions, v1alpha1.ConditionReady) {
				ready++
			}
		}
		return ready == n, nil
	})
}
