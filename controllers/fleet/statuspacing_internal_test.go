package fleet

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// The wait of held-back progress counts from the first pass that held it back, and ends with a
// write or a status with nothing left to write.
func TestProgressWaitsFromWhenFirstHeldBack(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	key := types.NamespacedName{Namespace: "team", Name: "agents"}
	var w statusWrites
	w.heldBack(key, t0)
	if got := w.progressWaiting(key); !got.IsZero() {
		t.Errorf("held back before any write: waiting since %s, want none (a write goes at once)", got)
	}
	w.wrote(key, t0, "10")
	w.heldBack(key, t0.Add(time.Second))
	w.heldBack(key, t0.Add(1500*time.Millisecond))
	if got, want := w.progressWaiting(key), t0.Add(time.Second); !got.Equal(want) {
		t.Errorf("waiting since %s, want %s (the first pass that held it back)", got, want)
	}
	w.settled(key)
	if got := w.progressWaiting(key); !got.IsZero() {
		t.Errorf("settled: waiting since %s, want none", got)
	}
	w.heldBack(key, t0.Add(2*time.Second))
	w.wrote(key, t0.Add(3*time.Second), "11")
	if got := w.progressWaiting(key); !got.IsZero() {
		t.Errorf("written: waiting since %s, want none", got)
	}
	if got, want := w.last(key), t0.Add(3*time.Second); !got.Equal(want) {
		t.Errorf("last write %s, want %s", got, want)
	}
}

