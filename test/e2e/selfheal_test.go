package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/sdk/go/heartbeat"
	"github.com/agentfleet/agentfleet/test/builder"
)

// agents simulates the agent process of every Ready worker of a fleet with the Go heartbeat client:
// each steps with varied actions every 200 ms, unless told to stall, loop or idle. Each heartbeats
// as its pod does: as the fleet's worker ServiceAccount, with a token bound to the pod, so that the
// operator's least-privilege Role is what the e2e heartbeats go through.
type agents struct {
	t          *testing.T
	ns, fleet  string
	interval   time.Duration
	mu         sync.Mutex
	running    map[string]*agent
	failed     map[string]string // pod -> why its agent last failed to start, logged once
	stop       context.CancelFunc
	behaviours map[string]string // pod -> "stall" | "quit" | "loop" | "idle" | "overspend"
	idleAll    bool
	// tasks: every agent finishes a task every third step, reporting tokens and an outcome
	// (reported sums what TaskDone wrote, for the ledger's test).
	tasks    bool
	reported usage.Counts
	// quitting: every agent stops between two steps, and none starts (quitAll).
	quitting bool
	// behaviourOf, when set, gives an agent its behaviour when it starts, from its pod (a canary's
	// workers fail their tasks, say): "fail" (every task fails) or any of behaviours'.
	behaviourOf func(*corev1.Pod) string
	working     sync.WaitGroup
}

type agent struct {
	cancel context.CancelFunc
	hb     *heartbeat.Client
	// stepping: the agent is in a step, which may finish a task it began before it saw a pause.
	stepping bool
}

func simulateAgents(t *testing.T, ns, fleet string, interval time.Duration) *agents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &agents{t: t, ns: ns, fleet: fleet, interval: interval, running: map[string]*agent{}, failed: map[string]string{}, stop: cancel, behaviours: map[string]string{}}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				a.sync(ctx)
			}
		}
	}()
	t.Cleanup(a.close)
	return a
}

func (a *agents) close() {
	a.stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ag := range a.running {
		ag.cancel()
	}
}

// sync starts an agent for each Ready worker without one.
func (a *agents) sync(ctx context.Context) {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(a.ns), client.MatchingLabels{v1alpha1.LabelFleet: a.fleet, v1alpha1.LabelRole: v1alpha1.RoleAgent}); err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// An agent whose pod is gone (replaced, rolled) stops, as its process would.
	exists := map[string]bool{}
	for i := range pods.Items {
		exists[pods.Items[i].Name] = true
	}
	for name, ag := range a.running {
		if !exists[name] {
			ag.cancel()
			delete(a.running, name)
		}
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if _, ok := a.running[p.Name]; ok || !podReady(p) || a.behaviours[p.Name] == "stall" || a.behaviours[p.Name] == "quit" || a.quitting {
			continue
		}
		if a.behaviourOf != nil {
			if b := a.behaviourOf(p); b != "" && a.behaviours[p.Name] == "" {
				a.behaviours[p.Name] = b
			}
		}
		agentCtx, cancel := context.WithCancel(ctx)
		hb, err := a.start(agentCtx, p)
		if err != nil {
			// Tried again at the next tick: the API server's RBAC may not see the operator's
			// RoleBinding yet. An error that lasts is in the log once.
			cancel()
			if msg := err.Error(); a.failed[p.Name] != msg && ctx.Err() == nil {
				a.failed[p.Name] = msg
				a.t.Logf("the agent of %s did not start (retrying): %v", p.Name, err)
			}
			continue
		}
		a.running[p.Name] = &agent{cancel: cancel, hb: hb}
		a.working.Add(1)
		go a.work(agentCtx, p.Name, hb)
	}
}

// start starts the heartbeat of pod's agent as the pod's ServiceAccount, the fleet's worker one.
// The API server issues the pod-bound token only if the pod runs as that ServiceAccount.
func (a *agents) start(ctx context.Context, pod *corev1.Pod) (*heartbeat.Client, error) {
	cfg, err := c.ServiceAccountConfig(ctx, a.ns, workerServiceAccount(a.ns, a.fleet), pod)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	hb := heartbeat.New(cs, a.ns, a.fleet, pod.Name, a.interval)
	return hb, hb.Start(ctx)
}

func (a *agents) work(ctx context.Context, pod string, hb *heartbeat.Client) {
	defer a.working.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a.mu.Lock()
		b, idleAll := a.behaviours[pod], a.idleAll
		if a.quitting {
			b = "quit"
		}
		a.setStepping(pod, true)
		a.mu.Unlock()
		a.step(ctx, pod, hb, i, b, idleAll)
		a.mu.Lock()
		a.setStepping(pod, false)
		a.mu.Unlock()
		if b == "stall" || b == "quit" {
			return
		}
	}
}

