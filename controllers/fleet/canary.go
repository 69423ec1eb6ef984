package fleet

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

// canaryObservation is what a step of a rollout is decided from: the strategy, the RayCluster's
// worker groups as observed, the previous rollout status, the agents' task outcomes by revision
// since the canary began, the checks' results, and the time.
type canaryObservation struct {
	Now      time.Time
	Strategy v1alpha1.RolloutStrategy
	Canary   v1alpha1.CanarySpec // defaults resolved (AgentFleet.CanarySettings)
	Replicas int32
	// MaxUnavailable is rollout.maxUnavailable resolved against replicas (at least 1).
	MaxUnavailable int32
	// Paused: the fleet is suspended, or paused by its budget: a canary's clock stops.
	Paused bool
	// Desired is the revision rayspecs built, with what it runs.
	Desired v1alpha1.RevisionStatus
	// Stable is the revision of the RayCluster's stable group's template, with what it runs;
	// Revision "" when there is no RayCluster yet.
	Stable v1alpha1.RevisionStatus
	// CanaryGroup is the revision of the RayCluster's canary group's template ("" without the group)
	// and CanaryReplicas its replicas; StableReplicas the stable group's.
	CanaryGroup                    string
	CanaryReplicas, StableReplicas int32
	// CanaryPods are the canary group's pods (whether or not the group is in the RayCluster's spec).
	CanaryPods int
	// StablePods, StableReady and StableUpdated count the stable group's pods (updated: on the
	// group's template).
	StablePods, StableReady, StableUpdated int
	// Previous is status.rollout.
	Previous *v1alpha1.RolloutStatus
	// Outcomes are the tasks by revision since the canary began (revisionOutcomes).
	Outcomes map[string]usage.Counts
	// Restarts are the restart records (status.recentRestarts): a revision's are those of its
	// workers since the canary began.
	Restarts []v1alpha1.RestartRecord
	// Checks are the results of the canary's checks, when they were run (runChecks).
	Checks []checkResult
	// Promote is the canary the annotation agentfleet.dev/promote names (RolloutStatus.CanaryID; "" none).
	Promote string
}

// canaryPlan is the RayCluster's worker layout and the rollout's status, as a step decides.
type canaryPlan struct {
	// StableFromCluster: the stable group stays as the RayCluster has it (the stable revision's
	// template, labels and start parameters), not as rayspecs built it.
	StableFromCluster bool
	StableReplicas    int32
	// CanaryGroup: the layout has the canary group, on the revision rayspecs built, with
	// CanaryReplicas workers (0 while its last pods go).
	CanaryGroup    bool
	CanaryReplicas int32
	// Status is status.rollout; nil under Rolling.
	Status *v1alpha1.RolloutStatus
	// Event is the change of phase to tell (reason "" for none).
	EventWarning         bool
	EventReason, Message string
	RecheckAfter         time.Duration
	// RunChecks: the canary finished minTasks within maxFailureRateIncrease; its checks decide
	// (the phase runs them and decides again).
	RunChecks bool
}

