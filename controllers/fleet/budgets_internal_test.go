package fleet

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

var u0 = time.Date(2026, 5, 6, 12, 34, 56, 0, time.UTC)

// A new leader starts its windows from status.usage: each hour at its last minute (the status' time
// for the current hour), so that nothing leaves a window sooner than it did, nor more than an hour
// later.
func TestSeedFromStatus(t *testing.T) {
	type added struct {
		At  time.Time
		Use usage.Use
	}
	seed := func(u *v1alpha1.UsageStatus, now time.Time) []added {
		var got []added
		seedFromStatus(u, now, func(at time.Time, use usage.Use) { got = append(got, added{at, use}) })
		return got
	}
	updated := metav1.NewTime(u0)
	withHours := &v1alpha1.UsageStatus{UpdatedAt: updated, Hours: []v1alpha1.UsageHour{
		{Start: metav1.NewTime(u0.Add(-23 * time.Hour).Truncate(time.Hour)), UsageWindow: v1alpha1.UsageWindow{TokensIn: 10, GPUCost: "1.50"}},
		{Start: metav1.NewTime(u0.Truncate(time.Hour)), UsageWindow: v1alpha1.UsageWindow{TokensOut: 5, TasksSucceeded: 2, TokenCost: "0.25"}},
	}}
	want := []added{
		{u0.Add(-23 * time.Hour).Truncate(time.Hour).Add(59 * time.Minute), usage.Use{TokensIn: 10, GPUCost: 1.5}},
		{u0, usage.Use{TokensOut: 5, Succeeded: 2, TokenCost: 0.25}},
	}
	if diff := cmp.Diff(want, seed(withHours, u0.Add(time.Minute))); diff != "" {
		t.Errorf("by hour (-want +got):\n%s", diff)
	}
	// Before hours were written: the last hour at the status' time, the rest an hour earlier.
	old := &v1alpha1.UsageStatus{UpdatedAt: updated, LastHour: v1alpha1.UsageWindow{TokensIn: 3}, LastDay: v1alpha1.UsageWindow{TokensIn: 10, TasksFailed: 1}}
	want = []added{{u0, usage.Use{TokensIn: 3}}, {u0.Add(-time.Hour), usage.Use{TokensIn: 7, Failed: 1}}}
	if diff := cmp.Diff(want, seed(old, u0)); diff != "" {
		t.Errorf("without hours (-want +got):\n%s", diff)
	}
	if got := seed(withHours, u0.Add(usage.Day)); got != nil {
		t.Errorf("a status a day old seeded %v", got)
	}
	if got := seed(nil, u0); got != nil {
		t.Errorf("no status seeded %v", got)
	}
}

// status.usage is refreshed at most once a minute, and leaves the cost per task out while something
// is unpriced.
func TestUsageStatus(t *testing.T) {
	v := usage.FleetVerdict{Hour: usage.Use{Succeeded: 4, TokenCost: 1}, Day: usage.Use{Succeeded: 4, TokenCost: 1, GPUCost: 3}}
	hours := []usage.Bucket{{Minute: u0.Truncate(time.Hour), Use: v.Day}}
	fresh := usageStatus(nil, v, hours, u0, "USD", nil)
	want := &v1alpha1.UsageStatus{
		LastHour:  v1alpha1.UsageWindow{TasksSucceeded: 4, GPUCost: "0.00", TokenCost: "1.00", CostPerSucceededTask: "0.25"},
		LastDay:   v1alpha1.UsageWindow{TasksSucceeded: 4, GPUCost: "3.00", TokenCost: "1.00", CostPerSucceededTask: "1.00"},
		Currency:  "USD",
		UpdatedAt: metav1.NewTime(u0),
		Hours:     []v1alpha1.UsageHour{{Start: metav1.NewTime(u0.Truncate(time.Hour)), UsageWindow: v1alpha1.UsageWindow{TasksSucceeded: 4, GPUCost: "3.00", TokenCost: "1.00"}}},
	}
	if diff := cmp.Diff(want, fresh); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	more := v
	more.Day.Succeeded = 40
	if got := usageStatus(fresh, more, hours, u0.Add(59*time.Second), "USD", nil); got != fresh {
		t.Errorf("refreshed within the minute: %+v", got)
	}
	if got := usageStatus(fresh, more, hours, u0.Add(time.Minute), "USD", nil); got.LastDay.TasksSucceeded != 40 {
		t.Errorf("not refreshed after a minute: %+v", got.LastDay)
	}
	if got := usageStatus(nil, v, hours, u0, "USD", []string{"model llama"}); got.LastDay.CostPerSucceededTask != "" || got.LastHour.CostPerSucceededTask != "" {
		t.Errorf("a cost per task with an unpriced model: %+v", got)
	}
	if got := usageStatus(nil, usage.FleetVerdict{}, nil, u0, "USD", nil); got != nil {
		t.Errorf("usage without any use: %+v", got)
	}
}
