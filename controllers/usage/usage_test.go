package usage_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/controllers/usage"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// lease is a worker's Lease renewed at renewed seconds after t0, created created seconds after t0,
// reporting c (nil: no counts at all).
func lease(uid string, created, renewed int, c *usage.Counts) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Name: uid, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(created) * time.Second))},
		Spec:       coordinationv1.LeaseSpec{RenewTime: ptr.To(metav1.NewMicroTime(t0.Add(time.Duration(renewed) * time.Second)))},
	}
	if c != nil {
		l.Annotations = map[string]string{
			heartbeatapi.AnnotationTasksSucceeded: strconv.FormatInt(c.Succeeded, 10), heartbeatapi.AnnotationTasksFailed: strconv.FormatInt(c.Failed, 10),
			heartbeatapi.AnnotationTokensIn: strconv.FormatInt(c.TokensIn, 10), heartbeatapi.AnnotationTokensOut: strconv.FormatInt(c.TokensOut, 10),
		}
	}
	return l
}

func counts(s, f, in, out int64) *usage.Counts {
	return &usage.Counts{Succeeded: s, Failed: f, TokensIn: in, TokensOut: out}
}

func TestIncrease(t *testing.T) {
	cases := map[string]struct{ prev, cur, want usage.Counts }{
		"growth":                         {*counts(1, 0, 100, 10), *counts(3, 1, 250, 30), *counts(2, 1, 150, 20)},
		"nothing new":                    {*counts(3, 1, 250, 30), *counts(3, 1, 250, 30), usage.Counts{}},
		"a restarted process: all of it": {*counts(9, 2, 9000, 900), *counts(1, 0, 50, 5), *counts(1, 0, 50, 5)},
		"one count reset, the others not (a client that reports tokens only now)": {*counts(4, 1, 0, 0), *counts(5, 1, 70, 7), *counts(1, 0, 70, 7)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, usage.Increase(tc.prev, tc.cur)); diff != "" {
				t.Errorf("increase (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLedger(t *testing.T) {
	type step struct {
		lease    *coordinationv1.Lease
		baseline bool // seen in the informer's initial list
		delete   bool
		want     usage.Counts
	}
	cases := map[string][]step{
		"a new worker counts from 0": {
			{lease: lease("a", 110, 110, counts(0, 0, 0, 0))},
			{lease: lease("a", 110, 120, counts(1, 0, 500, 50)), want: *counts(1, 0, 500, 50)},
			{lease: lease("a", 110, 130, counts(2, 1, 800, 90)), want: *counts(1, 1, 300, 40)},
		},
		"a new worker's first report counts in full": {
			{lease: lease("a", 110, 120, counts(1, 0, 500, 50)), want: *counts(1, 0, 500, 50)},
		},
		"a Lease in the initial list (an earlier leader counted it): a baseline, not counted again": {
			{lease: lease("a", 10, 105, counts(40, 2, 90000, 9000)), baseline: true},
			{lease: lease("a", 10, 115, counts(41, 2, 91000, 9100)), want: *counts(1, 0, 1000, 100)},
		},
		"an older snapshot seen after a newer one is no reset": {
			{lease: lease("a", 110, 120, counts(2, 0, 200, 20)), want: *counts(2, 0, 200, 20)},
			{lease: lease("a", 110, 115, counts(1, 0, 100, 10))},
			{lease: lease("a", 110, 125, counts(3, 0, 300, 30)), want: *counts(1, 0, 100, 10)},
		},
		"a replaced worker: its Lease's last state is kept, the new worker's counts from 0": {
			{lease: lease("old", 110, 120, counts(5, 1, 5000, 500)), want: *counts(5, 1, 5000, 500)},
			{lease: lease("old", 110, 129, counts(6, 2, 6500, 640)), delete: true, want: *counts(1, 1, 1500, 140)},
			{lease: lease("new", 130, 131, counts(0, 0, 0, 0))},
			{lease: lease("new", 130, 140, counts(2, 0, 900, 80)), want: *counts(2, 0, 900, 80)},
		},
		"a worker that recreates its deleted Lease (its grace period) continues from its counts": {
			{lease: named(lease("uid-1", 110, 120, counts(5, 1, 5000, 500)), "w-0"), want: *counts(5, 1, 5000, 500)},
			{lease: named(lease("uid-1", 110, 121, counts(5, 1, 5000, 500)), "w-0"), delete: true},
			{lease: named(lease("uid-2", 122, 122, counts(6, 1, 5200, 520)), "w-0"), want: *counts(1, 0, 200, 20)},
		},
		"the worker process restarts under the same Lease": {
			{lease: lease("a", 110, 120, counts(5, 0, 5000, 500)), want: *counts(5, 0, 5000, 500)},
			{lease: lease("a", 110, 130, counts(1, 0, 100, 10)), want: *counts(1, 0, 100, 10)},
		},
		"a write that drops the counts is no reset; the next one is not counted again": {
			{lease: lease("a", 110, 120, counts(5, 1, 5000, 500)), want: *counts(5, 1, 5000, 500)},
			{lease: lease("a", 110, 130, nil)},
			{lease: lease("a", 110, 140, counts(6, 1, 5100, 510)), want: *counts(1, 0, 100, 10)},
		},
		"a client that reports no counts": {
			{lease: lease("a", 110, 120, nil)},
			{lease: lease("a", 110, 130, nil)},
		},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			l := usage.NewLedger()
			for i, st := range steps {
				var got usage.Counts
				if st.delete {
					got = l.Forget(st.lease, t0)
				} else {
					got = l.Observe(st.lease, st.baseline)
				}
				if diff := cmp.Diff(st.want, got); diff != "" {
					t.Errorf("step %d: increase (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

// A deleted Lease's counts are kept for the retention, then dropped: the ledger does not grow with
// the workers that came and went.
func TestLedgerForgets(t *testing.T) {
	l := usage.NewLedger()
	l.Observe(lease("a", 110, 120, counts(1, 0, 0, 0)), false)
	l.Forget(lease("a", 110, 121, counts(1, 0, 0, 0)), t0)
	if live, deleted := l.Len(); live != 0 || deleted != 1 {
		t.Errorf("after the delete: %d live, %d deleted, want 0 and 1", live, deleted)
	}
	l.Observe(lease("b", 110, 120, counts(1, 0, 0, 0)), false)
	l.Forget(lease("b", 110, 121, counts(1, 0, 0, 0)), t0.Add(l.Retention+time.Second))
	if live, deleted := l.Len(); live != 0 || deleted != 1 {
		t.Errorf("past the retention: %d live, %d deleted, want 0 and 1 (b's)", live, deleted)
	}
}

func named(l *coordinationv1.Lease, name string) *coordinationv1.Lease { l.Name = name; return l }
