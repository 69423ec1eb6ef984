package fleet

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

// clusterView is what a blue-green step needs of a RayCluster: what it runs and how ready it is.
type clusterView struct {
	Name string
	// TemplateHash and HeadHash are the RayCluster's agentfleet.dev/template-hash and head-hash
	// (the head hash of a RayCluster written before there was one: "" , see headChanged).
	TemplateHash, HeadHash string
	RayVersion             string
	// Revision is what its agent workers run, with TemplateHash, RayVersion and RayCluster set.
	Revision v1alpha1.RevisionStatus
	// HeadReady and ReadyWorkers are KubeRay's HeadPodReady condition and status.readyWorkerReplicas.
	HeadReady    bool
	ReadyWorkers int32
	// Restarts are its agent workers' containers' restarts (observed for a preview under analysis).
	Restarts int32
}

// viewOf is a RayCluster's clusterView.
func viewOf(rc *rayv1.RayCluster) clusterView {
	v := clusterView{
		Name: rc.Name, TemplateHash: rc.Annotations[v1alpha1.AnnotationTemplateHash], HeadHash: rc.Annotations[v1alpha1.AnnotationHeadHash],
		RayVersion: rc.Spec.RayVersion, Revision: revisionStatus(rc, v1alpha1.WorkerGroup),
		HeadReady: headReady(rc), ReadyWorkers: rc.Status.ReadyWorkerReplicas,
	}
	if rc.Status.ObservedGeneration < rc.Generation {
		// What KubeRay reports is of an older spec of it: not yet ready for this one.
		v.HeadReady, v.ReadyWorkers = false, 0
	}
	v.Revision.TemplateHash, v.Revision.RayVersion, v.Revision.RayCluster = v.TemplateHash, v.RayVersion, rc.Name
	return v
}

// blueGreenObservation is what a blue-green step is decided from.
type blueGreenObservation struct {
	Now          time.Time
	Strategy     v1alpha1.RolloutStrategy
	ReadyTimeout time.Duration
	Replicas     int32
	// Paused: the fleet is suspended: a preview's clock stops (its pods are gone).
	Paused bool
	// Desired is the RayCluster rayspecs built (Name: the preview's name).
	Desired clusterView
	// Active is the RayCluster that runs the fleet's agents (nil: none yet); Preview the preview
	// beside it (nil: none).
	Active, Preview *clusterView
	// PreviewNameTaken: a RayCluster of the preview's name is still being deleted.
	PreviewNameTaken bool
	// Previous is status.rollout.
	Previous *v1alpha1.RolloutStatus
	// Analysis is blueGreen.analysis with its defaults (nil: none); Outcomes the agents' tasks by
	// RayCluster since the preview started; Checks the analysis' checks' results, when run.
	Analysis *v1alpha1.CanaryAnalysis
	Outcomes map[string]usage.Counts
	Checks   []checkResult
}

// blueGreenPlan is what a step does to the fleet's RayClusters, and status.rollout.
type blueGreenPlan struct {
	// Keep: the active RayCluster keeps running what it runs (rayspecs.KeepTemplates); only its
	// worker count and suspend follow the spec.
	Keep bool
	// NeedsBlueGreen, when set, is why the spec's change is not applied (a head change under
	// Rolling or Canary).
	NeedsBlueGreen string
	// CreatePreview: create the preview RayCluster as built; DeletePreview: delete the preview;
	// Switch: the preview is Ready: delete the active RayCluster and make the preview the active one.
	CreatePreview, DeletePreview, Switch bool
	// Decided: Status is status.rollout (under BlueGreen); otherwise the canary phase decides it.
	Decided bool
	Status  *v1alpha1.RolloutStatus
	// The change of phase to tell (EventReason "" for none).
	EventWarning         bool
	EventReason, Message string
	RecheckAfter         time.Duration
	// RunChecks: the preview passed its analysis' outcomes; its checks decide (the phase runs them
	// and decides again).
	RunChecks bool
}

// headChanged says whether the spec changes what the active RayCluster's head runs (rayVersion,
// spec.head). A RayCluster written before the head hash existed is judged by its rayVersion.
func headChanged(active, desired clusterView) bool {
	if active.HeadHash == "" {
		return active.RayVersion != desired.RayVersion
	}
	return active.HeadHash != desired.HeadHash
}