// canaryWorkers is how many workers run a canary: canary.workers against replicas, rounded up, at
// least 1, at most replicas − 1 (some stable workers stay to compare with); 0 below 2 replicas.
func canaryWorkers(w *intstr.IntOrString, replicas int32) int32 {
	if replicas < 2 {
		return 0
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(w, int(replicas), true)
	if err != nil {
		n = 1
	}
	return min(max(int32(n), 1), replicas-1)
}

// planCanary decides a rollout's next step (pure: the controller observes, calls it, and applies
// the layout). Under Rolling (and below 2 replicas) it only retires a canary group left behind.
// Under Canary a new revision starts a canary: the stable group stays as it is (no stable worker
// restarts) at replicas − n, the canary group runs the new one on n; the verdict (judgeCanary)
// promotes it (the stable group takes the new template and rolls as under Rolling, then the canary's
// workers move to it, maxUnavailable at a time: the total stays at replicas) or aborts it (the
// stable group grows back to replicas as it is, the canary group goes, the fleet is Degraded until
// the spec changes again: a `git revert` to the stable revision clears it without restarting a
// stable worker). A newer change during a canary replaces it: the newest spec wins; one during a
// promotion rolls as under Rolling.
func planCanary(o canaryObservation) canaryPlan {
	r := o.Replicas
	plan := canaryPlan{StableReplicas: r}
	// retire: the canary group goes: at 0 replicas until its pods are gone (put back if its pods
	// outlived it: KubeRay deletes no pod of a group that is not in the spec), then the group.
	retire := func() {
		if o.CanaryPods > 0 || (o.CanaryGroup != "" && o.CanaryReplicas > 0) {
			plan.CanaryGroup, plan.CanaryReplicas = true, 0
		}
	}
	n := canaryWorkers(o.Canary.Workers, r)
	if o.Stable.Revision == "" {
		return plan // no RayCluster yet: it is created on the revision built
	}
	if o.Strategy != v1alpha1.RolloutCanary || n == 0 {
		retire()
		return plan
	}
	prev := o.Previous
	if prev != nil && prev.Strategy != v1alpha1.RolloutCanary {
		prev = nil // another strategy's rollout (BlueGreen's) is not a canary's
	}
	sameCanary := prev != nil && prev.Canary != nil && prev.Canary.Revision == o.Desired.Revision
	is := func(phases ...v1alpha1.RolloutPhase) bool {
		return prev != nil && slices.Contains(phases, prev.Phase)
	}
	next := func(phase v1alpha1.RolloutPhase) *v1alpha1.RolloutStatus {
		st := prev.DeepCopy()
		st.Phase, st.Strategy = phase, v1alpha1.RolloutCanary
		return st
	}
	switch {
	case is(v1alpha1.RolloutPhasePromoting) && sameCanary:
		plan.Status = next(v1alpha1.RolloutPhasePromoting)
		plan.Status.PausedAt = nil
		return promote(o, n, plan)
	case is(v1alpha1.RolloutPhasePromoting):
		// A change during the promotion: the stable group, partly rolled to the promoted revision,
		// rolls to the newest one as under Rolling; the canary goes.
		retire()
		plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseStable, Stable: o.Desired,
			Message: fmt.Sprintf("changed during the promotion of revision %s: rolled as under Rolling", revisionOf(prev.Canary))}
		plan.EventReason, plan.Message = EventCanaryAbandoned, fmt.Sprintf("Revision %s changed during its promotion: rolling to revision %s as under Rolling", revisionOf(prev.Canary), o.Desired.Revision)
		return plan
	case is(v1alpha1.RolloutPhaseAborted) && sameCanary:
		plan.StableFromCluster = true
		plan.Status = next(v1alpha1.RolloutPhaseAborted)
		retire()
		return plan
	case o.Desired.Revision == o.Stable.Revision:
		// No change pending. A canary or an aborted one whose change was reverted ends here, with no
		// stable worker restarted.
		retire()
		switch {
		case is(v1alpha1.RolloutPhasePromoted, v1alpha1.RolloutPhaseStable):
			plan.Status = next(prev.Phase)
		case prev == nil || prev.Canary == nil:
			plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseStable, Stable: o.Stable}
		default:
			plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseStable, Stable: o.Stable}
			plan.EventReason, plan.Message = EventCanaryAbandoned, fmt.Sprintf("The change to revision %s was reverted: every agent worker runs revision %s", revisionOf(prev.Canary), o.Stable.Revision)
		}
		return plan
	}

	// A change is pending: a canary runs, or starts (a new one replaces an older one).
	plan.StableFromCluster = true
	plan.StableReplicas, plan.CanaryGroup, plan.CanaryReplicas = r-n, true, n
	running := sameCanary && is(v1alpha1.RolloutPhaseCanary, v1alpha1.RolloutPhaseWaitingForPromotion)
	if !running {
		now := metav1.NewTime(o.Now)
		desired := o.Desired
		plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseCanary, Stable: o.Stable, Canary: &desired, StartedAt: &now}
		if o.Paused {
			plan.Status.PausedAt = &now
		}
		plan.EventReason = EventCanaryStarted
		plan.Message = fmt.Sprintf("Canary of revision %s on %d of %d agent workers (stable revision %s)", desired.Revision, n, r, o.Stable.Revision)
		return plan
	}
	plan.Status = next(prev.Phase)
	// The clock stops while paused: the start moves on by the pause when it ends.
	switch {
	case o.Paused && plan.Status.PausedAt == nil:
		plan.Status.PausedAt = ptr.To(metav1.NewTime(o.Now))
	case !o.Paused && plan.Status.PausedAt != nil:
		if plan.Status.StartedAt != nil {
			plan.Status.StartedAt = ptr.To(metav1.NewTime(plan.Status.StartedAt.Add(o.Now.Sub(plan.Status.PausedAt.Time))))
		}
		plan.Status.PausedAt = nil
	}
	v := judgeCanary(o, plan.Status)
	plan.Status.Stable.TasksSucceeded, plan.Status.Stable.TasksFailed, plan.Status.Stable.Restarts = v.stable.Succeeded, v.stable.Failed, int32(v.stableRestarts)
	plan.Status.Canary.TasksSucceeded, plan.Status.Canary.TasksFailed, plan.Status.Canary.Restarts = v.canary.Succeeded, v.canary.Failed, int32(v.restarts)
	plan.Status.Message = v.evidence
	plan.RecheckAfter, plan.RunChecks = v.recheck, v.runChecks
	switch v.verdict {
	case verdictPromote:
		if !ptr.Deref(o.Canary.AutoPromote, true) && o.Promote != plan.Status.CanaryID() {
			if prev.Phase != v1alpha1.RolloutPhaseWaitingForPromotion {
				plan.EventReason, plan.Message = EventCanaryPassed, fmt.Sprintf("Canary of revision %s passed (%s): waiting for `agentfleet promote`", o.Desired.Revision, v.evidence)
			}
			plan.Status.Phase = v1alpha1.RolloutPhaseWaitingForPromotion
			return plan
		}
		plan.Status.Phase = v1alpha1.RolloutPhasePromoting
		plan.StableFromCluster = false // the stable group takes the new template, and rolls
		plan.EventReason, plan.Message = EventCanaryPromoting, fmt.Sprintf("Promoting revision %s: %s", o.Desired.Revision, v.evidence)
	case verdictAbort:
		now := metav1.NewTime(o.Now)
		plan.Status.Phase, plan.Status.FinishedAt = v1alpha1.RolloutPhaseAborted, &now
		plan.StableReplicas, plan.CanaryReplicas = r, 0
		plan.EventWarning, plan.EventReason = true, EventCanaryAborted
		plan.Message = fmt.Sprintf("Canary of revision %s aborted: %s; every agent worker returns to revision %s", o.Desired.Revision, v.evidence, o.Stable.Revision)
	}
	return plan
}

