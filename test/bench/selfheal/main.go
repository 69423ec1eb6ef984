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
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/sdk/go/heartbeat"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

func main() {
	injections := flag.Int("injections", 50, "injections per reason")
	workers := flag.Int("workers", 1000, "workers heartbeating in the load run")
	interval := flag.Int("interval", 10, "heartbeat interval of the load run, seconds")
	loadFor := flag.Duration("load-for", 60*time.Second, "how long the load run is measured")
	flag.Parse()
	if err := run(*injections, *workers, *interval, *loadFor); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type bench struct {
	c   *cluster.Cluster
	k8s client.WithWatch
	cs  kubernetes.Interface
}

func run(injections, workers, interval int, loadFor time.Duration) error {
	ctx := context.Background()
	crds, err := cluster.RepoPath("config/crd/bases")
	if err != nil {
		return err
	}
	nodes := []cluster.Node{}
	for i := range 8 {
		nodes = append(nodes, cluster.Node{Name: fmt.Sprintf("cpu-%d", i), CPU: "2000", Memory: "8Ti"})
	}
	c, err := cluster.Start(ctx, cluster.Options{CRDDirectoryPaths: []string{crds}, Nodes: nodes})
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()
	manager := filepath.Join(c.Dir, "manager")
	if out, err := exec.Command("go", "build", "-o", manager, "github.com/agentfleet/agentfleet/cmd/manager").CombinedOutput(); err != nil {
		return fmt.Errorf("building the operator: %w\n%s", err, out)
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

	fmt.Printf("Detection-to-replacement latency, %d injections per reason (goal: p99 <= 250ms)\n", injections)
	for _, reason := range []string{"Crashed", "Stalled", "Looping"} {
		lat, err := b.latency(ctx, reason, injections)
		if err != nil {
			return fmt.Errorf("%s: %w", reason, err)
		}
		fmt.Printf("  %-8s p50 %6.0f ms   p99 %6.0f ms   max %6.0f ms   (n=%d)\n", reason, pct(lat, 50), pct(lat, 99), pct(lat, 100), len(lat))
	}
	return b.load(ctx, workers, interval, loadFor)
}

// fleet creates a fleet with a heartbeat and waits for its workers to be Ready.
func (b *bench) fleet(ctx context.Context, name string, replicas, interval, deadline int32) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"}}
	if err := b.k8s.Create(ctx, ns); err != nil {
		return "", err
	}
	f := builder.MakeAgentFleet(name, ns.Name).Replicas(replicas).Heartbeat(interval, deadline, 5, 100000).Mutate(func(f *v1alpha1.AgentFleet) {
		f.UID, f.Generation = "", 0
		f.Spec.Worker.CPU, f.Spec.Worker.Memory = ptr.To(resourceQuantity("100m")), ptr.To(resourceQuantity("128Mi"))
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To(int32(100000)), WindowSeconds: 10}
	}).Obj()
	if err := b.k8s.Create(ctx, f); err != nil {
		return "", err
	}
	deadlineAt := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadlineAt) {
		if pods := b.readyPods(ctx, ns.Name, name); len(pods) >= int(replicas) {
			return ns.Name, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return "", fmt.Errorf("fleet %s: %d workers not Ready after 10 minutes", name, replicas)
}

func (b *bench) readyPods(ctx context.Context, ns, fleet string) []string {
	var pods corev1.PodList
	if err := b.k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelFleet: fleet, "ray.io/group": "agents"}); err != nil {
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
func (b *bench) requested(ctx context.Context, ns, name string) (func(pod string, timeout time.Duration) (time.Time, error), func()) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	seen := map[string]time.Time{}
	var rcs rayv1.RayClusterList
	w, err := b.k8s.Watch(ctx, &rcs, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
	if err == nil {
		go func() {
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
	}
	wait := func(pod string, timeout time.Duration) (time.Time, error) {
		end := time.Now().Add(timeout)
		for time.Now().Before(end) {
			mu.Lock()
			t, ok := seen[pod]
			mu.Unlock()
			if ok {
				return t, nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Time{}, fmt.Errorf("worker %s not replaced after %s (operator log: %s)", pod, timeout, b.c.LogPath("agentfleet-operator"))
	}
	return wait, func() { cancel(); w.Stop() }
}

func (b *bench) latency(ctx context.Context, reason string, n int) ([]float64, error) {
	name := strings.ToLower(reason)
	const interval, deadline = 1, 3
	ns, err := b.fleet(ctx, name, int32(n), interval, deadline)
	if err != nil {
		return nil, err
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
			hb := heartbeat.New(b.cs, ns, name, p, time.Duration(interval)*time.Second)
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
					_ = hb.Step(action)
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
	wait, stop := b.requested(ctx, ns, name)
	defer stop()
	// The fleet goes when measured, so that it does not load the next measurement.
	defer func() {
		_ = b.k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}()

	var lat []float64
	for _, p := range pods {
		var evidence time.Time
		switch reason {
		case "Crashed":
			// The evidence exists once the kubelet's (here: the test's) status write is done.
			if err := b.c.FailContainer(ctx, client.ObjectKey{Namespace: ns, Name: p}, "ray-worker", 1); err != nil {
				return nil, err
			}
			evidence = time.Now()
		case "Stalled":
			mu.Lock()
			cancels[p]()
			mu.Unlock()
			lease, err := b.cs.CoordinationV1().Leases(ns).Get(ctx, p, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			// The deadline passes first for the last step when working, else for the last renewal.
			last := lease.Spec.RenewTime.Time
			if step, err := time.Parse(time.RFC3339Nano, lease.Annotations[heartbeat.AnnotationLastStepTime]); err == nil && step.Before(last) {
				last = step
			}
			evidence = last.Add(deadline * time.Second)
		case "Looping":
			// The evidence is the Lease write that carries the 5th repeat.
			loopers.Store(p, true)
			evidence = b.waitRepeats(ctx, ns, p, 5)
		}
		at, err := wait(p, 30*time.Second)
		if err != nil {
			return nil, err
		}
		lat = append(lat, float64(at.Sub(evidence).Milliseconds()))
		time.Sleep(100 * time.Millisecond)
	}
	return lat, nil
}

// waitRepeats returns when the worker's Lease is seen with at least repeats repeats.
func (b *bench) waitRepeats(ctx context.Context, ns, pod string, repeats int) time.Time {
	for {
		lease, err := b.cs.CoordinationV1().Leases(ns).Get(ctx, pod, metav1.GetOptions{})
		if err == nil {
			if n, _ := strconv.Atoi(lease.Annotations[heartbeat.AnnotationActionRepeats]); n >= repeats {
				return lease.Spec.RenewTime.Time
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// load runs workers heartbeating every interval and reports the operator's CPU and API requests.
func (b *bench) load(ctx context.Context, workers, interval int, loadFor time.Duration) error {
	fmt.Printf("\nLoad: %d workers heartbeating every %ds (goal: <= 1 API write per worker per interval)\n", workers, interval)
	start := time.Now()
	ns, err := b.fleet(ctx, "load", int32(workers), int32(interval), int32(interval*6))
	if err != nil {
		return err
	}
	fmt.Printf("  %d workers Ready in %s\n", workers, time.Since(start).Round(time.Second))
	agentCtx, stop := context.WithCancel(ctx)
	defer stop()
	var clients []*heartbeat.Client
	for _, p := range b.readyPods(ctx, ns, "load") {
		hb := heartbeat.New(b.cs, ns, "load", p, time.Duration(interval)*time.Second)
		if err := hb.Start(agentCtx); err != nil {
			return err
		}
		clients = append(clients, hb)
		go func() {
			for i := 0; agentCtx.Err() == nil; i++ {
				_ = hb.Step(fmt.Sprintf("step %d", i))
				time.Sleep(time.Second) // ten steps per interval: coalesced into one write
			}
		}()
	}
	time.Sleep(time.Duration(interval) * time.Second) // past the first writes
	var writes0 int64
	for _, hb := range clients {
		writes0 += hb.Writes()
	}
	cpu0, err := b.operatorCPU()
	if err != nil {
		return err
	}
	req0, err := b.operatorRequests()
	if err != nil {
		return err
	}
	time.Sleep(loadFor)
	cpu1, _ := b.operatorCPU()
	req1, _ := b.operatorRequests()
	var writes1 int64
	for _, hb := range clients {
		writes1 += hb.Writes()
	}
	secs := loadFor.Seconds()
	agentWrites := float64(writes1-writes0) / secs
	fmt.Printf("  agent Lease writes:   %.1f/s = %.2f per worker per interval\n", agentWrites, agentWrites*float64(interval)/float64(len(clients)))
	fmt.Printf("  operator CPU:         %.1f%% of one core\n", 100*(cpu1-cpu0)/secs)
	for _, kind := range []string{"read", "write", "PATCH", "PUT", "POST", "DELETE"} {
		n := req1[kind] - req0[kind]
		fmt.Printf("  operator API %-7s %.2f/s\n", kind+":", n/secs)
	}
	return nil
}

// operatorCPU is the operator process's user+system CPU seconds.
func (b *bench) operatorCPU() (float64, error) {
	pid := b.c.Pids()["agentfleet-operator"]
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// operatorRequests sums client-go's rest_client_requests_total of the operator, reads and writes.
func (b *bench) operatorRequests() (map[string]float64, error) {
	resp, err := http.Get(b.c.MetricsURL("agentfleet-operator"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "rest_client_requests_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		if strings.Contains(line, `method="GET"`) {
			out["read"] += v
		} else {
			out["write"] += v
			for _, m := range []string{"PATCH", "PUT", "POST", "DELETE"} {
				if strings.Contains(line, `method="`+m+`"`) {
					out[m] += v
				}
			}
		}
	}
	return out, sc.Err()
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func pct(v []float64, p int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (p*len(s) + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}
