// Package supervisor decides which agent workers to replace: crashed ones (from pod status alone),
// those on a failing GPU (from the GPU health agent's pod condition, or a GPU fault of their node),
// and, under the heartbeat contract, stalled and looping ones, which Kubernetes and KubeRay see as
// Running. It is a pure function of what was observed and the time, within a restart budget.
package supervisor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
)

// Reasons a worker is replaced.
const (
	Crashed      = "Crashed"
	Stalled      = "Stalled"
	Looping      = "Looping"
	GPUUnhealthy = "GPUUnhealthy"
	// OverBudget: the worker's current task passed the fleet's per-task budget (tokens, duration,
	// cost), as its heartbeat Lease reports it.
	OverBudget = "OverBudget"
)

// Defaults.
const (
	// DefaultPendingDeadline: a worker Pending (unschedulable, or its image not pulled) this long is
	// replaced: it may land on a healthier node.
	DefaultPendingDeadline = 5 * time.Minute
	// BackoffBase and BackoffMax bound the wait between replacements of a worker slot.
	BackoffBase = time.Second
	BackoffMax  = 5 * time.Minute
	// DefaultMaxRestarts is restartBudget.maxRestarts when it is not set (the CRD defaults it too).
	DefaultMaxRestarts = 10
)

// Observation is what the decision is made from.
type Observation struct {
	Now time.Time
	// Workers are the agent worker pods; those being deleted or already handed to KubeRay are left
	// out by the caller.
	Workers []corev1.Pod
	// Leases of the fleet's workers, by name (the pod's).
	Leases map[string]*coordinationv1.Lease
	// Heartbeat is the fleet's heartbeat contract; nil when it has none (crashes only).
	Heartbeat *v1alpha1.HeartbeatSpec
	// TaskBudget is the fleet's per-task budget of steps, tokens, time and cost; zero for none.
	TaskBudget TaskBudget
	// Budget is the fleet's restart budget; Recent are the replacements made so far, oldest first.
	Budget v1alpha1.RestartBudget
	Recent []v1alpha1.RestartRecord
	// Replicas is the declared number of workers: the slots the backoff is spread over.
	Replicas int
	// PendingDeadline; zero means DefaultPendingDeadline.
	PendingDeadline time.Duration
	// FaultyNodes are the nodes with a GPU fault that no pod condition attributes to a GPU (a
	// foreign fault condition, or the unhealthy label, on a node without the GPU health agent), by
	// name, with the evidence: the workers there that request GPUs are replaced. The workers' own
	// GPU faults are read from their pods' conditions.
	FaultyNodes map[string]string
}

// TaskBudget is what one task may take, as enforced from the heartbeat; a zero field is no limit.
type TaskBudget struct {
	// MaxSteps: a task this many steps long is looping (AgentFleet.MaxStepsPerTask).
	MaxSteps    int32
	MaxTokens   int64
	MaxDuration time.Duration
	// MaxCost is what a task's tokens may cost, at Price; enforced only when Price.Priced.
	MaxCost float64
	Price   TokenPrice
}

// TokenPrice is the price of a million input and output tokens of the fleet's model.
type TokenPrice struct {
	In, Out  float64
	Currency string
	Priced   bool
}

// TaskBudgetOf is the per-task budget a fleet declares, at its model's token prices.
func TaskBudgetOf(f *v1alpha1.AgentFleet, price TokenPrice) (TaskBudget, error) {
	b := f.Spec.Budgets
	if b == nil {
		return TaskBudget{MaxSteps: f.MaxStepsPerTask()}, nil
	}
	t := TaskBudget{MaxSteps: f.MaxStepsPerTask(), MaxTokens: ptr.Deref(b.MaxTokens, 0), MaxDuration: time.Duration(ptr.Deref(b.MaxDurationSeconds, 0)) * time.Second, Price: price}
	if b.MaxCost != "" {
		v, err := strconv.ParseFloat(b.MaxCost, 64)
		if err != nil || v < 0 {
			return TaskBudget{}, fmt.Errorf("spec.budgets.maxCost %q is not a non-negative decimal", b.MaxCost)
		}
		t.MaxCost = v
	}
	return t, nil
}