// promote is a step of a promotion: the stable group, on the promoted revision, rolls (the rollout
// phase replaces its outdated workers, maxUnavailable at a time) at replicas − n; then the canary's
// workers move to it, up to maxUnavailable at a time once the stable group's are all Ready (KubeRay
// deletes the canary's and makes the stable group's at once: the total stays at replicas); then the
// canary group goes, and the revision is promoted.
func promote(o canaryObservation, n int32, plan canaryPlan) canaryPlan {
	r := o.Replicas
	stable, canary := o.StableReplicas, o.CanaryReplicas
	if o.CanaryGroup == "" {
		canary = 0
	}
	if stable+canary != r || canary > n {
		stable, canary = r-n, n // the promotion's first step (or a replica change meanwhile)
		if o.CanaryGroup == "" {
			stable, canary = r, 0
		}
	}
	rolled := o.Stable.Revision == o.Desired.Revision && o.StableUpdated == o.StablePods
	if rolled && canary > 0 && o.StableReady >= int(stable) {
		k := min(canary, max(o.MaxUnavailable, 1))
		stable, canary = stable+k, canary-k
	}
	plan.StableReplicas, plan.CanaryReplicas = stable, canary
	plan.CanaryGroup = canary > 0 || o.CanaryPods > 0 || (o.CanaryGroup != "" && o.CanaryReplicas > 0)
	if !plan.CanaryGroup && rolled {
		plan.Status = promoted(plan.Status, o)
		plan.EventReason, plan.Message = EventCanaryPromoted, fmt.Sprintf("Revision %s is promoted: every agent worker runs it", o.Desired.Revision)
	}
	return plan
}

// promoted is the status of a promoted revision: the stable revision is the promoted one now.
func promoted(prev *v1alpha1.RolloutStatus, o canaryObservation) *v1alpha1.RolloutStatus {
	s := prev.DeepCopy()
	now := metav1.NewTime(o.Now)
	s.Phase, s.FinishedAt = v1alpha1.RolloutPhasePromoted, &now
	if s.Canary != nil {
		s.Stable = *s.Canary.DeepCopy()
	}
	return s
}

func revisionOf(r *v1alpha1.RevisionStatus) string {
	if r == nil {
		return ""
	}
	return r.Revision
}

// A canary's verdicts.
const (
	verdictContinue = "Continue"
	verdictPromote  = "Promote"
	verdictAbort    = "Abort"
)

type canaryVerdict struct {
	verdict, evidence        string
	stable, canary           usage.Counts
	restarts, stableRestarts int
	recheck                  time.Duration
	// runChecks: the outcomes passed; the checks decide (they were not run yet).
	runChecks bool
}

// checkRetry is how soon checks that could not run are tried again.
const checkRetry = 15 * time.Second