// setStepping marks the agent of pod in a step or out of it; a.mu held.
func (a *agents) setStepping(pod string, stepping bool) {
	if ag, ok := a.running[pod]; ok {
		ag.stepping = stepping
	}
}

// step is one step of an agent: what its behaviour, the fleet's pause and the test's settings
// make it do.
func (a *agents) step(ctx context.Context, pod string, hb *heartbeat.Client, i int, b string, idleAll bool) {
	switch {
	case b == "stall":
		return // the process hangs: no step, no renewal
	case b == "quit":
		// The process stops between two steps (what it reported is written) and renews no more.
		a.mu.Lock()
		if ag, ok := a.running[pod]; ok {
			ag.cancel()
		}
		a.mu.Unlock()
		return
	case b == "loop":
		_ = hb.Step(ctx, "search: the same query")
	case b == "overspend":
		// One task that never ends, its tokens growing past any budget.
		_ = hb.Step(ctx, fmt.Sprintf("step %d", i))
		_ = hb.Tokens(ctx, 6000, 0)
	case hb.Paused():
		// As an agent should: no new task while the fleet is paused; keep renewing.
		_ = hb.Idle(ctx)
	case a.tasks && i%3 == 2:
		a.finishTask(ctx, hb, i, b == "fail")
	case idleAll:
		_ = hb.Idle(ctx)
	default:
		_ = hb.Step(ctx, fmt.Sprintf("step %d", i))
	}
}

// finishTask reports the task's tokens and its outcome (one in four fails), and counts what was
// written: TaskDone writes the Lease at once.
func (a *agents) finishTask(ctx context.Context, hb *heartbeat.Client, i int, fail bool) {
	in, out, ok := 100+i, 10+i%7, i%4 != 0 && !fail
	// Tokens records them whether or not it writes; TaskDone writes them with the outcome.
	_ = hb.Tokens(ctx, in, out)
	if err := hb.TaskDone(ctx, ok); err != nil {
		a.t.Logf("TaskDone: %v (its counts reach the Lease with the next write)", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	done := usage.Counts{TokensIn: int64(in), TokensOut: int64(out)}
	if ok {
		done.Succeeded = 1
	} else {
		done.Failed = 1
	}
	a.reported = a.reported.Add(done)
}

// quitAll stops every agent between two steps, as its process would exit (what each reported is
// written), and waits until all have.
func (a *agents) quitAll() {
	a.mu.Lock()
	a.quitting = true
	a.mu.Unlock()
	a.working.Wait()
}

// paused says how many of the running agents see their fleet paused and are between two steps
// (none of those can finish a task until it is resumed), of how many.
func (a *agents) paused() (paused, running int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ag := range a.running {
		running++
		if ag.hb.Paused() && !ag.stepping {
			// Paused and not in a step that may still finish a task begun before it saw the pause.
			paused++
		}
	}
	return paused, running
}

// finished is how many tasks the agents finished so far.
func (a *agents) finished() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reported.Succeeded + a.reported.Failed
}

func (a *agents) set(pod, behaviour string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.behaviours[pod] = behaviour
	if ag, ok := a.running[pod]; ok && behaviour == "stall" {
		ag.cancel()
	}
}

func agentPods(t *testing.T, ns, fleet string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelFleet: fleet, v1alpha1.LabelRole: v1alpha1.RoleAgent}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func healingFleet(t *testing.T, name string, maxRestarts int32) (string, client.ObjectKey, *agents) {
	t.Helper()
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet(name, ns).Replicas(4).Heartbeat(1, 4, 5, 1000).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To(maxRestarts), WindowSeconds: 600}
	}))
	a := simulateAgents(t, ns, name, time.Second)
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	return ns, key, a
}

// waitReplaced waits until pod is gone and the fleet is back to 4 Ready workers.
func waitReplaced(t *testing.T, key client.ObjectKey, pod string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, "worker "+pod+" replaced and 4 Ready again", func(ctx context.Context) (bool, string) {
		pods := agentPods(t, key.Namespace, key.Name)
		ready := 0
		for i := range pods {
			if pods[i].Name == pod {
				return false, pod + " still there"
			}
			if podReady(&pods[i]) {
				ready++
			}
		}
		return ready == 4, fmt.Sprintf("%d Ready", ready)
	})
	return time.Since(start)
}