// Replacement is a worker to replace and why.
type Replacement struct {
	Worker, Reason, Evidence string
	// Since is when the evidence arose, as far as the observation tells (a container's exit, the
	// moment a deadline passed, the heartbeat that reported a loop, the GPU condition's transition);
	// zero when it does not tell (a node's fault). Detection latency is measured from it.
	Since time.Time
}

// Decision is what to do now.
type Decision struct {
	// Replace are the workers to hand to KubeRay for replacement now, within budget and backoff.
	Replace []Replacement
	// Held are unhealthy workers not replaced now: over budget or in backoff.
	Held []Replacement
	// BudgetExhausted: more replacements are due than the budget allows in its window.
	BudgetExhausted bool
	// RecheckAfter is when the decision may change with time alone (a deadline passing, the backoff
	// or the window ending); zero if never.
	RecheckAfter time.Duration
}

// Decide returns which workers to replace.
func Decide(o Observation) Decision {
	var d Decision
	recheck := func(after time.Duration) {
		if after > 0 && (d.RecheckAfter == 0 || after < d.RecheckAfter) {
			d.RecheckAfter = after
		}
	}
	pendingDeadline := o.PendingDeadline
	if pendingDeadline == 0 {
		pendingDeadline = DefaultPendingDeadline
	}

	var unhealthy []Replacement
	for i := range o.Workers {
		p := &o.Workers[i]
		if beingRemoved(p) {
			// Kubernetes deletes it (its node is gone or was drained, it was evicted or preempted)
			// and KubeRay makes its successor: replacing it too would replace it twice.
			continue
		}
		// A failing GPU first: a worker on one often crashes too, and the GPU is the cause.
		if f, ok := GPUFault(p, o.FaultyNodes); ok {
			unhealthy = append(unhealthy, Replacement{Worker: p.Name, Reason: GPUUnhealthy, Evidence: f.Evidence(), Since: f.Since})
			continue
		}
		if r, ok := crashed(p, o.Now, pendingDeadline, recheck); ok {
			unhealthy = append(unhealthy, r)
			continue
		}
		if o.Heartbeat != nil {
			if r, ok := heartbeat(p, o.Leases[p.Name], o.Heartbeat, o.TaskBudget, o.Now, recheck); ok {
				unhealthy = append(unhealthy, r)
			}
		}
	}
	if len(unhealthy) == 0 {
		return d
	}

	// The budget: replacements in the window so far.
	window := time.Duration(o.Budget.WindowSeconds) * time.Second
	maxRestarts := DefaultMaxRestarts
	if o.Budget.MaxRestarts != nil {
		maxRestarts = int(*o.Budget.MaxRestarts)
	}
	// The window is counted from the records kept, at most MaxRecentRestarts: a larger budget (the
	// CRD refuses one; an object stored before that rule may have one) could never be found spent.
	maxRestarts = min(maxRestarts, v1alpha1.MaxRecentRestarts)
	var inWindow []time.Time
	for _, r := range o.Recent {
		if o.Now.Sub(r.Time.Time) < window {
			inWindow = append(inWindow, r.Time.Time)
		}
	}
	slices.SortFunc(inWindow, func(a, b time.Time) int { return a.Compare(b) })
	allowed := maxRestarts - len(inWindow)
	if allowed < len(unhealthy) {
		d.BudgetExhausted = true
		if len(inWindow) > 0 {
			// The oldest replacement leaving the window frees one.
			recheck(inWindow[0].Add(window).Sub(o.Now))
		}
	}
	// Backoff, per worker slot: KubeRay's workers have no stable identity, so a slot's replacements
	// are counted as the window's replacements spread over the declared workers. Once each slot has
	// been replaced in the window, the next replacement waits BackoffBase·2^(k-1) after the previous
	// one, k the replacements per slot, one at a time: a crash loop slows down, while a few
	// independent crashes in a large fleet are replaced at once.
	slots := max(o.Replicas, 1)
	if n := len(inWindow); n >= slots {
		perSlot := n / slots
		wait := min(BackoffBase<<min(perSlot-1, 20), BackoffMax)
		if next := inWindow[n-1].Add(wait); o.Now.Before(next) {
			recheck(next.Sub(o.Now))
			allowed = 0
		} else {
			allowed = min(allowed, 1)
		}
	}
	allowed = max(allowed, 0)
	n := min(allowed, len(unhealthy))
	d.Replace, d.Held = unhealthy[:n], unhealthy[n:]
	return d
}

