package supervisor

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// StrandedAfter is how long a worker pod must be past the end of its grace period (its
// deletionTimestamp), and its node silent (Ready=Unknown), before the pod is taken for stranded: a
// kubelet that answers has removed it well before then, and a node's status that went Unknown a
// moment ago (a kubelet restarting, a heartbeat late on a busy control plane) has had time to come
// back. Both times are the control plane's stamps read on the operator's clock: clocks that differ by
// more than this would shorten the margins.
const StrandedAfter = 30 * time.Second

// OutOfServiceTaint is the taint a person or a remediation tool puts on a node known to be shut
// down (Kubernetes' non-graceful node shutdown): its pods are force-deleted at once.
const OutOfServiceTaint = "node.kubernetes.io/out-of-service"

// Stranded is a worker whose deletion Kubernetes started and cannot finish: its node's kubelet is
// silent or gone, so the pod stays Terminating, and KubeRay, which counts a terminating pod as one of
// the group's workers, never replaces it. A ReplicaSet replaces such a pod at once; for a KubeRay
// worker group the pod must go.
type Stranded struct {
	Worker, Node, Evidence string
}

// FindStranded returns the worker pods to force-delete, and when to look again with time alone
// (zero: nothing is being deleted). A worker is stranded when it is being deleted and either its
// node is gone, or its node has the out-of-service taint, or it is past its grace period by
// StrandedAfter on a node silent (Ready=Unknown) for StrandedAfter. nodes maps the workers' nodes by
// name; one missing is gone. A node that reports NotReady (Ready=False) has a kubelet that answers
// and finishes its pods' deletion. A worker not being deleted is never stranded, whatever its node:
// when to give up on a silent node is the pods' toleration of node.kubernetes.io/unreachable (300 s
// by default), a choice of the cluster's.
func FindStranded(now time.Time, workers []corev1.Pod, nodes map[string]*corev1.Node) (stranded []Stranded, recheckAfter time.Duration) {
	recheck := func(after time.Duration) {
		if after > 0 && (recheckAfter == 0 || after < recheckAfter) {
			recheckAfter = after
		}
	}
	for i := range workers {
		p := &workers[i]
		if p.DeletionTimestamp.IsZero() || p.Spec.NodeName == "" {
			continue // not being deleted, or never scheduled: the API server removes it at once
		}
		n := nodes[p.Spec.NodeName]
		evidence := fmt.Sprintf("terminating since %s (its grace period's end)", p.DeletionTimestamp.UTC().Format(time.RFC3339))
		switch silentSince, why := nodeSilence(n, p.Spec.NodeName); {
		case n == nil || hasTaint(n, OutOfServiceTaint):
			stranded = append(stranded, Stranded{Worker: p.Name, Node: p.Spec.NodeName, Evidence: evidence + "; " + why})
		case silentSince.IsZero():
			// Its kubelet answers and finishes it; should the node go silent meanwhile, the node
			// lifecycle controller's update of the pod wakes the fleet, and so does this.
			recheck(StrandedAfter)
		default:
			due := p.DeletionTimestamp.Add(StrandedAfter)
			if quiet := silentSince.Add(StrandedAfter); quiet.After(due) {
				due = quiet
			}
			if wait := due.Sub(now); wait > 0 {
				recheck(wait)
				continue
			}
			stranded = append(stranded, Stranded{Worker: p.Name, Node: p.Spec.NodeName, Evidence: evidence + "; " + why})
		}
	}
	return stranded, recheckAfter
}

// nodeSilence says since when a node's kubelet has been silent (its Ready condition Unknown: the
// node lifecycle controller heard nothing from it), zero if it is not, and in words why a pod there
// is stranded.
func nodeSilence(n *corev1.Node, name string) (time.Time, string) {
	if n == nil {
		return time.Time{}, fmt.Sprintf("node %s is gone", name)
	}
	if hasTaint(n, OutOfServiceTaint) {
		return time.Time{}, fmt.Sprintf("node %s has the %s taint (shut down)", name, OutOfServiceTaint)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionUnknown {
			return c.LastTransitionTime.Time, fmt.Sprintf("node %s is Ready=Unknown since %s (%s)", name, c.LastTransitionTime.UTC().Format(time.RFC3339), c.Reason)
		}
	}
	return time.Time{}, ""
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}
