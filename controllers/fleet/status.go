package fleet

import (
	"fmt"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/internal/cost"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// statusObservation is everything a fleet's status is computed from: what one reconcile observed
// and what blocked it. Nothing in it is what was requested of KubeRay, only what KubeRay, the
// kubelets and the phases reported.
type statusObservation struct {
	Now time.Time
	// Fleet is the fleet as read; its status is the previous one (restart records included).
	Fleet *v1alpha1.AgentFleet
	// Cluster is the RayCluster as observed (after this reconcile's writes); nil if there is none.
	Cluster *rayv1.RayCluster
	// PromptHash is the prompt hash of the template rayspecs built ("" without a prompt), and
	// DesiredRevision its worker revision.
	PromptHash, DesiredRevision string
	// Pods are the agent worker pods; nil with Err: the pass failed before it saw them (workerPods
	// returns an empty list for none).
	Pods []corev1.Pod
	// Jobs are the jobs' states; nil when the jobs phase did not run.
	Jobs []v1alpha1.JobStatus
	// Blocked is what stopped the phases, if anything.
	Blocked *blocker
	// BudgetExhausted says why unhealthy workers were not replaced ("" if none were held).
	BudgetExhausted string
	// GPUNodes is what the nodes of the GPU workers say about their GPUs (empty when the health
	// phase did not run: then only the pods' own GPU conditions are reported).
	GPUNodes nodeGPUs
	// Budget is the fleet budget's verdict; nil when it was not decided (the condition stays).
	Budget *usage.FleetVerdict
	// Usage is status.usage (nil: none, or not computed when Budget is nil).
	Usage *v1alpha1.UsageStatus
	// Rollout is status.rollout as the canary phase decided it (RolloutDecided: it ran; otherwise
	// the status keeps what it said).
	Rollout        *v1alpha1.RolloutStatus
	RolloutDecided bool
	// NeedsBlueGreen is why the spec's change of the head is not applied ("" when it is).
	NeedsBlueGreen string
	// Err is a transient error of this reconcile.
	Err error
}

// workerCounts are the agent workers as observed.
type workerCounts struct {
	replicas, observed, ready, updated int32
	revision                           string
}

func countWorkers(o *statusObservation) workerCounts {
	c := workerCounts{replicas: o.Fleet.WorkerReplicas()}
	canary := ""
	if o.Cluster != nil {
		c.revision = rayspecs.WorkerHash(o.Cluster)
		canary = rayspecs.GroupHash(o.Cluster, v1alpha1.CanaryGroup)
	}
	for i := range o.Pods {
		p := &o.Pods[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		c.observed++
		if podReady(p) {
			c.ready++
		}
		// A pod is updated when it runs its own group's template: a canary's workers theirs.
		revision := c.revision
		if groupOf(p) == v1alpha1.CanaryGroup {
			revision = canary
		}
		if revision != "" && p.Labels[v1alpha1.LabelWorkerHash] == revision {
			c.updated++
		}
	}
	return c
}

// computeStatus is the fleet's status from an observation (the ReplicaSet controller's
// calculateStatus): pure, the time passed in. A transient error leaves observedGeneration and the
// summary conditions where they were, so that a reader knows the current generation is not yet
// reconciled, and says so in Reconciling.
func computeStatus(o statusObservation) v1alpha1.AgentFleetStatus {
	f := o.Fleet
	st := *f.Status.DeepCopy()
	c := countWorkers(&o)
	// A pass that failed before it saw the workers (or their RayCluster) says nothing of them: what
	// the status said stays, rather than none ("0/3" and no GPU faults during an API server's
	// hiccup), and so does the usage, whose GPU products come from the workers.
	unseen := o.Err != nil && o.Pods == nil

	st.GPUs = gpuStatus(f, o.Pods)
	if o.Budget != nil && !unseen {
		st.Usage = o.Usage
	}
	if o.RolloutDecided {
		st.Rollout = o.Rollout
	}
	st.GPUFaults = gpuFaults(o.Pods, o.GPUNodes)
	if o.Jobs != nil || len(f.Spec.Jobs) == 0 {
		st.Jobs = o.Jobs
	}
	if o.Cluster != nil {
		st.RayClusterName = o.Cluster.Name
		st.DashboardURL = dashboardURL(o.Cluster)
	}
	st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = c.observed, c.ready, c.updated
	st.Workers = fmt.Sprintf("%d/%d", c.ready, c.replicas)
	if unseen {
		prev := &f.Status
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = prev.Replicas, prev.ReadyReplicas, prev.UpdatedReplicas
		st.Workers = fmt.Sprintf("%d/%d", prev.ReadyReplicas, c.replicas)
		st.GPUs.Allocated = prev.GPUs.Allocated
	}
	if o.Err != nil {
		// Nor may it have seen the workers' nodes (the health phase): the faults stay until a pass
		// that sees both.
		st.GPUFaults = f.Status.GPUFaults
	}
	if o.Cluster != nil && rayspecs.GroupTemplate(o.Cluster, v1alpha1.CanaryGroup) == nil &&
		(c.replicas == 0 || (c.updated == c.observed && c.observed == c.replicas)) {
		// What the workers run, once they all run it: the template of the one worker group (during a
		// canary, or after an aborted one, not necessarily what the spec says).
		st.Revision, st.ModelVersion, st.PromptHash = c.revision, f.Spec.Model.Version, o.PromptHash
		if run := revisionStatus(o.Cluster, v1alpha1.WorkerGroup); run.Revision != "" && run.Revision != o.DesiredRevision {
			// The workers run another revision than the spec's (an aborted canary's stable one).
			st.ModelVersion, st.PromptHash = run.ModelVersion, run.PromptHash
		}
	}

	now := metav1.NewTime(o.Now)
	set := func(cond metav1.Condition) {
		cond.ObservedGeneration, cond.LastTransitionTime = f.Generation, now
		meta.SetStatusCondition(&st.Conditions, cond)
	}
	if o.Err != nil {
		set(metav1.Condition{Type: v1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReconcileError, Message: o.Err.Error()})
		st.Phase = phaseOf(st.Conditions, f.Spec.Suspend)
		return st
	}
	switch b := o.Budget; {
	case b == nil:
	case !b.Budgeted:
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionBudgetExceeded)
	case b.Exceeded:
		set(condition(v1alpha1.ConditionBudgetExceeded, true, v1alpha1.ReasonBudgetExceeded, b.Message))
	default:
		set(condition(v1alpha1.ConditionBudgetExceeded, false, v1alpha1.ReasonWithinBudget, b.Message))
	}
	a := assess(&o, c)
	set(readyCondition(a))
	set(progressingCondition(a))
	set(degradedCondition(a))
	for t, cond := range map[string]*metav1.Condition{v1alpha1.ConditionReconciling: reconcilingCondition(a), v1alpha1.ConditionStalled: stalledCondition(a)} {
		if cond == nil {
			meta.RemoveStatusCondition(&st.Conditions, t)
		} else {
			set(*cond)
		}
	}
	st.ObservedGeneration = f.Generation
	st.Phase = phaseOf(st.Conditions, f.Spec.Suspend)
	return st
}

// dashboardURL is the Ray dashboard behind the head Service KubeRay reports ("" until it does).
func dashboardURL(rc *rayv1.RayCluster) string {
	if rc.Status.Head.ServiceName == "" {
		return ""
	}
	return fmt.Sprintf("http://%s.%s.svc:%d", rc.Status.Head.ServiceName, rc.Namespace, rayspecs.DashboardPort)
}

// gpuStatus reports the GPUs the declared workers request and, separately, those the worker pods
// actually hold: the GPU limits of pods Running and not being deleted.
func gpuStatus(f *v1alpha1.AgentFleet, pods []corev1.Pod) v1alpha1.GPUStatus {
	g := v1alpha1.GPUStatus{Requested: f.WorkerReplicas() * f.Spec.Worker.GPUs, Product: f.Spec.Worker.GPUProduct}
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning || !p.DeletionTimestamp.IsZero() {
			continue
		}
		g.Allocated += cost.PodGPUs(p)
	}
	return g
}