// Reasons of a GPUFault that are not the GPU health agent's.
const (
	// NodeGPUFault: the worker's node has a GPU fault no pod condition attributes to a GPU.
	NodeGPUFault = "NodeGPUFault"
)

// maxGPUFaultMessage bounds the message taken from a pod condition or a node's evidence: it goes
// into events and the fleet's status.
const maxGPUFaultMessage = 512

// GPUFaultInfo is a fault of the GPU a worker holds, as observed.
type GPUFaultInfo struct {
	// Node is the worker's node.
	Node string
	// Reason is the reason of the pod condition the GPU health agent set, or NodeGPUFault.
	Reason string
	// Message is the pod condition's message (the agent names the GPU's UUID and the XID codes), or
	// the evidence of the node's fault.
	Message string
	// Since is the pod condition's last transition; zero for a node's fault.
	Since time.Time
}

// Evidence is the fault in one line: the node, the reason where it says more than GPUUnhealthy,
// the message.
func (f GPUFaultInfo) Evidence() string {
	if prefix := "node " + f.Node + ": "; strings.HasPrefix(f.Message, prefix) {
		f.Message = strings.TrimPrefix(f.Message, prefix) // the agent names its node itself: once is enough
	}
	switch f.Reason {
	case NodeGPUFault:
		return fmt.Sprintf("node %s has a GPU fault: %s", f.Node, f.Message)
	case GPUUnhealthy:
		return fmt.Sprintf("node %s: %s", f.Node, f.Message)
	}
	return fmt.Sprintf("node %s, %s: %s", f.Node, f.Reason, f.Message)
}

// GPUFault reads whether a worker's GPU failed: its pod has the condition
// agentfleet.dev/GPUHealthy=False (the GPU health agent's, for the pods holding a failing GPU), or it
// requests GPUs and its node is among faultyNodes (node name to evidence).
func GPUFault(p *corev1.Pod, faultyNodes map[string]string) (GPUFaultInfo, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == gpu.PodConditionGPUHealthy && c.Status == corev1.ConditionFalse {
			f := GPUFaultInfo{Node: p.Spec.NodeName, Reason: c.Reason, Message: truncate(c.Message, maxGPUFaultMessage), Since: c.LastTransitionTime.Time}
			if f.Reason == "" {
				f.Reason = GPUUnhealthy
			}
			return f, true
		}
	}
	if evidence, ok := faultyNodes[p.Spec.NodeName]; ok && p.Spec.NodeName != "" && RequestsGPU(p) {
		return GPUFaultInfo{Node: p.Spec.NodeName, Reason: NodeGPUFault, Message: truncate(evidence, maxGPUFaultMessage)}, true
	}
	return GPUFaultInfo{}, false
}

