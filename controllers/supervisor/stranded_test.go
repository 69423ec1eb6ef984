package supervisor_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentfleet/agentfleet/controllers/supervisor"
)

func TestFindStranded(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	// node has its Ready condition ("" none) since the given time before now.
	node := func(name string, ready corev1.ConditionStatus, since time.Duration, taints ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if ready != "" {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "NodeStatusUnknown",
				LastTransitionTime: metav1.NewTime(now.Add(-since))}}
		}
		for _, key := range taints {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute})
		}
		return n
	}
	// worker is a pod on node, deleted with its grace period ending at now+deadline (nil: not deleted).
	worker := func(name, node string, deadline *time.Duration) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node}}
		if deadline != nil {
			p.DeletionTimestamp = &metav1.Time{Time: now.Add(*deadline)}
		}
		return p
	}
	at := func(d time.Duration) *time.Duration { return &d }
	nodes := map[string]*corev1.Node{
		"up":         node("up", corev1.ConditionTrue, time.Hour),
		"silent":     node("silent", corev1.ConditionUnknown, time.Hour, "node.kubernetes.io/unreachable"),
		"just-quiet": node("just-quiet", corev1.ConditionUnknown, 5*time.Second, "node.kubernetes.io/unreachable"),
		"notready":   node("notready", corev1.ConditionFalse, time.Hour, "node.kubernetes.io/not-ready"),
		"new":        node("new", "", 0),
		"shut-down":  node("shut-down", corev1.ConditionUnknown, time.Second, supervisor.OutOfServiceTaint),
	}
	type want struct {
		Stranded []string
		Recheck  time.Duration
	}
	for _, tc := range []struct {
		name    string
		workers []corev1.Pod
		want    want
	}{
		{name: "nothing being deleted: nothing to look at again",
			workers: []corev1.Pod{worker("w-1", "silent", nil), worker("w-2", "up", nil)}},
		{name: "running on a silent node: the pods' toleration decides, not the operator",
			workers: []corev1.Pod{worker("w-1", "silent", nil)}},
		{name: "terminating on a Ready node: its kubelet finishes it; looked at again in case the node goes silent",
			workers: []corev1.Pod{worker("w-1", "up", at(-time.Hour))}, want: want{Recheck: supervisor.StrandedAfter}},
		{name: "terminating on a NotReady node: its kubelet answers and finishes it",
			workers: []corev1.Pod{worker("w-1", "notready", at(-time.Hour))}, want: want{Recheck: supervisor.StrandedAfter}},
		{name: "terminating on a node without a Ready condition: not taken for silent",
			workers: []corev1.Pod{worker("w-1", "new", at(-time.Hour))}, want: want{Recheck: supervisor.StrandedAfter}},
		{name: "terminating on a node silent for long, past grace and the margin: stranded",
			workers: []corev1.Pod{worker("w-1", "silent", at(-supervisor.StrandedAfter))}, want: want{Stranded: []string{"w-1"}}},
		{name: "on a silent node within its grace period: looked at again once past it and the margin",
			workers: []corev1.Pod{worker("w-1", "silent", at(20*time.Second))}, want: want{Recheck: 20*time.Second + supervisor.StrandedAfter}},
		{name: "past grace, within the margin: looked at again at its end",
			workers: []corev1.Pod{worker("w-1", "silent", at(-10*time.Second))}, want: want{Recheck: supervisor.StrandedAfter - 10*time.Second}},
		{name: "long past grace on a node silent for 5 s only: looked at again once it has been silent for the margin",
			workers: []corev1.Pod{worker("w-1", "just-quiet", at(-time.Hour))}, want: want{Recheck: supervisor.StrandedAfter - 5*time.Second}},
		{name: "on a node that is gone: stranded at once",
			workers: []corev1.Pod{worker("w-1", "deleted", at(time.Minute))}, want: want{Stranded: []string{"w-1"}}},
		{name: "on a node out of service (shut down, says a person): stranded at once",
			workers: []corev1.Pod{worker("w-1", "shut-down", at(time.Minute))}, want: want{Stranded: []string{"w-1"}}},
		{name: "never scheduled: not stranded (the API server deletes it at once)",
			workers: []corev1.Pod{worker("w-1", "", at(-time.Hour))}},
		{name: "several: the stranded ones, and the soonest recheck of the rest",
			workers: []corev1.Pod{
				worker("w-1", "silent", at(-time.Hour)), worker("w-2", "up", at(-time.Hour)), worker("w-3", "silent", nil),
				worker("w-4", "silent", at(5*time.Second)), worker("w-5", "silent", at(-25*time.Second)), worker("w-6", "deleted", at(-time.Minute)),
			},
			want: want{Stranded: []string{"w-1", "w-6"}, Recheck: 5 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stranded, recheck := supervisor.FindStranded(now, tc.workers, nodes)
			got := want{Recheck: recheck}
			for _, s := range stranded {
				got.Stranded = append(got.Stranded, s.Worker)
				if s.Evidence == "" || s.Node == "" {
					t.Errorf("%s stranded without its node or evidence: %+v", s.Worker, s)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("FindStranded (-want +got):\n%s", diff)
			}
		})
	}
	// The evidence names when the grace period ended and the node's condition.
	s, _ := supervisor.FindStranded(now, []corev1.Pod{worker("w-1", "silent", at(-time.Minute))}, nodes)
	if want := "terminating since 2026-11-27T11:59:00Z (its grace period's end); node silent is Ready=Unknown since 2026-11-27T11:00:00Z (NodeStatusUnknown)"; len(s) != 1 || s[0].Evidence != want {
		t.Errorf("evidence %+v, want %q", s, want)
	}
}
