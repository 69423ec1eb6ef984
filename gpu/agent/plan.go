package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentfleet/agentfleet/gpu"
)

// DefaultHeartbeatPeriod is how often the node condition is rewritten when nothing changed, so that
// its lastHeartbeatTime says the agent is alive (node-problem-detector's default period).
const DefaultHeartbeatPeriod = 5 * time.Minute

// maxMessage bounds a condition's message; a node has at most a few dozen GPUs, so it is rarely hit.
const maxMessage = 4096

// PlanInput is what Plan decides from: one poll, and the node and pods as the API server has them,
// whose conditions and label are what was published before.
type PlanInput struct {
	Observation
	// Node is the agent's node as read this poll.
	Node *corev1.Node
	Now  time.Time
	// HeartbeatPeriod: an unchanged node condition older than this is rewritten; 0 never.
	HeartbeatPeriod time.Duration
}

// Changes are the writes that publish a poll; the zero Changes write nothing.
type Changes struct {
	// NodeCondition is the node's GPUHealthy condition to patch into status.conditions.
	NodeCondition *corev1.NodeCondition
	// NodeLabel is the value to give gpu.HealthLabel.
	NodeLabel *string
	// Pods are the pod conditions to patch, sorted by namespace and name.
	Pods []PodChange
}

// PodChange is one pod's condition to patch.
type PodChange struct {
	Pod       types.NamespacedName
	Condition corev1.PodCondition
}

// Empty says whether there is nothing to write.
func (c Changes) Empty() bool {
	return c.NodeCondition == nil && c.NodeLabel == nil && len(c.Pods) == 0
}

// Plan returns what to write so that the node and the pods holding its GPUs say what the poll found,
// and nothing where they already do. A condition keeps its lastTransitionTime while its status
// stays; the node condition's lastHeartbeatTime is the time of its latest write.
//
// A condition is rewritten only when its status, reason or message changes. Messages name each GPU
// that is not Healthy by UUID with its evidence; for a Degraded GPU only the kinds of evidence,
// without the readings (a temperature changes every poll, and would make every poll a write).
func Plan(in PlanInput) Changes {
	var c Changes
	worst, msg := summary(in.Report.GPUs)
	want := corev1.NodeCondition{Type: NodeCondition, Status: corev1.ConditionTrue, Reason: ReasonGPUsHealthy, Message: msg}
	switch {
	case len(in.Report.GPUs) == 0:
		want.Reason = ReasonNoGPUs
	case worst == gpu.Unhealthy:
		want.Status, want.Reason = corev1.ConditionFalse, ReasonGPUUnhealthy
	case worst == gpu.Degraded:
		want.Reason = ReasonGPUDegraded
	}
	now := metav1.NewTime(in.Now)
	cur := nodeCondition(in.Node)
	stale := cur != nil && in.HeartbeatPeriod > 0 && in.Now.Sub(cur.LastHeartbeatTime.Time) >= in.HeartbeatPeriod
	if cur == nil || cur.Status != want.Status || cur.Reason != want.Reason || cur.Message != want.Message || stale {
		want.LastHeartbeatTime, want.LastTransitionTime = now, now
		if cur != nil && cur.Status == want.Status {
			want.LastTransitionTime = cur.LastTransitionTime
		}
		c.NodeCondition = &want
	}
	if label := healthValue(worst); in.Node == nil || in.Node.Labels[gpu.HealthLabel] != label {
		c.NodeLabel = &label
	}
	c.Pods = planPods(in, now)
	return c
}

