package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

var (
	blueRv  = v1alpha1.RevisionStatus{Revision: "w1", PromptHash: "p1", TemplateHash: "t1", RayVersion: "2.9.0", RayCluster: "agents"}
	greenRv = v1alpha1.RevisionStatus{Revision: "w1", PromptHash: "p1", TemplateHash: "t2", RayVersion: "2.10.0", RayCluster: "agents-bg"}
)

// bgObs is a fleet of 4 workers on RayCluster "agents" (Ray 2.9.0), asked for Ray 2.10.0 under
// BlueGreen (a change of the head: the workers' revision is the same).
func bgObs(mutate ...func(*blueGreenObservation)) blueGreenObservation {
	o := blueGreenObservation{
		Now: c0, Strategy: v1alpha1.RolloutBlueGreen, ReadyTimeout: 10 * time.Minute, Replicas: 4,
		Desired: clusterView{Name: "agents", TemplateHash: "t2", HeadHash: "h2", RayVersion: "2.10.0", Revision: greenRv},
		Active:  &clusterView{Name: "agents", TemplateHash: "t1", HeadHash: "h1", RayVersion: "2.9.0", Revision: blueRv, HeadReady: true, ReadyWorkers: 4},
	}
	for _, m := range mutate {
		m(&o)
	}
	return o
}

// previewing is the observation of a preview that started 5 minutes ago (ready: its head and
// readyWorkers of its workers).
func previewing(headReady bool, readyWorkers int32, mutate ...func(*blueGreenObservation)) blueGreenObservation {
	started := metav1.NewTime(c0.Add(-5 * time.Minute))
	g := greenRv
	return bgObs(append([]func(*blueGreenObservation){func(o *blueGreenObservation) {
		o.Preview = &clusterView{Name: "agents-bg", TemplateHash: "t2", HeadHash: "h2", RayVersion: "2.10.0", Revision: greenRv, HeadReady: headReady, ReadyWorkers: readyWorkers}
		o.Previous = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhasePreview, Stable: blueRv, Canary: &g, StartedAt: &started}
	}}, mutate...)...)
}

