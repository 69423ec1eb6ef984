package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/test/builder"
)

// Budgets from Git, enforced from outside, with simulated agents on the Go client: an agent whose
// task passes maxTokens is replaced as OverBudget; the fleet's tokens passing maxTokensPerHour with
// onExceeded: Pause pause it (Degraded, the agents see Paused() and finish no task) until the
// budget is raised in Git.
func TestBudgets(t *testing.T) {
	needCluster(t)
	ns := namespace(t)
	const name = "budgets"
	const unlimited = int64(1) << 40
	_, key := newFleet(t, builder.MakeAgentFleet(name, ns).Replicas(4).Heartbeat(1, 4, 5, 1000).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Health.RestartBudget = v1alpha1.RestartBudget{MaxRestarts: ptr.To[int32](20), WindowSeconds: 600}
		f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokens: ptr.To[int64](5000), MaxTokensPerHour: ptr.To(unlimited), OnExceeded: v1alpha1.BudgetPause}
	}))
	a := simulateAgents(t, ns, name, time.Second)
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	a.mu.Lock()
	a.tasks = true
	a.mu.Unlock()
	eventually(t, 30*time.Second, "the agents finishing tasks", func(context.Context) (bool, string) {
		n := a.finished()
		return n >= 8, fmt.Sprintf("%d tasks", n)
	})

	// A task over its token budget.
	over := agentPods(t, ns, name)[0].Name
	a.set(over, "overspend")
	waitReplaced(t, key, over, 60*time.Second)
	f := getFleet(t, key)
	var record *v1alpha1.RestartRecord
	for i := range f.Status.RecentRestarts {
		if r := &f.Status.RecentRestarts[i]; r.Worker == over {
			record = r
		}
	}
	if f.Status.Restarts.OverBudget != 1 || record == nil || record.Reason != supervisor.OverBudget || !strings.Contains(record.Evidence, "tokens in one task (limit 5000)") {
		t.Fatalf("restarts %+v, record of %s %+v: want one OverBudget replacement with its evidence", f.Status.Restarts, over, record)
	}

	// The fleet's hourly budget: a little over what the agents reported so far.
	a.mu.Lock()
	spent := a.reported.TokensIn + a.reported.TokensOut
	a.mu.Unlock()
	setFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Budgets.MaxTokensPerHour = ptr.To(spent + 3000) })
	paused := waitCondition(t, key, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonBudgetExceeded, 60*time.Second)
	liveFixture(t, "budget-paused", "Degraded", paused)
	if c := meta.FindStatusCondition(paused.Status.Conditions, v1alpha1.ConditionBudgetExceeded); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "passed maxTokensPerHour") {
		t.Errorf("BudgetExceeded condition %+v", c)
	}
	eventually(t, 30*time.Second, "every agent seeing its fleet paused", func(context.Context) (bool, string) {
		p, n := a.paused()
		return n == 4 && p == n, fmt.Sprintf("%d of %d paused", p, n)
	})
	before := a.finished()
	time.Sleep(3 * time.Second) // three heartbeat intervals: a task would finish in 0.6 s
	if after := a.finished(); after != before {
		t.Errorf("%d tasks finished while the fleet was paused", after-before)
	}

	// Raised in Git: resumed.
	setFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Budgets.MaxTokensPerHour = ptr.To(unlimited) })
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	eventually(t, 30*time.Second, "the agents taking tasks again", func(context.Context) (bool, string) {
		p, _ := a.paused()
		n := a.finished()
		return p == 0 && n > before, fmt.Sprintf("%d paused, %d tasks (%d before)", p, n, before)
	})
}
