package e2e

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

// The agents of a fleet finish tasks, reporting tokens and outcomes with the Go client; one of them
// quits and its worker is replaced (its Lease deleted by the operator). The operator's
// agentfleet_tasks_total and agentfleet_tokens_total then equal what the agents reported, the
// replaced worker's included, nothing counted twice. (A replaced worker that renews through its
// grace period recreates its Lease under the same name; kwok deletes pods at once, and their bound
// tokens with them, so that case is the ledger's unit test's, not this one's.)
func TestTheLedgerCountsWhatTheAgentsReported(t *testing.T) {
	needCluster(t)
	_, key, a := healingFleet(t, "ledger-usage", 20)
	a.mu.Lock()
	a.tasks = true
	a.mu.Unlock()
	reported := func() usage.Counts {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.reported
	}
	tasksFinished := func(what string, atLeast int64) {
		eventually(t, 30*time.Second, what, func(context.Context) (bool, string) {
			r := reported()
			return r.Succeeded+r.Failed >= atLeast && r.Failed > 0, fmt.Sprintf("%+v", r)
		})
	}
	tasksFinished("the agents finishing tasks", 8)
	quitter := agentPods(t, key.Namespace, key.Name)[0].Name
	a.set(quitter, "quit")
	waitReplaced(t, key, quitter, 60*time.Second)
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	tasksFinished("more tasks, the replacement's too", reported().Succeeded+reported().Failed+8)

	a.quitAll() // every agent stops between two steps: what each reported is written

	want := reported()
	if want.Succeeded == 0 || want.Failed == 0 || want.TokensIn == 0 {
		t.Fatalf("the agents reported %+v: too little to test", want)
	}
	compared := "not compared yet"
	eventually(t, 30*time.Second, "the operator's ledger equal to what the agents reported", func(ctx context.Context) (bool, string) {
		families, err := scrape(ctx, c.MetricsURL("agentfleet-operator"))
		if err != nil {
			return false, fmt.Sprintf("%v; last compared: %s", err, compared)
		}
		sum := func(name string, labels map[string]string) int64 {
			return int64(math.Round(counterSum(families, name, labels)))
		}
		with := func(k, v string) map[string]string { return fleetLabels(key, k, v) }
		got := usage.Counts{
			Succeeded: sum("agentfleet_tasks_total", with("outcome", "succeeded")), Failed: sum("agentfleet_tasks_total", with("outcome", "failed")),
			TokensIn: sum("agentfleet_tokens_total", with("direction", "in")), TokensOut: sum("agentfleet_tokens_total", with("direction", "out")),
		}
		compared = fmt.Sprintf("operator %+v, agents %+v", got, want)
		return got == want, compared
	})
}