func TestSelfHealing(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	_, key, a := healingFleet(t, "healing", 20)

	t.Run("the agents' ServiceAccount may keep Leases and nothing else", func(t *testing.T) {
		expectLeasesOnly(t, key.Namespace, key.Name)
	})

	t.Run("a crashed worker is replaced", func(t *testing.T) {
		pod := agentPods(t, key.Namespace, key.Name)[0].Name
		if err := c.FailContainer(ctx, client.ObjectKey{Namespace: key.Namespace, Name: pod}, "ray-worker", 1); err != nil {
			t.Fatal(err)
		}
		took := waitReplaced(t, key, pod, 30*time.Second)
		t.Logf("crashed worker replaced and the fleet back to 4 Ready in %s", took.Round(time.Millisecond))
		eventually(t, 10*time.Second, "restarts.crashed = 1", func(ctx context.Context) (bool, string) {
			f := getFleet(t, key)
			return f.Status.Restarts.Crashed == 1, fmt.Sprintf("%+v", f.Status.Restarts)
		})
	})

	t.Run("a stalled worker is replaced within the deadline and 2s", func(t *testing.T) {
		pod := agentPods(t, key.Namespace, key.Name)[1].Name
		a.set(pod, "stall")
		start := time.Now()
		waitReplaced(t, key, pod, 30*time.Second)
		f := getFleet(t, key)
		var at time.Time
		for _, r := range f.Status.RecentRestarts {
			if r.Worker == pod {
				at = r.Time.Time
			}
		}
		// The Lease was last renewed at most one interval (1 s) before the stall began; the deadline is 4 s.
		if at.IsZero() || at.Sub(start) > 4*time.Second+2*time.Second {
			t.Errorf("stalled worker replaced at %s, %s after it stopped; want within the 4 s deadline + 2 s", at, at.Sub(start))
		}
		if f.Status.Restarts.Stalled != 1 {
			t.Errorf("restarts %+v, want stalled 1", f.Status.Restarts)
		}
	})

	t.Run("a looping worker is replaced", func(t *testing.T) {
		pod := agentPods(t, key.Namespace, key.Name)[2].Name
		a.set(pod, "loop")
		waitReplaced(t, key, pod, 30*time.Second)
		eventually(t, 10*time.Second, "restarts.looping = 1", func(ctx context.Context) (bool, string) {
			f := getFleet(t, key)
			return f.Status.Restarts.Looping == 1, fmt.Sprintf("%+v", f.Status.Restarts)
		})
	})

	t.Run("idle agents for 3x the deadline are left alone", func(t *testing.T) {
		a.mu.Lock()
		a.idleAll = true
		a.mu.Unlock()
		before := getFleet(t, key).Status.Restarts
		time.Sleep(3 * 4 * time.Second)
		if after := getFleet(t, key).Status.Restarts; after != before {
			t.Errorf("restarts went from %+v to %+v while the agents were idle", before, after)
		}
		waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 10*time.Second)
	})
}

// A crash loop across every worker spends the budget: replacements stop and the fleet is Degraded.
func TestCrashLoopExhaustsTheRestartBudget(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	_, key, _ := healingFleet(t, "crashloop", 3)
	crashEverything := func() {
		for _, p := range agentPods(t, key.Namespace, key.Name) {
			if p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Waiting == nil {
				_ = c.CrashLoop(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Name}, "ray-worker", 3)
			}
		}
	}
	eventually(t, 60*time.Second, "the fleet Degraded with RestartBudgetExhausted", func(ctx context.Context) (bool, string) {
		crashEverything() // every replacement crashes too
		cond, f := fleetCondition(ctx, key, v1alpha1.ConditionDegraded)
		if cond == nil {
			return false, "no status"
		}
		return cond.Status == metav1.ConditionTrue && cond.Reason == v1alpha1.ReasonRestartBudgetExhausted,
			fmt.Sprintf("Degraded=%s/%s %s; restarts %+v", cond.Status, cond.Reason, cond.Message, f.Status.Restarts)
	})
	time.Sleep(3 * time.Second)
	crashEverything()
	time.Sleep(2 * time.Second)
	f := getFleet(t, key)
	if f.Status.Restarts.Crashed != 3 {
		t.Errorf("restarts.crashed = %d, want 3: replacement must stop at the budget", f.Status.Restarts.Crashed)
	}
	if f.Status.Phase != v1alpha1.PhaseDegraded {
		t.Errorf("phase %s, want Degraded", f.Status.Phase)
	}
	liveFixture(t, "agentfleet-restart-budget-exhausted", "Degraded", f)
}
