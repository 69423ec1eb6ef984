package usage_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

var w0 = time.Date(2026, 3, 4, 10, 30, 20, 0, time.UTC)

func TestWindows(t *testing.T) {
	w := usage.NewWindows()
	f := types.NamespacedName{Namespace: "ns", Name: "f"}
	w.Add(f, w0.Add(-25*time.Hour), usage.Use{TokensIn: 1000}) // older than a day: gone
	w.Add(f, w0.Add(-23*time.Hour), usage.Use{TokensIn: 100, GPUCost: 2})
	w.Add(f, w0.Add(-90*time.Minute), usage.Use{TokensOut: 10, Succeeded: 1})
	w.Add(f, w0.Add(-59*time.Minute), usage.Use{TokensIn: 5, TokenCost: 0.5})
	w.Add(f, w0.Add(-59*time.Minute+10*time.Second), usage.Use{TokensIn: 5, Failed: 1}) // the same minute
	w.Add(f, w0, usage.Use{TokensOut: 1})
	b := w.Buckets(f, w0)
	if len(b) != 4 {
		t.Fatalf("got %d buckets, want 4: %+v", len(b), b)
	}
	if diff := cmp.Diff(usage.Use{TokensIn: 10, TokensOut: 1, Failed: 1, TokenCost: 0.5}, usage.Sum(b, w0, time.Hour)); diff != "" {
		t.Errorf("last hour (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(usage.Use{TokensIn: 110, TokensOut: 11, Succeeded: 1, Failed: 1, TokenCost: 0.5, GPUCost: 2}, usage.Sum(b, w0, usage.Day)); diff != "" {
		t.Errorf("last day (-want +got):\n%s", diff)
	}
	for _, d := range []time.Duration{time.Minute, time.Hour, usage.Day} {
		if diff := cmp.Diff(usage.Sum(b, w0, d), w.Sum(f, w0, d)); diff != "" {
			t.Errorf("Windows.Sum over %v differs from Sum of the buckets (-buckets +windows):\n%s", d, diff)
		}
	}
	// 11 tokens in the hour; under 2 once the bucket of 10 (the minute starting at 09:31) has left
	// the window: at 10:32.
	tokens := func(u usage.Use) float64 { return float64(u.Tokens()) }
	if got, want := usage.Until(b, w0, time.Hour, 2, tokens), time.Date(2026, 3, 4, 10, 32, 0, 0, time.UTC).Sub(w0); got != want {
		t.Errorf("until under 2 tokens: got %v, want %v", got, want)
	}
	if got := usage.Until(b, w0, time.Hour, 11, tokens); got != 0 {
		t.Errorf("until under 11 tokens: got %v, want 0 (it is there)", got)
	}
	// An Add older than the minute its slot holds changes nothing (a late seed cannot wipe a recent
	// minute).
	w.Add(f, w0.Add(-usage.Day-time.Minute), usage.Use{TokensIn: 1 << 30})
	if diff := cmp.Diff(usage.Sum(b, w0, usage.Day), w.Sum(f, w0, usage.Day)); diff != "" {
		t.Errorf("an old Add changed the day (-before +after):\n%s", diff)
	}
	// The minute a whole day old still overlaps the day's window, and is kept apart from now's.
	g := types.NamespacedName{Namespace: "ns", Name: "g"}
	w.Add(g, w0.Add(-usage.Day), usage.Use{TokensIn: 1})
	w.Add(g, w0, usage.Use{TokensIn: 2})
	if got := w.Sum(g, w0, usage.Day).TokensIn; got != 3 {
		t.Errorf("the day's tokens with its first minute: got %d, want 3", got)
	}
	if diff := cmp.Diff([]usage.Bucket{
		{w0.Add(-23 * time.Hour).Truncate(time.Hour), usage.Use{TokensIn: 100, GPUCost: 2}},
		{w0.Add(-90 * time.Minute).Truncate(time.Hour), usage.Use{TokensOut: 10, Succeeded: 1, TokensIn: 10, Failed: 1, TokenCost: 0.5}},
		{w0.Truncate(time.Hour), usage.Use{TokensOut: 1}},
	}, usage.Hours(b)); diff != "" {
		t.Errorf("hours (-want +got):\n%s", diff)
	}
	w.Forget(f)
	if b := w.Buckets(f, w0); b != nil {
		t.Errorf("a forgotten fleet has buckets: %+v", b)
	}
	// Seeding happens once per fleet.
	seeds := 0
	seed := func(add func(time.Time, usage.Use)) { seeds++; add(w0, usage.Use{TokensIn: 7}) }
	if !w.Seed(f, seed) || w.Seed(f, seed) || seeds != 1 {
		t.Errorf("seeded %d times, want once", seeds)
	}
	if got := usage.Sum(w.Buckets(f, w0), w0, time.Hour).TokensIn; got != 7 {
		t.Errorf("seeded tokens: got %d, want 7", got)
	}
}

func TestDecideFleet(t *testing.T) {
	// 600 tokens 50 minutes ago, 500 tokens 10 minutes ago; 30 of GPUs 20 hours ago, 5 of tokens now.
	buckets := []usage.Bucket{
		{w0.Add(-20 * time.Hour).Truncate(time.Minute), usage.Use{GPUCost: 30}},
		{w0.Add(-50 * time.Minute).Truncate(time.Minute), usage.Use{TokensIn: 400, TokensOut: 200}},
		{w0.Add(-10 * time.Minute).Truncate(time.Minute), usage.Use{TokensIn: 500, Succeeded: 2}},
		{w0.Truncate(time.Minute), usage.Use{TokenCost: 5}},
	}
	hour := usage.Use{TokensIn: 900, TokensOut: 200, Succeeded: 2, TokenCost: 5}
	day := usage.Use{TokensIn: 900, TokensOut: 200, Succeeded: 2, TokenCost: 5, GPUCost: 30}
	cases := map[string]struct {
		budgets *v1alpha1.BudgetsSpec
		want    usage.FleetVerdict
	}{
		"no budgets": {nil, usage.FleetVerdict{Hour: hour, Day: day}},
		"per-task budgets only": {&v1alpha1.BudgetsSpec{MaxTokens: ptr.To[int64](1)},
			usage.FleetVerdict{Hour: hour, Day: day}},
		"tokens at the budget": {&v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](1100)},
			usage.FleetVerdict{Budgeted: true, Hour: hour, Day: day, Message: "within the fleet's budgets"}},
		// Under 1000 once the 600 of 50 minutes ago leave: 10 minutes and 40 s from now.
		"tokens over, alert": {&v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](1000), OnExceeded: v1alpha1.BudgetAlert},
			usage.FleetVerdict{Budgeted: true, Exceeded: true, Hour: hour, Day: day, RecheckAfter: 10*time.Minute + 40*time.Second,
				Message: "over budget: the last hour's tokens passed maxTokensPerHour (1000)", Evidence: "over budget: 1100 tokens in the last hour (maxTokensPerHour 1000)"}},
		"tokens over, pause": {&v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](1000), OnExceeded: v1alpha1.BudgetPause},
			usage.FleetVerdict{Budgeted: true, Exceeded: true, Pause: true, Hour: hour, Day: day, RecheckAfter: 10*time.Minute + 40*time.Second,
				Message:  "over budget: the last hour's tokens passed maxTokensPerHour (1000): paused (no new task or job run) until the window rolls under the budget or the budget is raised; status.usage has the figures",
				Evidence: "over budget: 1100 tokens in the last hour (maxTokensPerHour 1000): paused"}},
		// 35 a day; under 32 once the GPUs' 30 leave, in 4 hours (and 40 s).
		"cost over": {&v1alpha1.BudgetsSpec{MaxCostPerDay: "32.00"},
			usage.FleetVerdict{Budgeted: true, Exceeded: true, Hour: hour, Day: day, RecheckAfter: 4*time.Hour + 40*time.Second,
				Message:  "over budget: the last 24 hours' cost passed maxCostPerDay (32.00 USD)",
				Evidence: "over budget: 35.00 USD in the last 24 hours (GPUs 30.00, tokens 5.00; maxCostPerDay 32.00), not counting unpriced model llama"}},
		"both over: under both at the later": {&v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](1000), MaxCostPerDay: "32"},
			usage.FleetVerdict{Budgeted: true, Exceeded: true, Hour: hour, Day: day, RecheckAfter: 4*time.Hour + 40*time.Second,
				Message:  "over budget: the last hour's tokens passed maxTokensPerHour (1000); the last 24 hours' cost passed maxCostPerDay (32 USD)",
				Evidence: "over budget: 1100 tokens in the last hour (maxTokensPerHour 1000); 35.00 USD in the last 24 hours (GPUs 30.00, tokens 5.00; maxCostPerDay 32), not counting unpriced model llama"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := usage.DecideFleet(usage.FleetObservation{Now: w0, Budgets: tc.budgets, Buckets: buckets, Currency: "USD", Unpriced: []string{"model llama"}})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, err := usage.DecideFleet(usage.FleetObservation{Now: w0, Budgets: &v1alpha1.BudgetsSpec{MaxCostPerDay: "x"}}); err == nil {
		t.Error("a malformed maxCostPerDay: no error")
	}
}