// judgeCanary is a canary's verdict: Abort when its workers were replaced more than maxRestarts
// times, or, once it finished minTasks, when its failure rate exceeds the stable workers' (over the
// same time; 0 when they finished none) by more than maxFailureRateIncrease, or a check fails;
// Promote when it finished minTasks within that and its checks pass; at maxDurationSeconds (of
// running: a pause stops the clock) without a verdict, onTimeout, except that a canary already over
// maxFailureRateIncrease is not promoted. While paused it waits.
func judgeCanary(o canaryObservation, st *v1alpha1.RolloutStatus) canaryVerdict {
	in := analysisInput{Analysis: o.Canary.Analysis, Now: o.Now, Started: o.Now, Paused: o.Paused, Checks: o.Checks,
		Stable: o.Outcomes[st.Stable.Revision], New: o.Outcomes[st.Canary.Revision]}
	if st.StartedAt != nil {
		in.Started = st.StartedAt.Time
	}
	for _, rec := range o.Restarts {
		if rec.Time.Time.Before(in.Started) {
			continue
		}
		switch rec.Revision {
		case st.Canary.Revision:
			in.Restarts++
		case st.Stable.Revision:
			in.StableRestarts++
		}
	}
	return judgeAnalysis(in)
}

// analysisInput is what an analysis judges: the new revision's outcomes and restarts, and the stable
// one's, since it started, and its checks' results when they were run.
type analysisInput struct {
	Analysis                 v1alpha1.CanaryAnalysis
	Now, Started             time.Time
	Paused                   bool
	Stable, New              usage.Counts
	Restarts, StableRestarts int
	Checks                   []checkResult
}

// judgeAnalysis is the verdict of an analysis (a canary's, a blue-green preview's): see judgeCanary.
func judgeAnalysis(in analysisInput) canaryVerdict {
	a, o, started := in.Analysis, in, in.Started
	v := canaryVerdict{verdict: verdictContinue, stable: in.Stable, canary: in.New, restarts: in.Restarts, stableRestarts: in.StableRestarts}
	if o.Paused {
		v.evidence = "paused (the fleet is suspended or over its budget): the canary waits"
		return v
	}
	if maxRestarts := int(ptr.Deref(a.MaxRestarts, 0)); v.restarts > maxRestarts {
		v.verdict, v.evidence = verdictAbort, fmt.Sprintf("%d canary workers replaced (maxRestarts %d)", v.restarts, maxRestarts)
		return v
	}
	maxIncrease, err := strconv.ParseFloat(a.MaxFailureRateIncrease, 64)
	if err != nil {
		maxIncrease = 0.05
	}
	done := v.canary.Succeeded + v.canary.Failed
	rate := func(c usage.Counts) float64 {
		if n := c.Succeeded + c.Failed; n > 0 {
			return float64(c.Failed) / float64(n)
		}
		return 0
	}
	rates := fmt.Sprintf("canary failure rate %s (%d of %d), stable %s (%d of %d)", pct(rate(v.canary)), v.canary.Failed, done,
		pct(rate(v.stable)), v.stable.Failed, v.stable.Succeeded+v.stable.Failed)
	inc := rate(v.canary) - rate(v.stable)
	over := inc > maxIncrease+1e-9
	if done >= int64(a.MinTasks) {
		if over {
			v.verdict, v.evidence = verdictAbort, fmt.Sprintf("%s: %+.1f points, more than maxFailureRateIncrease %s", rates, 100*inc, a.MaxFailureRateIncrease)
			return v
		}
		if len(a.Checks) == 0 {
			v.verdict, v.evidence = verdictPromote, rates
			return v
		}
		if len(o.Checks) == 0 {
			v.runChecks, v.evidence = true, rates+"; running the checks"
			return v
		}
		var pending []string
		for _, c := range o.Checks {
			if c.Err != "" {
				pending = append(pending, fmt.Sprintf("check %s could not run: %s", c.Name, c.Err))
				continue
			}
			if ok, err := checkPasses(c.Condition, c.Value); err != nil || !ok {
				v.verdict, v.evidence = verdictAbort, fmt.Sprintf("%s; check %s: result %g, want %s", rates, c.Name, c.Value, c.Condition)
				return v
			}
		}
		if len(pending) == 0 {
			v.verdict, v.evidence = verdictPromote, rates+"; every check passed"
			return v
		}
		rates += "; " + strings.Join(pending, "; ")
		v.recheck = checkRetry
	}
	deadline := started.Add(time.Duration(a.MaxDurationSeconds) * time.Second)
	if !o.Now.Before(deadline) {
		v.evidence = fmt.Sprintf("no verdict after maxDurationSeconds %d (%d of minTasks %d tasks); %s", a.MaxDurationSeconds, done, a.MinTasks, rates)
		v.verdict = verdictAbort
		if a.OnTimeout == v1alpha1.CanaryPromote && !over {
			v.verdict = verdictPromote
		}
		return v
	}
	v.evidence = rates
	if done < int64(a.MinTasks) {
		v.evidence = fmt.Sprintf("%d of minTasks %d tasks; %s", done, a.MinTasks, rates)
	}
	if until := deadline.Sub(o.Now); v.recheck == 0 || until < v.recheck {
		v.recheck = until
	}
	return v
}

func pct(r float64) string { return strconv.FormatFloat(math.Round(1000*r)/10, 'f', -1, 64) + "%" }
