package fleet

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// worker is an agent worker pod named name on revision, Ready or not.
func worker(name, revision string, ready bool) corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.LabelWorkerHash: revision}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

// workers are n pods w-<first>… on revision.
func workers(first, n int, revision string, ready bool) []corev1.Pod {
	var pods []corev1.Pod
	for i := range n {
		pods = append(pods, worker(fmt.Sprintf("w-%02d", first+i), revision, ready))
	}
	return pods
}

func concat(groups ...[]corev1.Pod) []corev1.Pod {
	var all []corev1.Pod
	for _, g := range groups {
		all = append(all, g...)
	}
	return all
}

func TestPlanRollout(t *testing.T) {
	terminating := worker("w-07", "old", true)
	terminating.DeletionTimestamp = ptr.To(metav1.Now())
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	count := func(n int) *intstr.IntOrString { v := intstr.FromInt32(int32(n)); return &v }

	for name, tc := range map[string]struct {
		o       rolloutObservation
		want    rolloutPlan
		wantErr string
	}{
		"all current: nothing to do": {
			o:    rolloutObservation{Pods: workers(0, 4, "new", true), Revision: "new", Replicas: 4},
			want: rolloutPlan{Budget: 1},
		},
		"default 25% of 8 is 2, no surge": {
			o:    rolloutObservation{Pods: workers(0, 8, "old", true), Revision: "new", Replicas: 8},
			want: rolloutPlan{Delete: []string{"w-00", "w-01"}, Budget: 2, Outdated: 8},
		},
		"maxUnavailable as a count": {
			o:    rolloutObservation{Pods: workers(0, 8, "old", true), Revision: "new", Replicas: 8, MaxUnavailable: count(3)},
			want: rolloutPlan{Delete: []string{"w-00", "w-01", "w-02"}, Budget: 3, Outdated: 8},
		},
		"a percentage rounds down but is at least 1": {
			o:    rolloutObservation{Pods: workers(0, 3, "old", true), Revision: "new", Replicas: 3, MaxUnavailable: pct("10%")},
			want: rolloutPlan{Delete: []string{"w-00"}, Budget: 1, Outdated: 3},
		},
		"100% replaces every worker at once": {
			o:    rolloutObservation{Pods: workers(0, 4, "old", true), Revision: "new", Replicas: 4, MaxUnavailable: pct("100%")},
			want: rolloutPlan{Delete: []string{"w-00", "w-01", "w-02", "w-03"}, Budget: 4, Outdated: 4},
		},
		"workers not Ready go first and all at once: they cost no availability": {
			o: rolloutObservation{Pods: concat(workers(0, 2, "old", true), workers(2, 2, "old", false)),
				Revision: "new", Replicas: 4, MaxUnavailable: count(1)},
			// Two down already (budget 1): no Ready worker may go.
			want: rolloutPlan{Delete: []string{"w-02", "w-03"}, Budget: 1, Outdated: 4},
		},
		"pending deletions count as unavailable even if the cache shows them Ready": {
			o: rolloutObservation{Pods: concat(workers(0, 2, "old", true), workers(2, 6, "old", true)), Revision: "new", Replicas: 8,
				Pending: sets.New("w-00", "w-01")},
			want: rolloutPlan{Budget: 2, Outdated: 6},
		},
		"replacements not yet Ready hold the next batch": {
			o:    rolloutObservation{Pods: concat(workers(0, 6, "old", true), workers(6, 2, "new", false)), Revision: "new", Replicas: 8},
			want: rolloutPlan{Budget: 2, Outdated: 6},
		},
		"a worker being deleted is neither available nor handed over again": {
			o:    rolloutObservation{Pods: append(workers(0, 3, "old", true), terminating), Revision: "new", Replicas: 4, MaxUnavailable: count(2)},
			want: rolloutPlan{Delete: []string{"w-00"}, Budget: 2, Outdated: 3},
		},
		"scale up during a roll: the missing workers are unavailable": {
			o:    rolloutObservation{Pods: workers(0, 4, "old", true), Revision: "new", Replicas: 8, MaxUnavailable: count(4)},
			want: rolloutPlan{Budget: 4, Outdated: 4},
		},
		"scale down during a roll: the surplus is available": {
			o:    rolloutObservation{Pods: workers(0, 8, "old", true), Revision: "new", Replicas: 4, MaxUnavailable: count(1)},
			want: rolloutPlan{Delete: []string{"w-00"}, Budget: 1, Outdated: 8},
		},
		"git revert mid-roll: the workers already rolled forward are the outdated ones": {
			o: rolloutObservation{Pods: concat(workers(0, 2, "rev2", true), workers(2, 6, "rev1", true)),
				Revision: "rev1", Replicas: 8},
			want: rolloutPlan{Delete: []string{"w-00", "w-01"}, Budget: 2, Outdated: 2},
		},
		"zero replicas: budget still at least 1": {
			o:    rolloutObservation{Revision: "new", Replicas: 0},
			want: rolloutPlan{Budget: 1},
		},
		"an invalid percentage is an error naming the field": {
			o:       rolloutObservation{Revision: "new", Replicas: 4, MaxUnavailable: pct("lots")},
			wantErr: "spec.rollout.maxUnavailable",
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := planRollout(tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(rolloutPlan{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

// A roll of 8 workers at maxUnavailable 2, driven by the plan alone with KubeRay simulated, never has
// fewer than 6 Ready and ends with every worker on the new revision.
func TestPlanRolloutConvergesWithinBudget(t *testing.T) {
	pods := workers(0, 8, "old", true)
	next := 8
	for step := 0; step < 20; step++ {
		plan, err := planRollout(rolloutObservation{Pods: pods, Revision: "new", Replicas: 8})
		if err != nil {
			t.Fatal(err)
		}
		if plan.Outdated == 0 {
			return
		}
		gone := sets.New(plan.Delete...)
		var kept []corev1.Pod
		for _, p := range pods {
			if !gone.Has(p.Name) {
				kept = append(kept, p)
			}
		}
		ready := 0
		for i := range kept {
			if podReady(&kept[i]) {
				ready++
			}
		}
		if ready < 6 {
			t.Fatalf("step %d: %d Ready workers, want at least 6", step, ready)
		}
		// KubeRay replaces the deleted workers; the replacements become Ready by the next step.
		for range gone.Len() {
			kept = append(kept, worker(fmt.Sprintf("w-%02d", next), "new", true))
			next++
		}
		pods = kept
	}
	t.Fatal("the roll did not finish in 20 steps")
}

// During a canary each worker is current on its own group's template: neither the canary's workers
// nor the stable ones are rolled; a canary worker on an older canary revision (a change during the
// canary) is.
func TestPlanRolloutByGroup(t *testing.T) {
	canary := func(name, revision string) corev1.Pod {
		p := worker(name, revision, true)
		p.Labels[rayGroupLabel] = v1alpha1.CanaryGroup
		return p
	}
	pods := append(workers(0, 3, "stable", true), canary("c-0", "new"), canary("c-1", "older"))
	plan, err := planRollout(rolloutObservation{Pods: pods, Revision: "stable", CanaryRevision: "new", Replicas: 5, Pending: sets.New[string]()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"c-1"}, plan.Delete); diff != "" {
		t.Errorf("delete (-want +got):\n%s", diff)
	}
}