// maxGPUFaults bounds status.gpuFaults (the CRD's maxItems).
const maxGPUFaults = 32

// gpuFaults lists the workers on failing GPUs (supervisor.GPUFault: their pod's condition, or their
// node's fault) and on degraded GPUs (their pod's condition True with reason GPUDegraded: the GPU
// health agent's), in the order of the pods, at most maxGPUFaults.
func gpuFaults(pods []corev1.Pod, nodes nodeGPUs) []v1alpha1.GPUFault {
	var faults []v1alpha1.GPUFault
	for i := range pods {
		p := &pods[i]
		if len(faults) == maxGPUFaults {
			break
		}
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		if f, ok := supervisor.GPUFault(p, nodes.faulty); ok {
			faults = append(faults, v1alpha1.GPUFault{Worker: p.Name, Node: f.Node, Reason: f.Reason, Message: f.Message})
		} else if c := gpuDegraded(p); c != nil {
			faults = append(faults, v1alpha1.GPUFault{Worker: p.Name, Node: p.Spec.NodeName, Reason: c.Reason, Message: truncate(c.Message, maxGPUFaultMessage)})
		}
	}
	return faults
}

// gpuDegraded returns the GPU health agent's condition on a pod holding a degraded GPU, or nil.
func gpuDegraded(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		c := &p.Status.Conditions[i]
		if c.Type == gpu.PodConditionGPUHealthy && c.Status == corev1.ConditionTrue && c.Reason == gpu.ReasonGPUDegraded {
			return c
		}
	}
	return nil
}

