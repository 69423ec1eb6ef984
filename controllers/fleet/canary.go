package fleet

import (
	"fmt"
	"math"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

// canaryObservation is what a step of a rollout is decided from: the strategy, the RayCluster's
// worker groups as observed, the previous rollout status, the agents' task outcomes by revision
// since the canary began, and the time.
type canaryObservation struct {
	Now      time.Time
	Strategy v1alpha1.RolloutStrategy
	Canary   v1alpha1.CanarySpec // defaults resolved (AgentFleet.CanarySettings)
	Replicas int32
	Suspend  bool
	// Desired is the revision rayspecs built, with what it runs.
	Desired v1alpha1.RevisionStatus
	// Stable is the revision of the RayCluster's stable group's template, with what it runs;
	// Revision "" when there is no RayCluster yet.
	Stable v1alpha1.RevisionStatus
	// CanaryGroup is the revision of the RayCluster's canary group's template ("" without the group);
	// CanaryPods its pods.
	CanaryGroup string
	CanaryPods  int
	// StablePods, StableReady and StableUpdated count the stable group's pods (updated: on the
	// group's template).
	StablePods, StableReady, StableUpdated int
	// Previous is status.rollout.
	Previous *v1alpha1.RolloutStatus
	// Outcomes are the tasks by revision since the canary began (revisionOutcomes).
	Outcomes map[string]usage.Counts
	// Restarts are the restart records (status.recentRestarts): a canary's are those of its revision
	// since it began.
	Restarts []v1alpha1.RestartRecord
	// Promote is the revision the annotation agentfleet.dev/promote names ("" none).
	Promote string
}

// canaryPlan is the RayCluster's worker layout and the rollout's status, as a step decides.
type canaryPlan struct {
	// StableFromCluster: the stable group keeps the RayCluster's template (the stable revision), not
	// the one rayspecs built.
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
}

// canaryWorkers is how many workers run a canary: canary.workers against replicas, rounded up, at
// least 1, at most replicas.
func canaryWorkers(w *intstr.IntOrString, replicas int32) int32 {
	n, err := intstr.GetScaledValueFromIntOrPercent(w, int(replicas), true)
	if err != nil {
		n = 1
	}
	return min(max(int32(n), 1), replicas)
}

// planCanary decides a rollout's next step (pure: the controller observes, calls it, and applies
// the layout). Under Rolling it only makes sure a canary group left from an earlier strategy goes.
// Under Canary a new revision starts a canary: the stable group keeps its template (no stable worker
// restarts) at replicas − n, the canary group runs the new one on n; the verdict (judgeCanary)
// promotes it (the stable group takes the new template and rolls as under Rolling, grows back to
// replicas, then the canary group goes) or aborts it (the stable group grows back to replicas on
// its template, the canary group goes, the fleet is Degraded until the spec changes again: a `git
// revert` to the stable revision clears it without restarting a stable worker). A newer change
// during a canary replaces it: the newest spec wins.
func planCanary(o canaryObservation) canaryPlan {
	r := o.Replicas
	plan := canaryPlan{StableReplicas: r}
	// retire: the canary group goes, its replicas at 0 until its pods are gone.
	retire := func() {
		if o.CanaryGroup != "" && o.CanaryPods > 0 {
			plan.CanaryGroup, plan.CanaryReplicas = true, 0
		}
	}
	if o.Stable.Revision == "" {
		return plan // no RayCluster yet: it is created on the revision built
	}
	if o.Strategy != v1alpha1.RolloutCanary {
		retire()
		return plan
	}
	n := canaryWorkers(o.Canary.Workers, r)
	prev := o.Previous
	inPhase := func(phases ...v1alpha1.RolloutPhase) bool {
		if prev == nil || prev.Canary == nil || prev.Canary.Revision != o.Desired.Revision {
			return false
		}
		for _, p := range phases {
			if prev.Phase == p {
				return true
			}
		}
		return false
	}
	st := func(phase v1alpha1.RolloutPhase) *v1alpha1.RolloutStatus {
		s := &v1alpha1.RolloutStatus{Phase: phase, Stable: o.Stable}
		if prev != nil {
			s = prev.DeepCopy()
			s.Phase = phase
		}
		return s
	}
	switch {
	case inPhase(v1alpha1.RolloutPhasePromoting):
		// The stable group runs the promoted revision and rolls to it (the rollout phase), grows
		// back to replicas while the canary stays, then the canary goes.
		plan.Status = st(v1alpha1.RolloutPhasePromoting)
		plan.CanaryGroup, plan.CanaryReplicas = o.CanaryGroup != "", n
		switch {
		case o.Stable.Revision != o.Desired.Revision || o.StableUpdated < o.StablePods:
			plan.StableReplicas = r - n
		case o.StableReady < int(r):
			plan.StableReplicas = r
		default:
			plan.CanaryReplicas = 0
			if o.CanaryPods == 0 {
				plan.CanaryGroup = false
			}
			if o.CanaryGroup == "" {
				plan.Status = promoted(prev, o)
				plan.EventReason, plan.Message = EventCanaryPromoted, fmt.Sprintf("Revision %s is promoted: every agent worker runs it", o.Desired.Revision)
			}
		}
		return plan
	case inPhase(v1alpha1.RolloutPhaseAborted):
		plan.StableFromCluster = true
		plan.Status = st(v1alpha1.RolloutPhaseAborted)
		retire()
		return plan
	case o.Desired.Revision == o.Stable.Revision:
		// No change pending. A canary or an aborted one whose change was reverted ends here, with no
		// stable worker restarted.
		retire()
		switch {
		case prev == nil:
			plan.Status = &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseStable, Stable: o.Stable}
		case prev.Phase == v1alpha1.RolloutPhasePromoted || prev.Phase == v1alpha1.RolloutPhaseStable:
			plan.Status = prev.DeepCopy()
		default:
			plan.Status = &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseStable, Stable: o.Stable}
			plan.EventReason, plan.Message = EventCanaryAbandoned, fmt.Sprintf("The change to revision %s was reverted: every agent worker runs revision %s", revisionOf(prev.Canary), o.Stable.Revision)
		}
		return plan
	}

	// A change is pending: a canary runs, or starts (a new one replaces an older one).
	plan.StableFromCluster = true
	plan.StableReplicas, plan.CanaryGroup, plan.CanaryReplicas = r-n, true, n
	if !inPhase(v1alpha1.RolloutPhaseCanary, v1alpha1.RolloutPhaseWaitingForPromotion) {
		now := metav1.NewTime(o.Now)
		desired := o.Desired
		plan.Status = &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseCanary, Stable: o.Stable, Canary: &desired, StartedAt: &now}
		plan.EventReason = EventCanaryStarted
		plan.Message = fmt.Sprintf("Canary of revision %s on %d of %d agent workers (stable revision %s)", desired.Revision, n, r, o.Stable.Revision)
		return plan
	}
	plan.Status = st(prev.Phase)
	v := judgeCanary(o, prev)
	plan.Status.Stable.TasksSucceeded, plan.Status.Stable.TasksFailed = v.stable.Succeeded, v.stable.Failed
	plan.Status.Canary.TasksSucceeded, plan.Status.Canary.TasksFailed = v.canary.Succeeded, v.canary.Failed
	plan.Status.Canary.Restarts = int32(v.restarts)
	plan.Status.Message = v.evidence
	plan.RecheckAfter = v.recheck
	switch v.verdict {
	case verdictPromote:
		if !ptr.Deref(o.Canary.AutoPromote, true) && o.Promote != o.Desired.Revision {
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

func promoted(prev *v1alpha1.RolloutStatus, o canaryObservation) *v1alpha1.RolloutStatus {
	s := prev.DeepCopy()
	now := metav1.NewTime(o.Now)
	s.Phase, s.FinishedAt = v1alpha1.RolloutPhasePromoted, &now
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
	verdict, evidence string
	stable, canary    usage.Counts
	restarts          int
	recheck           time.Duration
}

// judgeCanary is a canary's verdict: Abort when its workers were replaced more than maxRestarts
// times, or, once it finished minTasks, when its failure rate exceeds the stable workers' (over the
// same time) by more than maxFailureRateIncrease; Promote when it finished minTasks within that;
// at maxDurationSeconds without a verdict, onTimeout. A suspended fleet's canary waits.
func judgeCanary(o canaryObservation, prev *v1alpha1.RolloutStatus) canaryVerdict {
	a := o.Canary.Analysis
	v := canaryVerdict{verdict: verdictContinue, stable: o.Outcomes[prev.Stable.Revision], canary: o.Outcomes[prev.Canary.Revision]}
	started := o.Now
	if prev.StartedAt != nil {
		started = prev.StartedAt.Time
	}
	for _, rec := range o.Restarts {
		if rec.Revision == prev.Canary.Revision && !rec.Time.Time.Before(started) {
			v.restarts++
		}
	}
	if o.Suspend {
		v.evidence = "suspended: the canary waits"
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
	if done >= int64(a.MinTasks) {
		if inc := rate(v.canary) - rate(v.stable); inc > maxIncrease+1e-9 {
			v.verdict, v.evidence = verdictAbort, fmt.Sprintf("%s: %+.1f points, more than maxFailureRateIncrease %s", rates, 100*inc, a.MaxFailureRateIncrease)
			return v
		}
		v.verdict, v.evidence = verdictPromote, rates
		return v
	}
	deadline := started.Add(time.Duration(a.MaxDurationSeconds) * time.Second)
	if !o.Now.Before(deadline) {
		v.evidence = fmt.Sprintf("%d of minTasks %d tasks after maxDurationSeconds %d; %s", done, a.MinTasks, a.MaxDurationSeconds, rates)
		v.verdict = verdictAbort
		if a.OnTimeout == v1alpha1.CanaryPromote {
			v.verdict = verdictPromote
		}
		return v
	}
	v.evidence = fmt.Sprintf("%d of minTasks %d tasks; %s", done, a.MinTasks, rates)
	v.recheck = deadline.Sub(o.Now)
	return v
}

func pct(r float64) string { return strconv.FormatFloat(math.Round(1000*r)/10, 'f', -1, 64) + "%" }