// RequestsGPU says whether a pod's containers request or limit GPUs.
func RequestsGPU(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		for _, rl := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
			if q, ok := rl[gpu.Resource]; ok && q.Sign() > 0 {
				return true
			}
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// removedBy are the reasons of a pod's DisruptionTarget condition that Kubernetes deletes the pod
// for: the pod garbage collector (its node is gone), the taint manager (its node NotReady or
// unreachable past the toleration), an eviction, a preemption.
var removedBy = map[string]bool{
	"DeletionByPodGC": true, "DeletionByTaintManager": true, "EvictionByEvictionAPI": true, "PreemptionByScheduler": true,
}

// beingRemoved says whether Kubernetes is deleting a worker pod.
func beingRemoved(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() {
		return true
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue && removedBy[c.Reason] {
			return true
		}
	}
	return false
}

// crashed reads a crash from pod status alone.
func crashed(p *corev1.Pod, now time.Time, pendingDeadline time.Duration, recheck func(time.Duration)) (Replacement, bool) {
	r := Replacement{Worker: p.Name, Reason: Crashed}
	if p.Status.Phase == corev1.PodFailed {
		r.Evidence = "pod Failed"
		if p.Status.Reason != "" {
			r.Evidence += ": " + p.Status.Reason
		}
		r.Since = failedSince(p)
		return r, true
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
			r.Evidence = fmt.Sprintf("container %s exited with code %d", cs.Name, cs.State.Terminated.ExitCode)
			r.Since = cs.State.Terminated.FinishedAt.Time
			return r, true
		case cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff":
			r.Evidence = fmt.Sprintf("container %s in CrashLoopBackOff after %d restarts", cs.Name, cs.RestartCount)
			if t := cs.LastTerminationState.Terminated; t != nil {
				r.Since = t.FinishedAt.Time
			}
			return r, true
		case cs.RestartCount > 0 && cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.ExitCode != 0:
			r.Evidence = fmt.Sprintf("container %s restarted %d times, last exit code %d", cs.Name, cs.RestartCount, cs.LastTerminationState.Terminated.ExitCode)
			r.Since = cs.LastTerminationState.Terminated.FinishedAt.Time
			return r, true
		}
	}
	if p.Status.Phase == corev1.PodPending {
		since := p.CreationTimestamp.Time
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				since = c.LastTransitionTime.Time
			}
		}
		if age := now.Sub(since); age >= pendingDeadline {
			r.Evidence = fmt.Sprintf("Pending for %ds", int(age.Seconds()))
			r.Since = since.Add(pendingDeadline)
			return r, true
		} else {
			recheck(pendingDeadline - age)
		}
	}
	return r, false
}

// heartbeat reads a stall or a loop from the worker's Lease.
func heartbeat(p *corev1.Pod, lease *coordinationv1.Lease, hb *v1alpha1.HeartbeatSpec, tb TaskBudget, now time.Time, recheck func(time.Duration)) (Replacement, bool) {
	deadline := time.Duration(hb.ProgressDeadlineSeconds) * time.Second
	readySince, ready := readyTime(p)
	if !ready {
		return Replacement{}, false // not started: no heartbeat is owed yet
	}
	if lease == nil {
		if age := now.Sub(readySince); age >= deadline {
			return Replacement{p.Name, Stalled, fmt.Sprintf("no heartbeat Lease %ds after the pod became Ready", int(age.Seconds())), readySince.Add(deadline)}, true
		} else {
			recheck(deadline - age)
		}
		return Replacement{}, false
	}
	a := lease.Annotations
	renewed := lease.CreationTimestamp.Time
	if lease.Spec.RenewTime != nil {
		renewed = lease.Spec.RenewTime.Time
	}
	// A loop is reported by a heartbeat: the evidence is as old as the renewal that carried it.
	if repeats, _ := heartbeatapi.ParseCount(a[heartbeatapi.AnnotationActionRepeats]); hb.MaxRepeatedActions > 0 && repeats >= int64(hb.MaxRepeatedActions) {
		return Replacement{p.Name, Looping, fmt.Sprintf("the same action %d times in a row (limit %d)", repeats, hb.MaxRepeatedActions), renewed}, true
	}
	if steps, _ := heartbeatapi.ParseCount(a[heartbeatapi.AnnotationTaskSteps]); tb.MaxSteps > 0 && steps >= int64(tb.MaxSteps) {
		return Replacement{p.Name, Looping, fmt.Sprintf("%d steps in one task (limit %d)", steps, tb.MaxSteps), renewed}, true
	}
	if age := now.Sub(renewed); age >= deadline {
		return Replacement{p.Name, Stalled, fmt.Sprintf("heartbeat not renewed for %ds", int(age.Seconds())), renewed.Add(deadline)}, true
	} else {
		recheck(deadline - age)
	}
	// Over budget only while the heartbeat is fresh: a worker that stopped renewing is stalled, and
	// one that stopped reporting tokens has no tokens over budget.
	if evidence, since, ok := OverTaskBudget(lease, tb, now, recheck); ok {
		return Replacement{p.Name, OverBudget, evidence, since}, true
	}
	if a[heartbeatapi.AnnotationState] == heartbeatapi.StateWorking {
		if last, err := time.Parse(heartbeatapi.TimeFormat, a[heartbeatapi.AnnotationLastStepTime]); err == nil {
			if age := now.Sub(last); age >= deadline {
				return Replacement{p.Name, Stalled, fmt.Sprintf("working without a step for %ds", int(age.Seconds())), last.Add(deadline)}, true
			} else {
				recheck(deadline - age)
			}
		}
	}
	return Replacement{}, false
}