// maxGPUFaultMessage bounds a GPUFault's message (the CRD's maxLength is 1024).
const maxGPUFaultMessage = 512

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// fleetState is what a fleet is doing, one of these, with the reason and message every condition
// then reports.
type fleetState int

const (
	stateReady fleetState = iota
	stateProgressing
	stateDegraded
	stateSuspended
)

type assessment struct {
	state           fleetState
	reason, message string
	// stalled: it will not recover without a change by a person (kstatus Stalled).
	stalled bool
}

// assess is the one place where the order of what matters most is decided: a blocker, then
// suspension, then KubeRay's failures and the restart budget, then the rollout and scaling, then
// the head.
func assess(o *statusObservation, c workerCounts) assessment {
	rc := o.Cluster
	switch {
	case o.Blocked != nil && o.Blocked.degraded:
		return assessment{stateDegraded, o.Blocked.reason, o.Blocked.message, o.Blocked.stalled}
	case o.Blocked != nil:
		return assessment{stateProgressing, o.Blocked.reason, o.Blocked.message, o.Blocked.stalled}
	case o.Fleet.Spec.Suspend:
		if c.observed > 0 || (rc != nil && !clusterConditionTrue(rc, rayv1.RayClusterSuspended)) {
			return assessment{state: stateProgressing, reason: v1alpha1.ReasonSuspending, message: fmt.Sprintf("suspending: %d agent workers left", c.observed)}
		}
		return assessment{state: stateSuspended, reason: v1alpha1.ReasonSuspended, message: "the fleet is suspended"}
	case rc == nil:
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonCreating, message: "creating the RayCluster"}
	}
	if lag, behind := kubeRayLag(rc, o.Now); behind && lag >= kubeRayGrace {
		// What KubeRay reports of the RayCluster is older than what it was asked: every other
		// reading of it would be stale.
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonWaitingForKubeRay,
			message: fmt.Sprintf("KubeRay has not observed generation %d of RayCluster %s for %s (it last observed %d): is the KubeRay operator running?",
				rc.Generation, rc.Name, lag.Round(time.Second), rc.Status.ObservedGeneration)}
	}
	if f := meta.FindStatusCondition(rc.Status.Conditions, string(rayv1.RayClusterReplicaFailure)); f != nil && f.Status == metav1.ConditionTrue {
		return assessment{state: stateDegraded, reason: v1alpha1.ReasonRayClusterFailure,
			message: fmt.Sprintf("KubeRay reports %s on RayCluster %s: %s", f.Reason, rc.Name, f.Message)}
	}
	switch {
	case o.BudgetExhausted != "":
		return assessment{state: stateDegraded, reason: v1alpha1.ReasonRestartBudgetExhausted, message: o.BudgetExhausted}
	case o.Budget != nil && o.Budget.Pause:
		return assessment{state: stateDegraded, reason: v1alpha1.ReasonBudgetExceeded, message: o.Budget.Message}
	}
	if o.NeedsBlueGreen != "" {
		return assessment{state: stateDegraded, reason: v1alpha1.ReasonNeedsBlueGreen, message: o.NeedsBlueGreen, stalled: true}
	}
	ro := o.Fleet.Status.Rollout
	if o.RolloutDecided {
		ro = o.Rollout
	}
	if a, ok := rolloutAssessment(ro); ok {
		return a
	}
	switch {
	case c.updated < c.observed:
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonRolling,
			message: fmt.Sprintf("%d of %d agent workers updated to revision %s, %d ready", c.updated, c.replicas, c.revision, c.ready)}
	case c.ready < c.replicas || c.observed != c.replicas:
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonScaling, message: fmt.Sprintf("%d of %d agent workers ready", c.ready, c.replicas)}
	case !headReady(rc):
		msg := "waiting for the Ray head to be ready"
		//nolint:staticcheck // State is read only to tell a KubeRay without status conditions from one not done yet
		if meta.FindStatusCondition(rc.Status.Conditions, string(rayv1.HeadPodReady)) == nil && rc.Status.State != "" {
			msg += " (KubeRay reports a state but no HeadPodReady condition: turn its RayClusterStatusConditions feature gate on)"
		}
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonHeadNotReady, message: msg}
	}
	return assessment{state: stateReady, reason: v1alpha1.ReasonReady,
		message: fmt.Sprintf("%d of %d agent workers ready on revision %s", c.ready, c.replicas, c.revision)}
}

