package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

const (
	// eventWorkerReplaced is the reason of the Event for each replacement (controllers/fleet): this
	// package reads the operator as its users do, through the API server.
	eventWorkerReplaced = "WorkerReplaced"
	// operatorStartLine is what cmd/manager logs once per start.
	operatorStartLine = "Starting the AgentFleet operator"
)

// The restart ledger survives an operator killed (SIGKILL, at the API boundary, no hook in the
// operator) between the two writes of a replacement, in a crash loop: the replacements made never
// exceed maxRestarts in the window, every replaced worker is recorded, and none twice.
//
// The operator runs behind a fault proxy armed for the first two handovers (workersToDelete): the
// first kills it before the handover reaches the API server (recorded, not handed over), the
// second just after (handed over, and the operator never learns it). Either order of the two
// writes dies between them once; a ledger written first survives both.
func TestRestartLedgerSurvivesSIGKILL(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	const (
		operator    = "ledger-operator"
		shared      = "agentfleet-operator"
		maxRestarts = 3
	)

	// The shared operator would reconcile this test's fleet too, unhurt by the proxy: it stops
	// while this one runs, and starts again after.
	if err := c.StopPart(shared); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.RestartPart(context.Background(), shared); err != nil {
			t.Errorf("starting the shared operator again: %v", err)
		}
	})
	proxy := startFaultProxy(t, c.Config, c.LogPath("faultproxy"), func() (int, error) {
		return c.KillPart(operator, 10*time.Second)
	})
	kubeconfig := proxy.kubeconfig(t, filepath.Join(c.Dir, operator+".kubeconfig"))
	if err := c.StartOperatorWith(ctx, operator, filepath.Join(c.Dir, "manager"), cluster.OperatorOptions{Kubeconfig: kubeconfig}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.StopPart(operator); err != nil {
			t.Error(err)
		}
	})
	logs := fmt.Sprintf("operator log: %s; proxy log: %s", c.LogPath(operator), c.LogPath("faultproxy"))

	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("ledger", ns).Replicas(3).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To[int32](maxRestarts), WindowSeconds: 3600}
	}))
	ledgerWait(t, 60*time.Second, "the fleet Ready", logs, func(ctx context.Context) (bool, string, error) {
		cond, f := fleetCondition(ctx, key, v1alpha1.ConditionReady)
		if cond == nil {
			return false, fmt.Sprintf("no current status (fleet found: %t)", f != nil), nil
		}
		return cond.Status == metav1.ConditionTrue, cond.Reason + ": " + cond.Message, nil
	})

	deletedSoFar, deletedWorkers := watchDeletedWorkers(t, ns, key.Name, 5*time.Minute)
	proxy.arm(killBeforeForward, killAfterForward)
	ledgerWait(t, 180*time.Second, "the fleet Degraded with RestartBudgetExhausted", logs, func(ctx context.Context) (bool, string, error) {
		if !c.Running(operator) {
			// Killed by the proxy: started again, as a Deployment's pod would be.
			if err := c.RestartPart(ctx, operator); err != nil {
				return false, "", err
			}
		}
		if err := crashNextWorker(ctx, key); err != nil {
			return false, "", err
		}
		cond, f := fleetCondition(ctx, key, v1alpha1.ConditionDegraded)
		if cond == nil {
			return false, "no current status", nil
		}
		return cond.Status == metav1.ConditionTrue && cond.Reason == v1alpha1.ReasonRestartBudgetExhausted,
			fmt.Sprintf("Degraded=%s/%s %s; restarts %+v; kills %d", cond.Status, cond.Reason, cond.Message, f.Status.Restarts, len(proxy.killed())), nil
	})
	// Every worker crashes now; for a while, none may be replaced any more.
	for _, p := range agentPods(t, key.Namespace, key.Name) {
		if podReady(&p) {
			if err := c.CrashLoop(ctx, client.ObjectKeyFromObject(&p), "ray-worker", 3); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A record whose handover a kill cut off is handed over by the next process, without a new
	// record: nothing else deletes workers here, so every recorded worker ends up replaced.
	ledgerWait(t, 30*time.Second, "every recorded worker handed over to KubeRay", logs, func(ctx context.Context) (bool, string, error) {
		if !c.Running(operator) {
			if err := c.RestartPart(ctx, operator); err != nil {
				return false, "", err
			}
		}
		recorded := sets.New[string]()
		for _, r := range getFleet(t, key).Status.RecentRestarts {
			recorded.Insert(r.Worker)
		}
		missing := recorded.Difference(sets.New(deletedSoFar()...))
		return missing.Len() == 0, fmt.Sprintf("recorded, not deleted: %v", sets.List(missing)), nil
	})
	// Then, for a while, with every worker crashing, none may be replaced any more (a bound on
	// "never", which a test cannot wait for).
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !c.Running(operator) {
			if err := c.RestartPart(ctx, operator); err != nil {
				t.Fatal(err)
			}
		}
	}
	deleted := deletedWorkers()

	f := getFleet(t, key)
	recorded := sets.New[string]()
	for _, r := range f.Status.RecentRestarts {
		if recorded.Has(r.Worker) {
			t.Errorf("worker %s recorded twice in status.recentRestarts: %+v", r.Worker, f.Status.RecentRestarts)
		}
		recorded.Insert(r.Worker)
	}
	if n := len(f.Status.RecentRestarts); n > maxRestarts {
		t.Errorf("%d replacements recorded in the window, budget %d: %+v", n, maxRestarts, f.Status.RecentRestarts)
	}
	if got, want := int(f.Status.Restarts.Crashed), len(f.Status.RecentRestarts); got != want {
		t.Errorf("status.restarts.crashed = %d, want %d (the replacements recorded)", got, want)
	}
	if len(deleted) > maxRestarts {
		t.Errorf("%d workers replaced (deleted by KubeRay): %v; the budget is %d", len(deleted), deleted, maxRestarts)
	}
	for _, w := range deleted {
		if !recorded.Has(w) {
			t.Errorf("worker %s was replaced but has no restart record: the ledger under-counts (recorded %v)", w, sets.List(recorded))
		}
	}
	for _, w := range sets.List(recorded.Difference(sets.New(deleted...))) {
		t.Errorf("worker %s recorded as replaced but never handed over to KubeRay (deleted: %v)", w, deleted)
	}

	kills := proxy.killed()
	if len(kills) != 2 {
		t.Errorf("the proxy killed the operator %d times, want 2: %+v (%s)", len(kills), kills, logs)
	}
	inFlight := sets.New[string]() // workers named in a killed handover
	current := c.Pids()[operator]
	for _, k := range kills {
		inFlight.Insert(k.Workers...)
		if err := syscall.Kill(k.Pid, 0); k.Pid == current || !errors.Is(err, syscall.ESRCH) {
			t.Errorf("killed operator pid %d still there (signal 0: %v; running: pid %d)", k.Pid, err, current)
		}
	}
	log, err := os.ReadFile(c.LogPath(operator))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(string(log), operatorStartLine), 1+len(kills); got != want {
		t.Errorf("the operator's log shows %d starts, want %d (one, and one after each kill): %s", got, want, c.LogPath(operator))
	}

	// Events are best effort: the recorder sends them from a queue a SIGKILL loses, so an Event
	// may be missing for a replacement in a killed handover, and for no other.
	atLeast := len(f.Status.RecentRestarts) - recorded.Intersection(inFlight).Len()
	var events int
	ledgerWait(t, 10*time.Second, fmt.Sprintf("at least %d %s Events", atLeast, eventWorkerReplaced), logs, func(ctx context.Context) (bool, string, error) {
		var err error
		events, err = countEvents(ctx, key, eventWorkerReplaced)
		return err == nil && events >= atLeast, fmt.Sprintf("%d (%v)", events, err), nil
	})
	if events > len(f.Status.RecentRestarts) {
		t.Errorf("%d %s Events for %d replacements recorded", events, eventWorkerReplaced, len(f.Status.RecentRestarts))
	}
	t.Logf("recorded %v; deleted %v; kills %+v; %d %s Events", sets.List(recorded), deleted, kills, events, eventWorkerReplaced)
}