// failedSince is when a Failed pod failed: its last container's exit, else its Ready condition's
// last transition; zero if neither is known.
func failedSince(p *corev1.Pod) time.Time {
	var t time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Terminated != nil && cs.State.Terminated.FinishedAt.After(t) {
			t = cs.State.Terminated.FinishedAt.Time
		}
	}
	if t.IsZero() {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
				t = c.LastTransitionTime.Time
			}
		}
	}
	return t
}

func readyTime(p *corev1.Pod) (time.Time, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time, true
		}
	}
	return time.Time{}, false
}

// OverTaskBudget says whether the current task of the worker whose Lease this is passed the
// per-task budget, with the evidence and since when. Tokens are the Lease's task-tokens; the
// duration runs from task-started while the worker is working; the cost is the task's tokens priced
// at the worker's lifetime mix of input and output tokens (the contract reports a task's tokens as
// one count), or, before any are reported, at the cheaper direction's price: never more than the
// task can have cost. recheck, if not nil, is told when the duration budget will run out.
func OverTaskBudget(lease *coordinationv1.Lease, tb TaskBudget, now time.Time, recheck func(time.Duration)) (evidence string, since time.Time, over bool) {
	a := lease.Annotations
	renewed := lease.CreationTimestamp.Time
	if lease.Spec.RenewTime != nil {
		renewed = lease.Spec.RenewTime.Time
	}
	working := a[heartbeatapi.AnnotationState] == heartbeatapi.StateWorking
	taskTokens, reported := heartbeatapi.ParseCount(a[heartbeatapi.AnnotationTaskTokens])
	if tb.MaxTokens > 0 && reported && taskTokens > tb.MaxTokens {
		return fmt.Sprintf("%d tokens in one task (limit %d)", taskTokens, tb.MaxTokens), renewed, true
	}
	if tb.MaxCost > 0 && tb.Price.Priced && reported && taskTokens > 0 {
		in, _ := heartbeatapi.ParseCount(a[heartbeatapi.AnnotationTokensIn])
		out, _ := heartbeatapi.ParseCount(a[heartbeatapi.AnnotationTokensOut])
		perMillion := min(tb.Price.In, tb.Price.Out)
		if in+out > 0 {
			perMillion = (float64(in)*tb.Price.In + float64(out)*tb.Price.Out) / float64(in+out)
		}
		if c := float64(taskTokens) * perMillion / 1e6; c > tb.MaxCost {
			return fmt.Sprintf("%d tokens in one task cost about %.4f %s (limit %s %s)", taskTokens, c, tb.Price.Currency,
				strconv.FormatFloat(tb.MaxCost, 'f', -1, 64), tb.Price.Currency), renewed, true
		}
	}
	if tb.MaxDuration > 0 && working {
		if started, err := time.Parse(heartbeatapi.TimeFormat, a[heartbeatapi.AnnotationTaskStarted]); err == nil {
			if age := now.Sub(started); age > tb.MaxDuration {
				return fmt.Sprintf("one task running for %ds (limit %ds)", int(age.Seconds()), int(tb.MaxDuration.Seconds())), started.Add(tb.MaxDuration), true
			} else if recheck != nil {
				recheck(tb.MaxDuration - age + time.Millisecond)
			}
		}
	}
	return "", time.Time{}, false
}