// rolloutAssessment is what a canary rollout in progress, or aborted, makes of the fleet.
func rolloutAssessment(ro *v1alpha1.RolloutStatus) (assessment, bool) {
	if ro == nil || ro.Canary == nil {
		return assessment{}, false
	}
	msg := func(what string) string {
		if ro.Message == "" {
			return what
		}
		return what + ": " + ro.Message
	}
	if ro.Strategy == v1alpha1.RolloutBlueGreen {
		switch ro.Phase {
		case v1alpha1.RolloutPhasePreview:
			return assessment{state: stateProgressing, reason: v1alpha1.ReasonBlueGreen,
				message: msg(fmt.Sprintf("blue-green rollout of revision %s to RayCluster %s (active: RayCluster %s)", ro.Canary.Revision, ro.Canary.RayCluster, ro.Stable.RayCluster))}, true
		case v1alpha1.RolloutPhaseAborted:
			return assessment{state: stateDegraded, reason: v1alpha1.ReasonBlueGreenAborted,
				message: msg(fmt.Sprintf("blue-green rollout of revision %s aborted; RayCluster %s runs revision %s until the spec changes", ro.Canary.Revision, ro.Stable.RayCluster, ro.Stable.Revision))}, true
		}
		return assessment{}, false
	}
	switch ro.Phase {
	case v1alpha1.RolloutPhaseCanary:
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonCanary, message: msg(fmt.Sprintf("canary of revision %s (stable %s)", ro.Canary.Revision, ro.Stable.Revision))}, true
	case v1alpha1.RolloutPhaseWaitingForPromotion:
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonWaitingForPromotion,
			message: msg(fmt.Sprintf("canary of revision %s passed; `agentfleet promote` to roll it out", ro.Canary.Revision))}, true
	case v1alpha1.RolloutPhasePromoting:
		return assessment{state: stateProgressing, reason: v1alpha1.ReasonPromoting, message: fmt.Sprintf("promoting revision %s", ro.Canary.Revision)}, true
	case v1alpha1.RolloutPhaseAborted:
		return assessment{state: stateDegraded, reason: v1alpha1.ReasonCanaryAborted,
			message: msg(fmt.Sprintf("canary of revision %s aborted; the workers run revision %s until the spec changes", ro.Canary.Revision, ro.Stable.Revision))}, true
	}
	return assessment{}, false
}