func TestStatusWriteDelay(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	progressing := func(ready int32) *v1alpha1.AgentFleetStatus {
		return &v1alpha1.AgentFleetStatus{
			ObservedGeneration: 1, Replicas: 4, ReadyReplicas: ready, UpdatedReplicas: 4, Workers: "x/4", RayClusterName: "agents",
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonScaling, Message: "some agent workers ready", LastTransitionTime: metav1.NewTime(t0)}},
		}
	}
	degraded := func(reason string) *v1alpha1.AgentFleetStatus {
		s := progressing(3)
		s.Conditions = append(s.Conditions, metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: reason, LastTransitionTime: metav1.NewTime(t0)})
		return s
	}
	with := func(s *v1alpha1.AgentFleetStatus, f func(*v1alpha1.AgentFleetStatus)) *v1alpha1.AgentFleetStatus {
		f(s)
		return s
	}
	for _, tc := range []struct {
		name              string
		written, computed *v1alpha1.AgentFleetStatus
		lastWrite         time.Time
		waitingSince      time.Time     // since when progress was held back; zero: this pass is the first
		now               time.Duration // after t0
		interval          time.Duration
		want              time.Duration
	}{
		{name: "progress first seen waits the interval", written: progressing(1), computed: progressing(2), lastWrite: t0, now: 500 * time.Millisecond, interval: 2 * time.Second, want: 2 * time.Second},
		{name: "progress first seen long after the last write waits the interval too", written: progressing(1), computed: progressing(2), lastWrite: t0, now: time.Minute, interval: 2 * time.Second, want: 2 * time.Second},
		{name: "progress held back waits the rest of the interval from then", written: progressing(1), computed: progressing(3), lastWrite: t0, waitingSince: t0.Add(500 * time.Millisecond), now: time.Second, interval: 2 * time.Second, want: 1500 * time.Millisecond},
		{name: "progress held back for the interval is written", written: progressing(1), computed: progressing(2), lastWrite: t0, waitingSince: t0.Add(time.Second), now: 3 * time.Second, interval: 2 * time.Second},
		{name: "no write known (a restarted operator): written", written: progressing(1), computed: progressing(2), now: 0, interval: 2 * time.Second},
		{name: "pacing off: written", written: progressing(1), computed: progressing(2), lastWrite: t0, interval: 0},
		{name: "a condition's message and the GPUs held are progress", written: progressing(1),
			computed:  with(progressing(1), func(s *v1alpha1.AgentFleetStatus) { s.Conditions[0].Message = "3 of 4"; s.GPUs.Allocated = 3 }),
			lastWrite: t0, waitingSince: t0, now: time.Second, interval: 2 * time.Second, want: time.Second},
		{name: "what the workers are seen to run, as they come up, is progress", written: progressing(1),
			computed: with(progressing(2), func(s *v1alpha1.AgentFleetStatus) {
				s.Revision, s.ModelVersion, s.PromptHash, s.DashboardURL = "7ef298d683104263", "2025-09-29", "ab12", "http://agents-head-svc.team.svc:8265"
			}),
			lastWrite: t0, waitingSince: t0, now: time.Second, interval: 2 * time.Second, want: time.Second},
		{name: "a condition's status is written at once", written: progressing(3),
			computed: with(progressing(4), func(s *v1alpha1.AgentFleetStatus) {
				s.Conditions[0].Status, s.Conditions[0].Reason = metav1.ConditionTrue, v1alpha1.ReasonReady
			}),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "a reason of a fleet coming up, its condition's status the same, is progress", written: progressing(0),
			computed:  with(progressing(0), func(s *v1alpha1.AgentFleetStatus) { s.Conditions[0].Reason = v1alpha1.ReasonHeadNotReady }),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second, want: 2 * time.Second},
		{name: "a reason while Degraded is written at once", written: degraded(v1alpha1.ReasonRayClusterFailure),
			computed: degraded(v1alpha1.ReasonRestartBudgetExhausted), lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "a Degraded fleet's progress waits", written: degraded(v1alpha1.ReasonRestartBudgetExhausted),
			computed:  with(degraded(v1alpha1.ReasonRestartBudgetExhausted), func(s *v1alpha1.AgentFleetStatus) { s.ReadyReplicas = 2 }),
			lastWrite: t0, waitingSince: t0, now: time.Second, interval: 2 * time.Second, want: time.Second},
		{name: "turning Degraded is written at once", written: progressing(3), computed: degraded(v1alpha1.ReasonRestartBudgetExhausted),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "a new condition is written at once", written: progressing(3),
			computed: with(progressing(3), func(s *v1alpha1.AgentFleetStatus) {
				s.Conditions = append(s.Conditions, metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRestartBudgetExhausted})
			}),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "a new generation is written at once", written: progressing(3),
			computed:  with(progressing(3), func(s *v1alpha1.AgentFleetStatus) { s.ObservedGeneration = 2 }),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "a restart recorded (the supervisor's memory) is written at once", written: progressing(3),
			computed: with(progressing(2), func(s *v1alpha1.AgentFleetStatus) {
				s.Restarts.Crashed = 1
				s.RecentRestarts = []v1alpha1.RestartRecord{{Worker: "w-1", Reason: "Crashed", Time: metav1.NewTime(t0)}}
			}),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "the rollout is written at once", written: progressing(3),
			computed: with(progressing(3), func(s *v1alpha1.AgentFleetStatus) {
				s.Rollout = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary}
			}),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "a job's status is written at once", written: progressing(3),
			computed:  with(progressing(3), func(s *v1alpha1.AgentFleetStatus) { s.Jobs = []v1alpha1.JobStatus{{Name: "nightly"}} }),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
		{name: "usage is written at once", written: progressing(3),
			computed:  with(progressing(3), func(s *v1alpha1.AgentFleetStatus) { s.Usage = &v1alpha1.UsageStatus{} }),
			lastWrite: t0, now: time.Millisecond, interval: 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			written := tc.written.DeepCopy()
			got := statusWriteDelay(tc.written, tc.computed, tc.lastWrite, tc.waitingSince, t0.Add(tc.now), tc.interval)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("delay (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(written, tc.written); diff != "" {
				t.Errorf("the written status was changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestOwnStatusWriteOnly(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	read := func() *v1alpha1.AgentFleet {
		return &v1alpha1.AgentFleet{
			ObjectMeta: metav1.ObjectMeta{Name: "agents", Namespace: "team", Generation: 1, ResourceVersion: "10", Labels: map[string]string{"team": "a"}},
			Status: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 1, RayClusterName: "agents", Replicas: 4, ReadyReplicas: 1, Workers: "1/4", Phase: v1alpha1.PhaseProgressing,
				Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonScaling, LastTransitionTime: t0}},
			},
		}
	}
	// written is what this process's write made of the fleet it read: the status changed by f.
	written := func(f func(*v1alpha1.AgentFleet)) *v1alpha1.AgentFleet {
		w := read()
		w.ResourceVersion = "11"
		f(w)
		return w
	}
	turnsReady := func(w *v1alpha1.AgentFleet) {
		w.Status.ReadyReplicas, w.Status.UpdatedReplicas, w.Status.Workers, w.Status.Phase = 4, 4, "4/4", v1alpha1.PhaseRunning
		w.Status.Revision, w.Status.ModelVersion, w.Status.PromptHash, w.Status.DashboardURL = "7ef2", "2025-09-29", "ab12", "http://agents-head-svc.team.svc:8265"
		w.Status.GPUs.Allocated = 4
		w.Status.Conditions[0].Status, w.Status.Conditions[0].Reason = metav1.ConditionTrue, v1alpha1.ReasonReady
	}
	for _, tc := range []struct {
		name    string
		updated *v1alpha1.AgentFleet
		written string // the resourceVersion of this process's last write
		want    bool
	}{
		{name: "own write of progress and turning Ready: no pass", updated: written(turnsReady), written: "11", want: true},
		{name: "own write turning Degraded: no pass (nothing reads it back)", updated: written(func(w *v1alpha1.AgentFleet) {
			w.Status.Conditions = append(w.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonRestartBudgetExhausted})
		}), written: "11", want: true},
		{name: "another version than this process wrote (another writer, or a later change)", updated: written(turnsReady), written: "12"},
		{name: "the cache's resync of the version this process wrote: a pass, the safety net", updated: written(func(w *v1alpha1.AgentFleet) {
			w.ResourceVersion = "10"
		}), written: "10"},
		{name: "no write recorded (the event came first, or a restarted operator)", updated: written(turnsReady)},
		{name: "the spec changed", updated: written(func(w *v1alpha1.AgentFleet) { turnsReady(w); w.Generation = 2 }), written: "11"},
		{name: "an annotation changed (agentfleet promote)", updated: written(func(w *v1alpha1.AgentFleet) {
			w.Annotations = map[string]string{v1alpha1.AnnotationPromote: "7ef2"}
		}), written: "11"},
		{name: "a label changed", updated: written(func(w *v1alpha1.AgentFleet) { w.Labels["team"] = "b" }), written: "11"},
		{name: "being deleted", updated: written(func(w *v1alpha1.AgentFleet) { w.DeletionTimestamp = &t0 }), written: "11"},
		{name: "a finalizer changed", updated: written(func(w *v1alpha1.AgentFleet) { w.Finalizers = []string{"example.com/x"} }), written: "11"},
		{name: "memory: the RayCluster's name (the first write)", updated: written(func(w *v1alpha1.AgentFleet) { w.Status.RayClusterName = "agents-preview" }), written: "11"},
		{name: "memory: observedGeneration", updated: written(func(w *v1alpha1.AgentFleet) { w.Status.ObservedGeneration = 2 }), written: "11"},
		{name: "memory: the rollout", updated: written(func(w *v1alpha1.AgentFleet) {
			w.Status.Rollout = &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseAborted}
		}), written: "11"},
		{name: "memory: a restart recorded", updated: written(func(w *v1alpha1.AgentFleet) {
			w.Status.Restarts.Crashed = 1
			w.Status.RecentRestarts = []v1alpha1.RestartRecord{{Worker: "agents-w-1", Reason: "Crashed"}}
		}), written: "11"},
		{name: "memory: usage", updated: written(func(w *v1alpha1.AgentFleet) { w.Status.Usage = &v1alpha1.UsageStatus{} }), written: "11"},
		{name: "memory: a budget exceeded", updated: written(func(w *v1alpha1.AgentFleet) {
			w.Status.Conditions = append(w.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionBudgetExceeded, Status: metav1.ConditionTrue, Reason: "TokensPerHour"})
		}), written: "11"},
		{name: "memory: a job's state", updated: written(func(w *v1alpha1.AgentFleet) {
			w.Status.Jobs = []v1alpha1.JobStatus{{Name: "nightly"}}
		}), written: "11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ownStatusWriteOnly(read(), tc.updated, tc.written); got != tc.want {
				t.Errorf("ownStatusWriteOnly = %v, want %v", got, tc.want)
			}
		})
	}
}
