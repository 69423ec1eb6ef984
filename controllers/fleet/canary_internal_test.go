package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

var (
	c0       = time.Date(2026, 7, 8, 9, 10, 0, 0, time.UTC)
	stableRv = v1alpha1.RevisionStatus{Revision: "s1", PromptHash: "p1"}
	newRv    = v1alpha1.RevisionStatus{Revision: "n2", PromptHash: "p2"}
)

// canaryObs is a fleet of 10 workers (canary 20%: 2) on the stable revision, asked for the new one.
func canaryObs(mutate ...func(*canaryObservation)) canaryObservation {
	f := &v1alpha1.AgentFleet{Spec: v1alpha1.AgentFleetSpec{Rollout: v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutCanary,
		Canary: &v1alpha1.CanarySpec{Workers: ptr.To(intstr.FromString("20%")), Analysis: v1alpha1.CanaryAnalysis{MinTasks: 10, MaxDurationSeconds: 600, MaxFailureRateIncrease: "0.1", MaxRestarts: ptr.To[int32](1)}}}}}
	o := canaryObservation{
		Now: c0, Strategy: v1alpha1.RolloutCanary, Canary: f.CanarySettings(), Replicas: 10, MaxUnavailable: 2,
		Desired: newRv, Stable: stableRv, StableReplicas: 10, StablePods: 10, StableReady: 10, StableUpdated: 10,
	}
	for _, m := range mutate {
		m(&o)
	}
	return o
}

// running is the observation of a canary that started 5 minutes ago, with outcomes by revision.
func running(stable, canary usage.Counts, mutate ...func(*canaryObservation)) canaryObservation {
	started := metav1.NewTime(c0.Add(-5 * time.Minute))
	cn := newRv
	return canaryObs(append([]func(*canaryObservation){func(o *canaryObservation) {
		o.CanaryGroup, o.CanaryReplicas, o.CanaryPods, o.StableReplicas, o.StablePods, o.StableReady, o.StableUpdated = "n2", 2, 2, 8, 8, 8, 8
		o.Previous = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseCanary, Stable: stableRv, Canary: &cn, StartedAt: &started}
		o.Outcomes = map[string]usage.Counts{"s1": stable, "n2": canary}
	}}, mutate...)...)
}

