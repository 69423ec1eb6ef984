package fleet

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestStatusExpectations(t *testing.T) {
	key := types.NamespacedName{Namespace: "team", Name: "agents"}
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		steps   func(e *statusExpectations)
		read    string
		at      time.Duration
		behind  bool
		nilSafe bool
		cleared bool
	}{
		{name: "nothing written: not behind", steps: func(*statusExpectations) {}, read: "10"},
		{name: "the cache shows the write: not behind, cleared", steps: func(e *statusExpectations) { e.expect(key, "11", t0) }, read: "11", cleared: true},
		{name: "the cache is older than the write: behind", steps: func(e *statusExpectations) { e.expect(key, "11", t0) }, read: "10", at: time.Second, behind: true},
		{name: "the informer delivered the write: not behind", steps: func(e *statusExpectations) { e.expect(key, "11", t0); e.observed(key, "11") }, read: "12", cleared: true},
		{name: "another version delivered: still behind", steps: func(e *statusExpectations) { e.expect(key, "11", t0); e.observed(key, "10") }, read: "10", behind: true},
		{name: "past the timeout (a relist skipped it): not behind", steps: func(e *statusExpectations) { e.expect(key, "11", t0) }, read: "10", at: expectationTimeout, cleared: true},
		{name: "forgotten: not behind", steps: func(e *statusExpectations) { e.expect(key, "11", t0); e.forget(key) }, read: "10", cleared: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &statusExpectations{}
			tc.steps(e)
			if got := e.behind(key, tc.read, t0.Add(tc.at)); got != tc.behind {
				t.Errorf("behind = %t, want %t", got, tc.behind)
			}
			if _, left := e.m[key]; tc.cleared && left {
				t.Errorf("the expectation is still there")
			}
		})
	}
	var none *statusExpectations // an uncached reconciler's
	none.expect(key, "1", t0)
	if none.behind(key, "0", t0) {
		t.Errorf("a nil expectations is behind")
	}
}