func condition(t string, ok bool, reason, message string) metav1.Condition {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: message}
}

// readyCondition is the summary: True only when the fleet runs as declared.
func readyCondition(a assessment) metav1.Condition {
	return condition(v1alpha1.ConditionReady, a.state == stateReady, a.reason, a.message)
}

// progressingCondition is True while the fleet moves towards what is declared.
func progressingCondition(a assessment) metav1.Condition {
	switch a.state {
	case stateProgressing:
		return condition(v1alpha1.ConditionProgressing, true, a.reason, a.message)
	case stateReady:
		return condition(v1alpha1.ConditionProgressing, false, v1alpha1.ReasonAsExpected, a.message)
	}
	return condition(v1alpha1.ConditionProgressing, false, a.reason, a.message)
}

// degradedCondition is True when the fleet is broken and needs attention.
func degradedCondition(a assessment) metav1.Condition {
	switch a.state {
	case stateDegraded:
		return condition(v1alpha1.ConditionDegraded, true, a.reason, a.message)
	case stateSuspended:
		return condition(v1alpha1.ConditionDegraded, false, v1alpha1.ReasonSuspended, "")
	}
	return condition(v1alpha1.ConditionDegraded, false, v1alpha1.ReasonAsExpected, "")
}

// reconcilingCondition is kstatus' Reconciling: present, True, while Progressing is; absent
// otherwise.
func reconcilingCondition(a assessment) *metav1.Condition {
	if a.state != stateProgressing {
		return nil
	}
	c := condition(v1alpha1.ConditionReconciling, true, a.reason, a.message)
	return &c
}

// stalledCondition is kstatus' Stalled: present, True, when only a person can unblock the fleet;
// absent otherwise.
func stalledCondition(a assessment) *metav1.Condition {
	if !a.stalled {
		return nil
	}
	c := condition(v1alpha1.ConditionStalled, true, a.reason, a.message)
	return &c
}

func phaseOf(conds []metav1.Condition, suspend bool) v1alpha1.Phase {
	switch {
	case meta.IsStatusConditionTrue(conds, v1alpha1.ConditionDegraded):
		return v1alpha1.PhaseDegraded
	case suspend && !meta.IsStatusConditionTrue(conds, v1alpha1.ConditionProgressing):
		return v1alpha1.PhaseSuspended
	case meta.IsStatusConditionTrue(conds, v1alpha1.ConditionReady):
		return v1alpha1.PhaseRunning
	case meta.IsStatusConditionTrue(conds, v1alpha1.ConditionProgressing):
		return v1alpha1.PhaseProgressing
	}
	return v1alpha1.PhasePending
}

// kubeRayGrace is how long KubeRay may take to observe a RayCluster's spec before the fleet says it
// waits for KubeRay: a busy KubeRay (one reconcile at a time by default) takes seconds, a stopped one
// never does.
const kubeRayGrace = time.Minute

// kubeRayLag says whether KubeRay has yet to observe the RayCluster's generation (its
// status.observedGeneration is behind) and for how long: since the last write of the RayCluster's
// spec or metadata (its managed fields' times; its creation before any), so a pure function of the
// object.
func kubeRayLag(rc *rayv1.RayCluster, now time.Time) (time.Duration, bool) {
	if rc.Status.ObservedGeneration >= rc.Generation {
		return 0, false
	}
	since := rc.CreationTimestamp.Time
	for _, m := range rc.ManagedFields {
		if m.Subresource == "" && m.Time != nil && m.Time.After(since) {
			since = m.Time.Time
		}
	}
	return max(now.Sub(since), 0), true
}

// headReady reads KubeRay's HeadPodReady condition.
func headReady(rc *rayv1.RayCluster) bool {
	return clusterConditionTrue(rc, rayv1.HeadPodReady)
}

func clusterConditionTrue(rc *rayv1.RayCluster, t rayv1.RayClusterConditionType) bool {
	return meta.IsStatusConditionTrue(rc.Status.Conditions, string(t))
}