// planBlueGreen decides a step of the fleet's RayClusters (pure: the controller observes, calls it,
// and applies the plan). Under Rolling and Canary a change of the head is not applied: the active
// RayCluster keeps running what it runs and the fleet says why (NeedsBlueGreen); a preview left
// from BlueGreen is deleted. Under BlueGreen every change of the active RayCluster's template starts
// a preview beside it, at replicas, while the active one keeps its revision; a Ready preview is
// switched to (the active is deleted), one not Ready within the timeout is deleted (Aborted: the
// fleet stays on the active revision until the spec changes again). A newer change replaces the
// preview; a revert to the active revision deletes it.
func planBlueGreen(o blueGreenObservation) blueGreenPlan {
	var plan blueGreenPlan
	if o.Active == nil {
		if o.Strategy == v1alpha1.RolloutBlueGreen {
			plan.Decided = true
			plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhaseStable, Stable: o.Desired.Revision}
		}
		return plan // the first RayCluster is created as built
	}
	active := *o.Active
	if o.Strategy != v1alpha1.RolloutBlueGreen {
		plan.DeletePreview = o.Preview != nil
		if headChanged(active, o.Desired) {
			what := "spec.head"
			if active.RayVersion != o.Desired.RayVersion {
				what = fmt.Sprintf("rayVersion %s → %s", active.RayVersion, o.Desired.RayVersion)
			}
			plan.Keep = true
			plan.NeedsBlueGreen = fmt.Sprintf("the spec changes the Ray head (%s), which a worker roll cannot carry: "+
				"RayCluster %s keeps running what it runs; set spec.rollout.strategy to BlueGreen to move to a new RayCluster, or revert the change",
				what, active.Name)
		}
		return plan
	}

	plan.Decided = true
	prev := o.Previous
	if prev != nil && prev.Strategy != v1alpha1.RolloutBlueGreen {
		prev = nil
	}
	is := func(phase v1alpha1.RolloutPhase, templateHash string) bool {
		return prev != nil && prev.Phase == phase && prev.Canary != nil && prev.Canary.TemplateHash == templateHash
	}
	if active.TemplateHash == o.Desired.TemplateHash {
		// No change pending: a preview of a reverted change goes.
		plan.DeletePreview = o.Preview != nil
		switch {
		case is(v1alpha1.RolloutPhasePromoted, active.TemplateHash):
			plan.Status = prev.DeepCopy()
		case is(v1alpha1.RolloutPhasePreview, active.TemplateHash):
			// A switch cut between deleting the old RayCluster and writing the status: the
			// preview is the active one now.
			now := metav1.NewTime(o.Now)
			plan.Status = prev.DeepCopy()
			plan.Status.Phase, plan.Status.FinishedAt, plan.Status.Stable = v1alpha1.RolloutPhasePromoted, &now, active.Revision
			plan.Status.Message = fmt.Sprintf("switched to RayCluster %s", active.Name)
			plan.EventReason, plan.Message = EventBlueGreenPromoted, fmt.Sprintf("RayCluster %s with revision %s is the active one", active.Name, active.Revision.Revision)
		case prev != nil && prev.Canary != nil && prev.Phase != v1alpha1.RolloutPhasePromoted:
			plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhaseStable, Stable: active.Revision}
			plan.EventReason = EventBlueGreenAbandoned
			plan.Message = fmt.Sprintf("The change to revision %s was reverted: RayCluster %s runs revision %s", revisionOf(prev.Canary), active.Name, active.Revision.Revision)
		default:
			plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhaseStable, Stable: active.Revision}
		}
		return plan
	}

	// A change is pending: the active RayCluster keeps its revision until the switch.
	plan.Keep = true
	desired := o.Desired.Revision
	if is(v1alpha1.RolloutPhaseAborted, o.Desired.TemplateHash) {
		plan.Status = prev.DeepCopy()
		plan.Status.Stable = active.Revision
		plan.DeletePreview = o.Preview != nil
		return plan
	}
	now := metav1.NewTime(o.Now)
	if !is(v1alpha1.RolloutPhasePreview, o.Desired.TemplateHash) {
		// A new change: its preview starts now (replacing a preview of an older change).
		plan.Status = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhasePreview, Stable: active.Revision, Canary: &desired, StartedAt: &now}
		if o.Paused {
			plan.Status.PausedAt = &now
		}
		plan.EventReason = EventBlueGreenStarted
		plan.Message = fmt.Sprintf("Starting RayCluster %s with revision %s (Ray %s) beside RayCluster %s (revision %s, Ray %s)",
			desired.RayCluster, desired.Revision, desired.RayVersion, active.Name, active.Revision.Revision, active.RayVersion)
	} else {
		plan.Status = prev.DeepCopy()
		plan.Status.Stable = active.Revision
		plan.Status.Canary = &desired
	}
	st := plan.Status
	if o.Preview == nil || o.Preview.TemplateHash != o.Desired.TemplateHash {
		plan.DeletePreview = o.Preview != nil
		plan.CreatePreview = o.Preview == nil && !o.PreviewNameTaken
		st.Message = fmt.Sprintf("creating RayCluster %s", desired.RayCluster)
		if o.PreviewNameTaken {
			st.Message = fmt.Sprintf("waiting for the old RayCluster %s to be deleted before creating it again", desired.RayCluster)
		}
		return plan
	}
	// The clock stops while paused: the start moves on by the pause when it ends.
	switch {
	case o.Paused && st.PausedAt == nil:
		st.PausedAt = &now
	case !o.Paused && st.PausedAt != nil:
		if st.StartedAt != nil {
			st.StartedAt = ptr.To(metav1.NewTime(st.StartedAt.Add(o.Now.Sub(st.PausedAt.Time))))
		}
		st.PausedAt = nil
	}
	p := o.Preview
	progress := fmt.Sprintf("RayCluster %s: head ready %t, %d of %d agent workers ready", p.Name, p.HeadReady, p.ReadyWorkers, o.Replicas)
	st.Message = progress
	if o.Paused {
		return plan
	}
	deadline := o.Now
	if st.StartedAt != nil {
		deadline = st.StartedAt.Add(o.ReadyTimeout)
	}
	ready := p.HeadReady && p.ReadyWorkers >= o.Replicas
	if ready && o.Analysis != nil {
		// Ready: the analysis decides.
		in := analysisInput{Analysis: *o.Analysis, Now: o.Now, Started: o.Now, Checks: o.Checks,
			Stable: o.Outcomes[active.Name], New: o.Outcomes[p.Name], Restarts: int(p.Restarts)}
		if st.StartedAt != nil {
			in.Started = st.StartedAt.Time
		}
		v := judgeAnalysis(in)
		st.Stable.TasksSucceeded, st.Stable.TasksFailed = v.stable.Succeeded, v.stable.Failed
		st.Canary.TasksSucceeded, st.Canary.TasksFailed, st.Canary.Restarts = v.canary.Succeeded, v.canary.Failed, int32(v.restarts)
		progress = fmt.Sprintf("RayCluster %s Ready; %s", p.Name, v.evidence)
		st.Message = progress
		switch v.verdict {
		case verdictAbort:
			plan.DeletePreview = true
			st.Phase, st.FinishedAt = v1alpha1.RolloutPhaseAborted, &now
			plan.EventWarning, plan.EventReason = true, EventBlueGreenAborted
			plan.Message = fmt.Sprintf("RayCluster %s with revision %s failed its analysis (%s): deleted it; RayCluster %s keeps running revision %s",
				p.Name, desired.Revision, v.evidence, active.Name, active.Revision.Revision)
			return plan
		case verdictContinue:
			plan.RecheckAfter, plan.RunChecks = v.recheck, v.runChecks
			return plan
		}
	}
	switch {
	case ready:
		plan.Switch = true
		st.Phase, st.FinishedAt = v1alpha1.RolloutPhasePromoted, &now
		st.Stable = desired
		st.Message = fmt.Sprintf("switched from RayCluster %s (revision %s) to RayCluster %s, Ready", active.Name, active.Revision.Revision, p.Name)
		if o.Analysis != nil {
			st.Message = fmt.Sprintf("switched from RayCluster %s (revision %s) to RayCluster %s: %s", active.Name, active.Revision.Revision, p.Name, progress)
		}
		plan.EventReason = EventBlueGreenPromoted
		plan.Message = fmt.Sprintf("RayCluster %s with revision %s is Ready: switched to it and deleting RayCluster %s", p.Name, desired.Revision, active.Name)
	case !o.Now.Before(deadline):
		plan.DeletePreview = true
		st.Phase, st.FinishedAt = v1alpha1.RolloutPhaseAborted, &now
		st.Message = fmt.Sprintf("not Ready within %s: %s", o.ReadyTimeout, progress)
		plan.EventWarning, plan.EventReason = true, EventBlueGreenAborted
		plan.Message = fmt.Sprintf("RayCluster %s with revision %s was not Ready within %s (head ready %t, %d of %d agent workers ready): deleted it; RayCluster %s keeps running revision %s",
			p.Name, desired.Revision, o.ReadyTimeout, p.HeadReady, p.ReadyWorkers, o.Replicas, active.Name, active.Revision.Revision)
	default:
		plan.RecheckAfter = deadline.Sub(o.Now)
	}
	return plan
}