func nodeCondition(n *corev1.Node) *corev1.NodeCondition {
	if n == nil {
		return nil
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == NodeCondition {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// planPods sets the condition on each pod holding a GPU that is not Healthy, and keeps it up to date
// on pods that have it.
func planPods(in PlanInput, now metav1.Time) []PodChange {
	held := map[types.NamespacedName][]GPU{}
	for _, g := range in.Report.GPUs {
		if g.Sample.UUID == "" {
			continue
		}
		for _, ref := range in.Holders[g.Sample.UUID] {
			if k := ref.Key(); !slices.ContainsFunc(held[k], func(h GPU) bool { return h.Sample.UUID == g.Sample.UUID }) {
				held[k] = append(held[k], g)
			}
		}
	}
	var changes []PodChange
	for k, gpus := range held {
		pod := in.Pods[k]
		if pod == nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue // not in the cache yet, or finished: nothing runs on the GPU to warn
		}
		worst, msg := summary(gpus)
		msg = truncate(fmt.Sprintf("node %s: %s", in.NodeName, msg), maxMessage)
		cur := podCondition(pod)
		if cur == nil && worst != gpu.Unhealthy && worst != gpu.Degraded {
			continue
		}
		want := corev1.PodCondition{Type: PodCondition, Status: corev1.ConditionTrue, Reason: ReasonGPUsHealthy, Message: msg}
		switch worst {
		case gpu.Unhealthy:
			want.Status, want.Reason = corev1.ConditionFalse, ReasonGPUUnhealthy
		case gpu.Degraded:
			want.Reason = ReasonGPUDegraded
		}
		if cur != nil && cur.Status == want.Status && cur.Reason == want.Reason && cur.Message == want.Message {
			continue
		}
		want.LastTransitionTime = now
		if cur != nil && cur.Status == want.Status {
			want.LastTransitionTime = cur.LastTransitionTime
		}
		changes = append(changes, PodChange{Pod: k, Condition: want})
	}
	slices.SortFunc(changes, func(a, b PodChange) int {
		return strings.Compare(a.Pod.String(), b.Pod.String())
	})
	return changes
}

func podCondition(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == PodCondition {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// summary returns the worst state of gpus and a message that names each GPU that is not Healthy,
// the Unhealthy ones first.
func summary(gpus []GPU) (gpu.State, string) {
	worst := gpu.Healthy
	var unhealthy, degraded []string
	for _, g := range gpus {
		st := g.Health.State
		if worse(st, worst) {
			worst = st
		}
		switch st {
		case gpu.Unhealthy:
			unhealthy = append(unhealthy, describe(g))
		case gpu.Degraded:
			degraded = append(degraded, describe(g))
		}
	}
	var parts []string
	if len(unhealthy) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d GPUs unhealthy: %s", len(unhealthy), len(gpus), strings.Join(unhealthy, "; ")))
	}
	if len(degraded) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d GPUs degraded: %s", len(degraded), len(gpus), strings.Join(degraded, "; ")))
	}
	if len(parts) == 0 {
		if len(gpus) == 0 {
			return worst, "NVML finds no GPU on this node"
		}
		return worst, fmt.Sprintf("%d of %d GPUs healthy", len(gpus), len(gpus))
	}
	return worst, truncate(strings.Join(parts, ". "), maxMessage)
}

// describe names one GPU that is not Healthy and says why.
func describe(g GPU) string {
	name := g.Sample.UUID
	if name == "" {
		name = fmt.Sprintf("GPU at index %d (no UUID yet)", g.Sample.Index)
	}
	evidence := g.Health.Evidence
	if g.Health.State == gpu.Degraded {
		evidence = make([]string, 0, len(g.Health.Evidence))
		for _, e := range g.Health.Evidence {
			if e = withoutReadings(e); !slices.Contains(evidence, e) {
				evidence = append(evidence, e)
			}
		}
	}
	s := name
	if len(evidence) > 0 {
		s += ": " + strings.Join(evidence, ", ")
	}
	if h := g.Health; h.State == gpu.Unhealthy && !h.QuietSince.IsZero() {
		s += fmt.Sprintf(" (clean since %s, recovering)", h.QuietSince.UTC().Format(time.RFC3339))
	}
	return s
}

// withoutReadings cuts a Degraded verdict's evidence at its first reading: "temperature 87C over
// 85C" is "temperature", "correctable ECC errors +150 in one poll (over 100)" is "correctable ECC
// errors". Evidence without a number ("thermal throttling (HwThermalSlowdown)") stays whole.
func withoutReadings(e string) string {
	i := strings.IndexAny(e, "+0123456789")
	if i <= 0 {
		return e
	}
	return strings.TrimSpace(e[:i])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = " …"
	cut := n - len(ellipsis)
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
