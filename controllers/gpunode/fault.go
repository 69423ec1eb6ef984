// Package gpunode reads GPU faults from the conditions nodes already carry — the GPU health
// agent's GPUHealthy, GKE's XidCriticalError, the EKS node monitoring agent's
// AcceleratedHardwareReady, NVSentinel's — and, on nodes without the agent, labels a faulty node
// agentfleet.dev/gpu-health=unhealthy so that new agent workers avoid it, until the fault clears.
// What a node says is read by pure functions, which the fleet controller uses too.
package gpunode

import (
	"fmt"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentfleet/agentfleet/gpu"
)

// FaultCondition is a node condition, with the status, that means a GPU fault on the node.
type FaultCondition struct {
	Type   corev1.NodeConditionType
	Status corev1.ConditionStatus
}

func (c FaultCondition) String() string { return string(c.Type) + "=" + string(c.Status) }

// DefaultFaultConditions are the conditions that mean a GPU fault by default: the GPU health
// agent's, GKE's, the EKS node monitoring agent's and NVSentinel's.
const DefaultFaultConditions = "GPUHealthy=False,XidCriticalError=True,AcceleratedHardwareReady=False,GpuMemWatch=True,GpuNvlinkWatch=True,SysLogsXIDError=True"

// DefaultFaultConditionList is DefaultFaultConditions parsed.
func DefaultFaultConditionList() []FaultCondition {
	conds, err := ParseFaultConditions(DefaultFaultConditions)
	if err != nil {
		panic(err) // a constant; its test parses it
	}
	return conds
}

// ParseFaultConditions parses a comma-separated list of Type=Status pairs, Status one of True,
// False or Unknown (in any case). An empty list is no condition at all.
func ParseFaultConditions(s string) ([]FaultCondition, error) {
	var conds []FaultCondition
	seen := map[corev1.NodeConditionType]bool{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		typ, status, ok := strings.Cut(pair, "=")
		typ, status = strings.TrimSpace(typ), strings.TrimSpace(status)
		if !ok || typ == "" || strings.ContainsAny(typ, " \t=") {
			return nil, fmt.Errorf("bad GPU fault condition %q: want Type=Status, e.g. XidCriticalError=True", pair)
		}
		var st corev1.ConditionStatus
		for _, s := range []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown} {
			if strings.EqualFold(status, string(s)) {
				st = s
			}
		}
		if st == "" {
			return nil, fmt.Errorf("bad GPU fault condition %q: status %q is not True, False or Unknown", pair, status)
		}
		t := corev1.NodeConditionType(typ)
		if seen[t] {
			return nil, fmt.Errorf("bad GPU fault condition %q: %s is listed twice", pair, typ)
		}
		seen[t] = true
		conds = append(conds, FaultCondition{Type: t, Status: st})
	}
	return conds, nil
}

// maxConditionMessage bounds what of a condition's message goes into the evidence.
const maxConditionMessage = 256

// Fault says whether the node has one of the fault conditions, with the evidence: each such
// condition, its reason and message, in the order of conds.
func Fault(n *corev1.Node, conds []FaultCondition) (bool, string) {
	var found []string
	for _, fc := range conds {
		for _, c := range n.Status.Conditions {
			if c.Type != fc.Type || c.Status != fc.Status {
				continue
			}
			e := fc.String()
			if detail := nonEmpty(c.Reason, truncate(c.Message, maxConditionMessage)); len(detail) > 0 {
				e += " (" + strings.Join(detail, ": ") + ")"
			}
			found = append(found, e)
		}
	}
	return len(found) > 0, strings.Join(found, "; ")
}

// IsGPUNode says whether the node has GPUs: nvidia.com/gpu capacity above zero.
func IsGPUNode(n *corev1.Node) bool {
	q, ok := n.Status.Capacity[gpu.Resource]
	return ok && q.Sign() > 0
}

// HasAgent says whether AgentFleet's GPU health agent reports on the node: it has the GPUHealthy
// condition, True or False. The agent then owns the health label and attributes faults to the pods
// holding the failing GPUs.
func HasAgent(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == gpu.NodeConditionGPUHealthy {
			return true
		}
	}
	return false
}

// labelledByOperator says whether the health label is the one this operator set.
func labelledByOperator(n *corev1.Node) bool {
	return n.Annotations[gpu.HealthSetByAnnotation] == gpu.HealthSetByOperator
}

// WorkerFault is the evidence of a GPU fault on the node that no pod condition attributes to a GPU,
// so that every worker there that requests GPUs must go; "" if there is none. Only a GPU node
// without the GPU health agent has one: a fault condition, or the unhealthy label set by someone
// other than this operator (a person, another tool). Where the agent runs, it marks the pods holding
// the failing GPUs, and only those are replaced.
func WorkerFault(n *corev1.Node, conds []FaultCondition) string {
	if !IsGPUNode(n) || HasAgent(n) {
		return ""
	}
	if faulty, evidence := Fault(n, conds); faulty {
		return evidence
	}
	if n.Labels[gpu.HealthLabel] == gpu.HealthUnhealthy && !labelledByOperator(n) {
		return gpu.HealthLabel + "=" + gpu.HealthUnhealthy
	}
	return ""
}

// labelChange is what the operator does to a node's health label.
type labelChange int

const (
	labelKeep labelChange = iota
	// labelSet: set the label to unhealthy, annotated as the operator's.
	labelSet
	// labelRemove: remove the label and the annotation: the operator set it and the fault cleared.
	labelRemove
	// labelDisown: remove only the annotation: the label is someone else's now (the agent's, which
	// came to the node or rewrote the label).
	labelDisown
)

// planLabel decides the change to a node's health label: unhealthy while a GPU node without the
// agent has a fault condition (when labelling is on), removed when the condition clears, and never
// a label the operator did not set.
func planLabel(n *corev1.Node, conds []FaultCondition, enabled bool) labelChange {
	faulty, _ := Fault(n, conds)
	want := enabled && faulty && IsGPUNode(n) && !HasAgent(n)
	label := n.Labels[gpu.HealthLabel]
	switch {
	case want && label != gpu.HealthUnhealthy:
		return labelSet
	case want:
		return labelKeep // unhealthy already: the operator's, or someone's it leaves alone
	case labelledByOperator(n) && label == gpu.HealthUnhealthy && !HasAgent(n):
		return labelRemove
	case labelledByOperator(n):
		return labelDisown
	}
	return labelKeep
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