// ledgerWait polls cond every 100 ms until it holds, for at most timeout, failing with what it
// last said and where the logs are; an error from cond fails at once.
func ledgerWait(t *testing.T, timeout time.Duration, what, logs string, cond func(context.Context) (bool, string, error)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, msg, err := cond(ctx)
		last = msg
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: not after %s: %v; last: %s (%s)", what, timeout, err, last, logs)
	}
}

// crashNextWorker puts the newest Ready agent worker of the fleet in CrashLoopBackOff, unless one
// already is: one crash at a time makes each replacement a handover of its own, so that the
// proxy's kills land on different replacements, and each replacement crashes in its turn.
func crashNextWorker(ctx context.Context, key client.ObjectKey) error {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(key.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: key.Name, rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup}); err != nil {
		return fmt.Errorf("listing the workers: %w", err)
	}
	var ready []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
				return nil
			}
		}
		if podReady(&p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	newest := slices.MaxFunc(ready, func(a, b corev1.Pod) int {
		if n := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); n != 0 {
			return n
		}
		return strings.Compare(a.Name, b.Name)
	})
	return c.CrashLoop(ctx, client.ObjectKeyFromObject(&newest), "ray-worker", 3)
}

// watchDeletedWorkers watches the fleet's agent workers, for at most timeout, and returns two
// functions: seen returns the workers seen deleted (or being deleted) so far, sorted; stop stops the
// watch and returns them all, failing the test if the watch ended early. A watch, not polling, so
// that a worker deleted between two looks is seen too.
func watchDeletedWorkers(t *testing.T, ns, fleet string, timeout time.Duration) (seen, stop func() []string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	selector := v1alpha1.LabelFleet + "=" + fleet + ",ray.io/group=agents"
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// The RetryWatcher resumes from the last resourceVersion seen when a watch ends.
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return cs.CoreV1().Pods(ns).Watch(ctx, o)
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		deleted = sets.New[string]()
		errs    []string
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			mu.Lock()
			if pod, ok := ev.Object.(*corev1.Pod); ok && (ev.Type == watch.Deleted || pod.DeletionTimestamp != nil) {
				deleted.Insert(pod.Name)
			} else if ev.Type == watch.Error {
				errs = append(errs, fmt.Sprintf("%v", ev.Object))
			}
			mu.Unlock()
		}
	}()
	seen = func() []string {
		mu.Lock()
		defer mu.Unlock()
		return sets.List(deleted)
	}
	stop = func() []string {
		expired := ctx.Err() != nil
		cancel()
		w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if expired || len(errs) > 0 {
			t.Fatalf("the watch of the workers ended early (after %s: %t; errors: %v): deletions may be missed", timeout, expired, errs)
		}
		return sets.List(deleted)
	}
	t.Cleanup(func() { cancel(); w.Stop() })
	return seen, stop
}

// countEvents counts the Events of a reason about a fleet (an Event repeated counts each time).
func countEvents(ctx context.Context, key client.ObjectKey, reason string) (int, error) {
	var events corev1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(key.Namespace), client.MatchingFields{"involvedObject.name": key.Name, "reason": reason}); err != nil {
		return 0, fmt.Errorf("listing Events: %w", err)
	}
	n := 0
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == v1alpha1.Kind {
			n += max(int(e.Count), 1)
		}
	}
	return n, nil
}