func TestPlanCanary(t *testing.T) {
	started := metav1.NewTime(c0.Add(-5 * time.Minute))
	now := metav1.NewTime(c0)
	canaryStatus := func(phase v1alpha1.RolloutPhase, stable, canary usage.Counts, restarts int32, msg string) *v1alpha1.RolloutStatus {
		s, cn := stableRv, newRv
		s.TasksSucceeded, s.TasksFailed = stable.Succeeded, stable.Failed
		cn.TasksSucceeded, cn.TasksFailed, cn.Restarts = canary.Succeeded, canary.Failed, restarts
		return &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: phase, Stable: s, Canary: &cn, StartedAt: &started, Message: msg}
	}
	good, bad := usage.Counts{Succeeded: 45, Failed: 5}, usage.Counts{Succeeded: 4, Failed: 6}
	promotingStatus := &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhasePromoting, Stable: stableRv, Canary: &newRv, StartedAt: &started}
	withChecks := func(o *canaryObservation) {
		o.Canary.Analysis.Checks = []v1alpha1.CanaryCheck{{Name: "latency", Query: `p99{rev="{{revision}}"}`, SuccessCondition: "result < 2"}}
	}
	cases := map[string]struct {
		o    canaryObservation
		want canaryPlan
	}{
		"no RayCluster yet: built as it is": {canaryObs(func(o *canaryObservation) { o.Stable = v1alpha1.RevisionStatus{} }), canaryPlan{StableReplicas: 10}},
		"Rolling: nothing to lay out":       {canaryObs(func(o *canaryObservation) { o.Strategy = v1alpha1.RolloutRolling }), canaryPlan{StableReplicas: 10}},
		"Rolling after a canary: its group goes": {canaryObs(func(o *canaryObservation) {
			o.Strategy, o.CanaryGroup, o.CanaryPods, o.CanaryReplicas = v1alpha1.RolloutRolling, "n2", 2, 2
		}), canaryPlan{StableReplicas: 10, CanaryGroup: true}},
		"canary pods that outlived their group: it comes back at 0": {canaryObs(func(o *canaryObservation) {
			o.Strategy, o.CanaryPods = v1alpha1.RolloutRolling, 1
		}), canaryPlan{StableReplicas: 10, CanaryGroup: true}},
		"the group at 0 and its pods gone: the group goes": {canaryObs(func(o *canaryObservation) {
			o.Strategy, o.CanaryGroup = v1alpha1.RolloutRolling, "n2"
		}), canaryPlan{StableReplicas: 10}},
		"one replica: no canary, rolled as under Rolling": {canaryObs(func(o *canaryObservation) { o.Replicas = 1 }), canaryPlan{StableReplicas: 1}},
		"a change starts a canary, the stable template kept": {canaryObs(), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status:      &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseCanary, Stable: stableRv, Canary: &newRv, StartedAt: &now},
			EventReason: EventCanaryStarted, Message: "Canary of revision n2 on 2 of 10 agent workers (stable revision s1)",
		}},
		"too few tasks: continue until the deadline": {running(good, usage.Counts{Succeeded: 9}), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2, RecheckAfter: 5 * time.Minute,
			Status: canaryStatus(v1alpha1.RolloutPhaseCanary, good, usage.Counts{Succeeded: 9}, 0, "9 of minTasks 10 tasks; canary failure rate 0% (0 of 9), stable 10% (5 of 50)"),
		}},
		"passed: promoted, the stable group takes the new template": {running(good, usage.Counts{Succeeded: 9, Failed: 1}), canaryPlan{
			StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status:      canaryStatus(v1alpha1.RolloutPhasePromoting, good, usage.Counts{Succeeded: 9, Failed: 1}, 0, "canary failure rate 10% (1 of 10), stable 10% (5 of 50)"),
			EventReason: EventCanaryPromoting, Message: "Promoting revision n2: canary failure rate 10% (1 of 10), stable 10% (5 of 50)",
		}},
		"failed: aborted, back to the stable revision": {running(good, bad), canaryPlan{
			StableFromCluster: true, StableReplicas: 10, CanaryGroup: true,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseAborted, good, bad, 0, "canary failure rate 60% (6 of 10), stable 10% (5 of 50): +50.0 points, more than maxFailureRateIncrease 0.1")
				s.FinishedAt = &now
				return s
			}(),
			EventWarning: true, EventReason: EventCanaryAborted,
			Message: "Canary of revision n2 aborted: canary failure rate 60% (6 of 10), stable 10% (5 of 50): +50.0 points, more than maxFailureRateIncrease 0.1; every agent worker returns to revision s1",
		}},
		"restarts over maxRestarts: aborted": {running(good, usage.Counts{}, func(o *canaryObservation) {
			o.Restarts = []v1alpha1.RestartRecord{
				{Time: metav1.NewTime(c0.Add(-time.Hour)), Worker: "old", Revision: "n2"}, // before this canary
				{Time: metav1.NewTime(c0.Add(-time.Minute)), Worker: "a", Revision: "n2"},
				{Time: metav1.NewTime(c0.Add(-time.Minute)), Worker: "b", Revision: "s1"}, // a stable one
				{Time: metav1.NewTime(c0), Worker: "c", Revision: "n2"},
			}
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 10, CanaryGroup: true,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseAborted, good, usage.Counts{}, 2, "2 canary workers replaced (maxRestarts 1)")
				s.FinishedAt, s.Stable.Restarts = &now, 1
				return s
			}(),
			EventWarning: true, EventReason: EventCanaryAborted,
			Message: "Canary of revision n2 aborted: 2 canary workers replaced (maxRestarts 1); every agent worker returns to revision s1",
		}},
		"passed, waiting for a person (a promotion of another canary does not count)": {running(good, usage.Counts{Succeeded: 10}, func(o *canaryObservation) {
			o.Canary.AutoPromote, o.Promote = ptr.To(false), "n2@20260101T000000"
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status:      canaryStatus(v1alpha1.RolloutPhaseWaitingForPromotion, good, usage.Counts{Succeeded: 10}, 0, "canary failure rate 0% (0 of 10), stable 10% (5 of 50)"),
			EventReason: EventCanaryPassed, Message: "Canary of revision n2 passed (canary failure rate 0% (0 of 10), stable 10% (5 of 50)): waiting for `agentfleet promote`",
		}},
		"promoted by a person": {running(good, usage.Counts{Succeeded: 10}, func(o *canaryObservation) {
			o.Canary.AutoPromote, o.Promote = ptr.To(false), "n2@20260708T090500"
			o.Previous.Phase = v1alpha1.RolloutPhaseWaitingForPromotion
		}), canaryPlan{
			StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status:      canaryStatus(v1alpha1.RolloutPhasePromoting, good, usage.Counts{Succeeded: 10}, 0, "canary failure rate 0% (0 of 10), stable 10% (5 of 50)"),
			EventReason: EventCanaryPromoting, Message: "Promoting revision n2: canary failure rate 0% (0 of 10), stable 10% (5 of 50)",
		}},
		"timeout: onTimeout Abort": {running(good, usage.Counts{Succeeded: 3}, func(o *canaryObservation) { o.Now = c0.Add(5 * time.Minute) }), canaryPlan{
			StableFromCluster: true, StableReplicas: 10, CanaryGroup: true,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseAborted, good, usage.Counts{Succeeded: 3}, 0, "no verdict after maxDurationSeconds 600 (3 of minTasks 10 tasks); canary failure rate 0% (0 of 3), stable 10% (5 of 50)")
				s.FinishedAt = ptr.To(metav1.NewTime(c0.Add(5 * time.Minute)))
				return s
			}(),
			EventWarning: true, EventReason: EventCanaryAborted,
			Message: "Canary of revision n2 aborted: no verdict after maxDurationSeconds 600 (3 of minTasks 10 tasks); canary failure rate 0% (0 of 3), stable 10% (5 of 50); every agent worker returns to revision s1",
		}},
		"paused: the canary waits, its clock stopped": {running(good, bad, func(o *canaryObservation) { o.Paused = true }), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseCanary, good, bad, 0, "paused (the fleet is suspended or over its budget): the canary waits")
				s.PausedAt = &now
				return s
			}(),
		}},
		"resumed after 20 minutes: the start moves on by them": {running(good, usage.Counts{Succeeded: 1}, func(o *canaryObservation) {
			o.Previous.PausedAt = ptr.To(metav1.NewTime(c0.Add(-20 * time.Minute)))
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2, RecheckAfter: 25 * time.Minute,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseCanary, good, usage.Counts{Succeeded: 1}, 0, "1 of minTasks 10 tasks; canary failure rate 0% (0 of 1), stable 10% (5 of 50)")
				s.StartedAt = ptr.To(metav1.NewTime(c0.Add(15 * time.Minute)))
				return s
			}(),
		}},
		"timeout with onTimeout Promote, but over the failure rate: aborted": {running(good, usage.Counts{Succeeded: 1, Failed: 2}, func(o *canaryObservation) {
			o.Now, o.Canary.Analysis.OnTimeout = c0.Add(5*time.Minute), v1alpha1.CanaryPromote
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 10, CanaryGroup: true,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseAborted, good, usage.Counts{Succeeded: 1, Failed: 2}, 0, "no verdict after maxDurationSeconds 600 (3 of minTasks 10 tasks); canary failure rate 66.7% (2 of 3), stable 10% (5 of 50)")
				s.FinishedAt = ptr.To(metav1.NewTime(c0.Add(5 * time.Minute)))
				return s
			}(),
			EventWarning: true, EventReason: EventCanaryAborted,
			Message: "Canary of revision n2 aborted: no verdict after maxDurationSeconds 600 (3 of minTasks 10 tasks); canary failure rate 66.7% (2 of 3), stable 10% (5 of 50); every agent worker returns to revision s1",
		}},
		"a newer change replaces the canary": {running(good, bad, func(o *canaryObservation) { o.Desired = v1alpha1.RevisionStatus{Revision: "n3"} }), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status:      &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseCanary, Stable: stableRv, Canary: &v1alpha1.RevisionStatus{Revision: "n3"}, StartedAt: &now},
			EventReason: EventCanaryStarted, Message: "Canary of revision n3 on 2 of 10 agent workers (stable revision s1)",
		}},
		"aborted: stays on the stable revision while the spec asks for the failed one": {running(good, bad, func(o *canaryObservation) {
			o.Previous.Phase, o.CanaryGroup, o.CanaryPods, o.CanaryReplicas = v1alpha1.RolloutPhaseAborted, "", 0, 0
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 10,
			Status: &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseAborted, Stable: stableRv, Canary: &newRv, StartedAt: &started},
		}},
		"aborted, then reverted: stable, nothing restarted": {running(good, bad, func(o *canaryObservation) {
			o.Previous.Phase, o.CanaryGroup, o.CanaryPods, o.CanaryReplicas, o.Desired = v1alpha1.RolloutPhaseAborted, "", 0, 0, stableRv
		}), canaryPlan{
			StableReplicas: 10,
			Status:         &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseStable, Stable: stableRv},
			EventReason:    EventCanaryAbandoned, Message: "The change to revision n2 was reverted: every agent worker runs revision s1",
		}},
		"promoting: the stable group rolls": {running(good, good, func(o *canaryObservation) {
			o.Previous.Phase, o.Stable, o.StableUpdated = v1alpha1.RolloutPhasePromoting, newRv, 5
		}), canaryPlan{StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2, Status: promotingStatus}},
		"promoting: rolled, the canary's workers move to the stable group, maxUnavailable at a time": {running(good, good, func(o *canaryObservation) {
			o.Previous.Phase, o.Stable, o.MaxUnavailable = v1alpha1.RolloutPhasePromoting, newRv, 1
		}), canaryPlan{StableReplicas: 9, CanaryGroup: true, CanaryReplicas: 1, Status: promotingStatus}},
		"promoting: the moved ones not Ready yet: wait": {running(good, good, func(o *canaryObservation) {
			o.Previous.Phase, o.Stable, o.StableReplicas, o.CanaryReplicas, o.StablePods, o.StableReady, o.StableUpdated = v1alpha1.RolloutPhasePromoting, newRv, 9, 1, 9, 8, 9
		}), canaryPlan{StableReplicas: 9, CanaryGroup: true, CanaryReplicas: 1, Status: promotingStatus}},
		"promoting: the last canary worker moves; the group stays while its pod goes": {running(good, good, func(o *canaryObservation) {
			o.Previous.Phase, o.Stable, o.StableReplicas, o.CanaryReplicas, o.StablePods, o.StableReady, o.StableUpdated = v1alpha1.RolloutPhasePromoting, newRv, 9, 1, 9, 9, 9
		}), canaryPlan{StableReplicas: 10, CanaryGroup: true, CanaryReplicas: 0, Status: promotingStatus}},
		"promoting: the canary gone, promoted: the stable revision is the promoted one": {running(good, good, func(o *canaryObservation) {
			o.Previous.Phase, o.Stable, o.StableReplicas, o.StablePods, o.StableReady, o.StableUpdated = v1alpha1.RolloutPhasePromoting, newRv, 10, 10, 10, 10
			o.CanaryGroup, o.CanaryReplicas, o.CanaryPods = "n2", 0, 0
		}), canaryPlan{StableReplicas: 10,
			Status:      &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhasePromoted, Stable: newRv, Canary: &newRv, StartedAt: &started, FinishedAt: &now},
			EventReason: EventCanaryPromoted, Message: "Revision n2 is promoted: every agent worker runs it"}},
		"a change during the promotion: rolled as under Rolling, the canary goes": {running(good, good, func(o *canaryObservation) {
			o.Previous.Phase, o.Stable, o.StableUpdated, o.Desired = v1alpha1.RolloutPhasePromoting, newRv, 5, stableRv
		}), canaryPlan{StableReplicas: 10, CanaryGroup: true,
			Status: &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseStable, Stable: stableRv,
				Message: "changed during the promotion of revision n2: rolled as under Rolling"},
			EventReason: EventCanaryAbandoned, Message: "Revision n2 changed during its promotion: rolling to revision s1 as under Rolling"}},
		"checks to run: the phase runs them": {running(good, usage.Counts{Succeeded: 10}, withChecks), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2, RunChecks: true,
			Status: canaryStatus(v1alpha1.RolloutPhaseCanary, good, usage.Counts{Succeeded: 10}, 0, "canary failure rate 0% (0 of 10), stable 10% (5 of 50); running the checks"),
		}},
		"a check that cannot run holds the verdict": {running(good, usage.Counts{Succeeded: 10}, withChecks, func(o *canaryObservation) {
			o.Checks = []checkResult{{Name: "latency", Condition: "result < 2", Err: "no Prometheus"}}
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2, RecheckAfter: checkRetry,
			Status: canaryStatus(v1alpha1.RolloutPhaseCanary, good, usage.Counts{Succeeded: 10}, 0, "canary failure rate 0% (0 of 10), stable 10% (5 of 50); check latency could not run: no Prometheus"),
		}},
		"a failing check aborts": {running(good, usage.Counts{Succeeded: 10}, withChecks, func(o *canaryObservation) {
			o.Checks = []checkResult{{Name: "latency", Condition: "result < 2", Value: 3.5}}
		}), canaryPlan{
			StableFromCluster: true, StableReplicas: 10, CanaryGroup: true,
			Status: func() *v1alpha1.RolloutStatus {
				s := canaryStatus(v1alpha1.RolloutPhaseAborted, good, usage.Counts{Succeeded: 10}, 0, "canary failure rate 0% (0 of 10), stable 10% (5 of 50); check latency: result 3.5, want result < 2")
				s.FinishedAt = &now
				return s
			}(),
			EventWarning: true, EventReason: EventCanaryAborted,
			Message: "Canary of revision n2 aborted: canary failure rate 0% (0 of 10), stable 10% (5 of 50); check latency: result 3.5, want result < 2; every agent worker returns to revision s1",
		}},
		"passing checks promote": {running(good, usage.Counts{Succeeded: 10}, withChecks, func(o *canaryObservation) {
			o.Checks = []checkResult{{Name: "latency", Condition: "result < 2", Value: 1.5}}
		}), canaryPlan{
			StableReplicas: 8, CanaryGroup: true, CanaryReplicas: 2,
			Status:      canaryStatus(v1alpha1.RolloutPhasePromoting, good, usage.Counts{Succeeded: 10}, 0, "canary failure rate 0% (0 of 10), stable 10% (5 of 50); every check passed"),
			EventReason: EventCanaryPromoting, Message: "Promoting revision n2: canary failure rate 0% (0 of 10), stable 10% (5 of 50); every check passed",
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, planCanary(tc.o), cmp.AllowUnexported(canaryPlan{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestCanaryWorkers(t *testing.T) {
	for _, tc := range []struct {
		w        intstr.IntOrString
		replicas int32
		want     int32
	}{
		{intstr.FromInt32(1), 4, 1}, {intstr.FromInt32(9), 4, 3}, {intstr.FromString("10%"), 4, 1},
		{intstr.FromString("25%"), 10, 3}, {intstr.FromString("1%"), 1, 0}, {intstr.FromInt32(1), 0, 0},
	} {
		if got := canaryWorkers(&tc.w, tc.replicas); got != tc.want {
			t.Errorf("canary.workers %s of %d: %d, want %d", tc.w.String(), tc.replicas, got, tc.want)
		}
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		cond string
		v    float64
		want bool
	}{
		{"result < 0.1", 0.05, true}, {"result < 0.1", 0.1, false}, {"result<=0.1", 0.1, true}, {" result > 2 ", 3, true},
		{"result >= -1", -1, true}, {"result == 0", 0, true}, {"result != 0", 0, false},
	} {
		if got, err := checkPasses(tc.cond, tc.v); err != nil || got != tc.want {
			t.Errorf("%q on %g: %v, %v; want %v", tc.cond, tc.v, got, err, tc.want)
		}
	}
	if _, err := checkPasses("result is small", 1); err == nil {
		t.Error("a malformed condition: no error")
	}
	if got := expandCheck(`sum(x{namespace="{{namespace}}",fleet="{{fleet}}",rev="{{revision}}"}) / sum(x{rev="{{stable}}"})`, "ns", "f", "n2", "s1"); got != `sum(x{namespace="ns",fleet="f",rev="n2"}) / sum(x{rev="s1"})` {
		t.Errorf("expanded: %s", got)
	}
	q := fakeQuerier{`ok{rev="n2"}`: 0.5}
	got := runChecks(context.Background(), q, []v1alpha1.CanaryCheck{
		{Name: "ok", Query: `ok{rev="{{revision}}"}`, SuccessCondition: "result < 1"},
		{Name: "missing", Query: `nothing`, SuccessCondition: "result < 1"},
	}, "ns", "f", "n2", "s1")
	want := []checkResult{{Name: "ok", Condition: "result < 1", Value: 0.5}, {Name: "missing", Condition: "result < 1", Err: "no data for nothing"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := runChecks(context.Background(), nil, []v1alpha1.CanaryCheck{{Name: "ok", Query: "x", SuccessCondition: "result < 1"}}, "ns", "f", "n2", "s1"); got[0].Err == "" {
		t.Error("no querier: the check ran")
	}
}

type fakeQuerier map[string]float64

func (q fakeQuerier) Query(_ context.Context, query string) (float64, error) {
	v, ok := q[query]
	if !ok {
		return 0, fmt.Errorf("no data for %s", query)
	}
	return v, nil
}