func TestPlanBlueGreen(t *testing.T) {
	started := metav1.NewTime(c0.Add(-5 * time.Minute))
	now := metav1.NewTime(c0)
	status := func(phase v1alpha1.RolloutPhase, stable v1alpha1.RevisionStatus, start *metav1.Time, msg string) *v1alpha1.RolloutStatus {
		g := greenRv
		return &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: phase, Stable: stable, Canary: &g, StartedAt: start, Message: msg}
	}
	finished := func(st *v1alpha1.RolloutStatus) *v1alpha1.RolloutStatus { st.FinishedAt = &now; return st }
	stable := func(rv v1alpha1.RevisionStatus) *v1alpha1.RolloutStatus {
		return &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhaseStable, Stable: rv}
	}
	progress := func(head bool, ready string) string {
		if head {
			return "RayCluster agents-bg: head ready true, " + ready + " of 4 agent workers ready"
		}
		return "RayCluster agents-bg: head ready false, " + ready + " of 4 agent workers ready"
	}
	headMsg := "the spec changes the Ray head (rayVersion 2.9.0 → 2.10.0), which a worker roll cannot carry: " +
		"RayCluster agents keeps running what it runs; set spec.rollout.strategy to BlueGreen to move to a new RayCluster, or revert the change"

	for _, tc := range []struct {
		name string
		o    blueGreenObservation
		want blueGreenPlan
	}{{
		name: "no RayCluster yet: the first is created as built, Stable",
		o:    bgObs(func(o *blueGreenObservation) { o.Active = nil }),
		want: blueGreenPlan{Decided: true, Status: stable(greenRv)},
	}, {
		name: "Rolling, no RayCluster yet: nothing to decide",
		o:    bgObs(func(o *blueGreenObservation) { o.Active, o.Strategy = nil, v1alpha1.RolloutRolling }),
		want: blueGreenPlan{},
	}, {
		name: "Rolling, a change of the head: not applied, the fleet says it needs BlueGreen",
		o:    bgObs(func(o *blueGreenObservation) { o.Strategy = v1alpha1.RolloutRolling }),
		want: blueGreenPlan{Keep: true, NeedsBlueGreen: headMsg},
	}, {
		name: "Canary, a change of the head: not applied either",
		o:    bgObs(func(o *blueGreenObservation) { o.Strategy = v1alpha1.RolloutCanary }),
		want: blueGreenPlan{Keep: true, NeedsBlueGreen: headMsg},
	}, {
		name: "Rolling, a change of spec.head only: not applied",
		o: bgObs(func(o *blueGreenObservation) {
			o.Strategy, o.Desired.RayVersion = v1alpha1.RolloutRolling, "2.9.0"
		}),
		want: blueGreenPlan{Keep: true, NeedsBlueGreen: "the spec changes the Ray head (spec.head), which a worker roll cannot carry: " +
			"RayCluster agents keeps running what it runs; set spec.rollout.strategy to BlueGreen to move to a new RayCluster, or revert the change"},
	}, {
		name: "Rolling, a change of the workers only: applied as under Rolling",
		o: bgObs(func(o *blueGreenObservation) {
			o.Strategy, o.Desired.HeadHash, o.Desired.RayVersion = v1alpha1.RolloutRolling, "h1", "2.9.0"
		}),
		want: blueGreenPlan{},
	}, {
		name: "Rolling, a RayCluster written before the head hash: judged by its rayVersion",
		o: bgObs(func(o *blueGreenObservation) {
			o.Strategy, o.Active.HeadHash = v1alpha1.RolloutRolling, ""
		}),
		want: blueGreenPlan{Keep: true, NeedsBlueGreen: headMsg},
	}, {
		name: "Rolling after BlueGreen: a preview left behind is deleted",
		o: previewing(false, 0, func(o *blueGreenObservation) {
			o.Strategy, o.Desired.HeadHash, o.Desired.RayVersion = v1alpha1.RolloutRolling, "h1", "2.9.0"
		}),
		want: blueGreenPlan{DeletePreview: true},
	}, {
		name: "BlueGreen, a change: the preview is created beside the active RayCluster, which keeps its revision",
		o:    bgObs(),
		want: blueGreenPlan{Keep: true, CreatePreview: true, Decided: true, Status: status(v1alpha1.RolloutPhasePreview, blueRv, &now, "creating RayCluster agents-bg"),
			EventReason: EventBlueGreenStarted, Message: "Starting RayCluster agents-bg with revision w1 (Ray 2.10.0) beside RayCluster agents (revision w1, Ray 2.9.0)"},
	}, {
		name: "BlueGreen, the preview's name is still held by a RayCluster being deleted: wait",
		o:    bgObs(func(o *blueGreenObservation) { o.PreviewNameTaken = true }),
		want: blueGreenPlan{Keep: true, Decided: true, Status: status(v1alpha1.RolloutPhasePreview, blueRv, &now, "waiting for the old RayCluster agents-bg to be deleted before creating it again"),
			EventReason: EventBlueGreenStarted, Message: "Starting RayCluster agents-bg with revision w1 (Ray 2.10.0) beside RayCluster agents (revision w1, Ray 2.9.0)"},
	}, {
		name: "BlueGreen, the preview is starting: wait until the deadline",
		o:    previewing(true, 2),
		want: blueGreenPlan{Keep: true, Decided: true, Status: status(v1alpha1.RolloutPhasePreview, blueRv, &started, progress(true, "2")), RecheckAfter: 5 * time.Minute},
	}, {
		name: "BlueGreen, every worker ready but not the head: not yet",
		o:    previewing(false, 4),
		want: blueGreenPlan{Keep: true, Decided: true, Status: status(v1alpha1.RolloutPhasePreview, blueRv, &started, progress(false, "4")), RecheckAfter: 5 * time.Minute},
	}, {
		name: "BlueGreen, the preview is Ready: switch",
		o:    previewing(true, 4),
		want: blueGreenPlan{Keep: true, Switch: true, Decided: true,
			Status:      finished(status(v1alpha1.RolloutPhasePromoted, greenRv, &started, "switched from RayCluster agents (revision w1) to RayCluster agents-bg, Ready")),
			EventReason: EventBlueGreenPromoted, Message: "RayCluster agents-bg with revision w1 is Ready: switched to it and deleting RayCluster agents"},
	}, {
		name: "BlueGreen, not Ready by the deadline: the preview is deleted, Aborted",
		o:    previewing(true, 3, func(o *blueGreenObservation) { o.Now = c0.Add(5 * time.Minute) }),
		want: blueGreenPlan{Keep: true, DeletePreview: true, Decided: true,
			Status: func() *v1alpha1.RolloutStatus {
				st := status(v1alpha1.RolloutPhaseAborted, blueRv, &started, "not Ready within 10m0s: "+progress(true, "3"))
				st.FinishedAt = ptrTime(c0.Add(5 * time.Minute))
				return st
			}(),
			EventWarning: true, EventReason: EventBlueGreenAborted,
			Message: "RayCluster agents-bg with revision w1 was not Ready within 10m0s (head ready true, 3 of 4 agent workers ready): deleted it; RayCluster agents keeps running revision w1"},
	}, {
		name: "BlueGreen, aborted: the active RayCluster keeps its revision until the spec changes",
		o: bgObs(func(o *blueGreenObservation) {
			o.Previous = finished(status(v1alpha1.RolloutPhaseAborted, blueRv, &started, "not Ready"))
		}),
		want: blueGreenPlan{Keep: true, Decided: true, Status: finished(status(v1alpha1.RolloutPhaseAborted, blueRv, &started, "not Ready"))},
	}, {
		name: "BlueGreen, aborted, then reverted: Stable, nothing restarted",
		o: bgObs(func(o *blueGreenObservation) {
			o.Desired = clusterView{Name: "agents", TemplateHash: "t1", HeadHash: "h1", RayVersion: "2.9.0", Revision: blueRv}
			o.Previous = finished(status(v1alpha1.RolloutPhaseAborted, blueRv, &started, "not Ready"))
		}),
		want: blueGreenPlan{Decided: true, Status: stable(blueRv), EventReason: EventBlueGreenAbandoned,
			Message: "The change to revision w1 was reverted: RayCluster agents runs revision w1"},
	}, {
		name: "BlueGreen, reverted during the preview: the preview is deleted",
		o: previewing(true, 1, func(o *blueGreenObservation) {
			o.Desired = clusterView{Name: "agents", TemplateHash: "t1", HeadHash: "h1", RayVersion: "2.9.0", Revision: blueRv}
		}),
		want: blueGreenPlan{DeletePreview: true, Decided: true, Status: stable(blueRv), EventReason: EventBlueGreenAbandoned,
			Message: "The change to revision w1 was reverted: RayCluster agents runs revision w1"},
	}, {
		name: "BlueGreen, a newer change during the preview: the preview is replaced",
		o: previewing(true, 4, func(o *blueGreenObservation) {
			o.Desired.TemplateHash, o.Desired.Revision.TemplateHash = "t3", "t3"
		}),
		want: func() blueGreenPlan {
			g := greenRv
			g.TemplateHash = "t3"
			return blueGreenPlan{Keep: true, DeletePreview: true, Decided: true,
				Status:      &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutBlueGreen, Phase: v1alpha1.RolloutPhasePreview, Stable: blueRv, Canary: &g, StartedAt: &now, Message: "creating RayCluster agents-bg"},
				EventReason: EventBlueGreenStarted, Message: "Starting RayCluster agents-bg with revision w1 (Ray 2.10.0) beside RayCluster agents (revision w1, Ray 2.9.0)"}
		}(),
	}, {
		name: "BlueGreen, suspended during the preview: the clock stops",
		o:    previewing(false, 0, func(o *blueGreenObservation) { o.Paused = true }),
		want: blueGreenPlan{Keep: true, Decided: true, Status: func() *v1alpha1.RolloutStatus {
			st := status(v1alpha1.RolloutPhasePreview, blueRv, &started, progress(false, "0"))
			st.PausedAt = &now
			return st
		}()},
	}, {
		name: "BlueGreen, resumed after 20 minutes: the deadline moves on by the pause",
		o: previewing(false, 0, func(o *blueGreenObservation) {
			o.Previous.PausedAt = ptrTime(c0.Add(-20 * time.Minute))
			o.Previous.StartedAt = ptrTime(c0.Add(-25 * time.Minute))
		}),
		want: blueGreenPlan{Keep: true, Decided: true, Status: status(v1alpha1.RolloutPhasePreview, blueRv, &started, progress(false, "0")), RecheckAfter: 5 * time.Minute},
	}, {
		name: "BlueGreen, after the switch: Promoted stays until the next change",
		o: bgObs(func(o *blueGreenObservation) {
			o.Active = &clusterView{Name: "agents-bg", TemplateHash: "t2", HeadHash: "h2", RayVersion: "2.10.0", Revision: greenRv, HeadReady: true, ReadyWorkers: 4}
			o.Previous = finished(status(v1alpha1.RolloutPhasePromoted, greenRv, &started, "switched"))
		}),
		want: blueGreenPlan{Decided: true, Status: finished(status(v1alpha1.RolloutPhasePromoted, greenRv, &started, "switched"))},
	}, {
		name: "BlueGreen, a switch cut before its status was written: Promoted, told",
		o: bgObs(func(o *blueGreenObservation) {
			o.Active = &clusterView{Name: "agents-bg", TemplateHash: "t2", HeadHash: "h2", RayVersion: "2.10.0", Revision: greenRv, HeadReady: true, ReadyWorkers: 4}
			o.Previous = status(v1alpha1.RolloutPhasePreview, blueRv, &started, "creating RayCluster agents-bg")
		}),
		want: blueGreenPlan{Decided: true, Status: finished(status(v1alpha1.RolloutPhasePromoted, greenRv, &started, "switched to RayCluster agents-bg")),
			EventReason: EventBlueGreenPromoted, Message: "RayCluster agents-bg with revision w1 is the active one"},
	}, {
		name: "BlueGreen, a Canary status before: Stable, no event",
		o: bgObs(func(o *blueGreenObservation) {
			o.Desired = clusterView{Name: "agents", TemplateHash: "t1", HeadHash: "h1", RayVersion: "2.9.0", Revision: blueRv}
			o.Previous = &v1alpha1.RolloutStatus{Strategy: v1alpha1.RolloutCanary, Phase: v1alpha1.RolloutPhaseAborted, Stable: blueRv, Canary: &greenRv}
		}),
		want: blueGreenPlan{Decided: true, Status: stable(blueRv)},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, planBlueGreen(tc.o)); diff != "" {
				t.Errorf("planBlueGreen (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanBlueGreenAnalysis(t *testing.T) {
	analysis := v1alpha1.CanaryAnalysis{MinTasks: 10, MaxDurationSeconds: 1800, MaxFailureRateIncrease: "0.1", OnTimeout: v1alpha1.CanaryAbort, MaxRestarts: ptr.To[int32](1)}
	analysed := func(active, preview usage.Counts, mutate ...func(*blueGreenObservation)) blueGreenObservation {
		return previewing(true, 4, append([]func(*blueGreenObservation){func(o *blueGreenObservation) {
			a := analysis
			o.Analysis = &a
			o.Outcomes = map[string]usage.Counts{"agents": active, "agents-bg": preview}
		}}, mutate...)...)
	}
	good, bad := usage.Counts{Succeeded: 45, Failed: 5}, usage.Counts{Succeeded: 4, Failed: 8}
	for _, tc := range []struct {
		name string
		o    blueGreenObservation
		// want: the plan's decision, phase and the message's start
		switched, deleted, runChecks bool
		phase                        v1alpha1.RolloutPhase
		message                      string
		recheck                      time.Duration
	}{{
		name:  "Ready, too few tasks yet: the analysis waits",
		o:     analysed(good, usage.Counts{Succeeded: 3}),
		phase: v1alpha1.RolloutPhasePreview, message: "RayCluster agents-bg Ready; 3 of minTasks 10 tasks", recheck: 25 * time.Minute,
	}, {
		name:  "Ready, the preview's agents fail more: aborted, deleted",
		o:     analysed(good, bad),
		phase: v1alpha1.RolloutPhaseAborted, deleted: true, message: "RayCluster agents-bg Ready; canary failure rate 66.7% (8 of 12), stable 10% (5 of 50)",
	}, {
		name:  "Ready, the preview's agents do as well: switched",
		o:     analysed(good, usage.Counts{Succeeded: 11, Failed: 1}),
		phase: v1alpha1.RolloutPhasePromoted, switched: true, message: "switched from RayCluster agents (revision w1) to RayCluster agents-bg: RayCluster agents-bg Ready; canary failure rate 8.3%",
	}, {
		name:  "Ready, the preview's containers restarted more than maxRestarts: aborted",
		o:     analysed(good, usage.Counts{Succeeded: 1}, func(o *blueGreenObservation) { o.Preview.Restarts = 2 }),
		phase: v1alpha1.RolloutPhaseAborted, deleted: true, message: "RayCluster agents-bg Ready; 2 canary workers replaced (maxRestarts 1)",
	}, {
		name: "Ready, outcomes pass and there are checks: they decide",
		o: analysed(good, usage.Counts{Succeeded: 11, Failed: 1}, func(o *blueGreenObservation) {
			o.Analysis.Checks = []v1alpha1.CanaryCheck{{Name: "latency", Query: "q", SuccessCondition: "result < 1"}}
		}),
		phase: v1alpha1.RolloutPhasePreview, runChecks: true, message: "RayCluster agents-bg Ready; canary failure rate 8.3%",
	}, {
		name: "Ready, a check fails: aborted",
		o: analysed(good, usage.Counts{Succeeded: 11, Failed: 1}, func(o *blueGreenObservation) {
			o.Analysis.Checks = []v1alpha1.CanaryCheck{{Name: "latency", Query: "q", SuccessCondition: "result < 1"}}
			o.Checks = []checkResult{{Name: "latency", Condition: "result < 1", Value: 3}}
		}),
		phase: v1alpha1.RolloutPhaseAborted, deleted: true, message: "RayCluster agents-bg Ready; canary failure rate 8.3% (1 of 12), stable 10% (5 of 50); check latency: result 3, want result < 1",
	}, {
		name:  "not Ready yet: the analysis does not judge",
		o:     analysed(good, bad, func(o *blueGreenObservation) { o.Preview.ReadyWorkers = 3 }),
		phase: v1alpha1.RolloutPhasePreview, message: "RayCluster agents-bg: head ready true, 3 of 4 agent workers ready", recheck: 5 * time.Minute,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			plan := planBlueGreen(tc.o)
			got := plan.Status
			if plan.Switch != tc.switched || plan.DeletePreview != tc.deleted || plan.RunChecks != tc.runChecks || got.Phase != tc.phase ||
				!strings.HasPrefix(got.Message, tc.message) || plan.RecheckAfter != tc.recheck {
				t.Errorf("switch %t delete %t runChecks %t phase %s recheck %s message %q;\nwant switch %t delete %t runChecks %t phase %s recheck %s message starting %q",
					plan.Switch, plan.DeletePreview, plan.RunChecks, got.Phase, plan.RecheckAfter, got.Message, tc.switched, tc.deleted, tc.runChecks, tc.phase, tc.recheck, tc.message)
			}
			if tc.o.Outcomes != nil && tc.phase != v1alpha1.RolloutPhasePromoted && tc.o.Preview.ReadyWorkers >= 4 {
				want := tc.o.Outcomes["agents-bg"]
				if got.Canary.TasksSucceeded != want.Succeeded || got.Canary.TasksFailed != want.Failed || got.Stable.TasksSucceeded != tc.o.Outcomes["agents"].Succeeded {
					t.Errorf("status tasks: preview %d/%d, active %d, want %d/%d, %d", got.Canary.TasksSucceeded, got.Canary.TasksFailed, got.Stable.TasksSucceeded,
						want.Succeeded, want.Failed, tc.o.Outcomes["agents"].Succeeded)
				}
			}
		})
	}
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}
