package gpu

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHealthStep(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := t0.Add
	p := DefaultRecoveryPolicy()
	fault := Verdict{State: Unhealthy, Evidence: []string{"row remapping failed"}}
	xid := Verdict{State: Unhealthy, CriticalXIDs: []uint64{79}, Evidence: []string{"xid 79 (GPU has fallen off the bus)"}}
	hot := Verdict{State: Degraded, Evidence: []string{"temperature 90C over 85C"}}
	clean := Verdict{State: Healthy}
	failing := func(faultAt time.Duration, backoff time.Duration) Health {
		return Health{State: Unhealthy, Evidence: fault.Evidence, FaultAt: at(faultAt), NextProbe: at(faultAt + backoff), Backoff: backoff}
	}
	quiet := Health{State: Unhealthy, Evidence: fault.Evidence, FaultAt: at(0), QuietSince: at(time.Minute),
		NextProbe: at(time.Minute + 10*time.Second), Backoff: 10 * time.Second}

	cases := map[string]struct {
		h      Health
		now    time.Duration
		v      Verdict
		probed bool
		want   Health
	}{
		"first verdict healthy": {v: clean, probed: true, want: Health{State: Healthy}},
		"degraded is published at once": {
			h: Health{State: Healthy}, v: hot, probed: true, want: Health{State: Degraded, Evidence: hot.Evidence},
		},
		"degraded clears at once": {
			h: Health{State: Degraded, Evidence: hot.Evidence}, v: clean, probed: true, want: Health{State: Healthy},
		},
		"a fault": {
			h: Health{State: Degraded}, v: fault, probed: true, want: failing(0, 10*time.Second),
		},
		"still failing: back-off doubles": {
			h: failing(0, 10*time.Second), now: 10 * time.Second, v: fault, probed: true,
			want: failing(10*time.Second, 20*time.Second),
		},
		"still failing: back-off capped": {
			h: failing(0, 4*time.Minute), now: 4 * time.Minute, v: fault, probed: true,
			want: failing(4*time.Minute, 5*time.Minute),
		},
		"an XID between probes: the next probe stays": {
			h: failing(0, 40*time.Second), now: 5 * time.Second, v: xid, probed: false,
			want: Health{State: Unhealthy, Evidence: xid.Evidence, FaultAt: at(5 * time.Second), NextProbe: at(40 * time.Second), Backoff: 40 * time.Second},
		},
		"not probed, no events: unchanged": {
			h: failing(0, 40*time.Second), now: 5 * time.Second, v: clean, probed: false, want: failing(0, 40*time.Second),
		},
		"first clean probe starts the quiet period": {
			h: failing(0, 40*time.Second), now: time.Minute, v: clean, probed: true, want: quiet,
		},
		"clean probe within the quiet period": {
			h: quiet, now: 10 * time.Minute, v: hot, probed: true,
			want: Health{State: Unhealthy, Evidence: fault.Evidence, FaultAt: at(0), QuietSince: at(time.Minute),
				NextProbe: at(10*time.Minute + 10*time.Second), Backoff: 10 * time.Second},
		},
		"quiet period over: healthy": {
			h: quiet, now: 11 * time.Minute, v: clean, probed: true, want: Health{State: Healthy},
		},
		"quiet period over while degraded: degraded": {
			h: quiet, now: 11 * time.Minute, v: hot, probed: true, want: Health{State: Degraded, Evidence: hot.Evidence},
		},
		"a fault in the quiet period starts again": {
			h: quiet, now: 9 * time.Minute, v: fault, probed: true, want: failing(9*time.Minute, 10*time.Second),
		},
		"an XID in the quiet period, not probed, starts again": {
			h: quiet, now: 9 * time.Minute, v: xid, probed: false,
			want: Health{State: Unhealthy, Evidence: xid.Evidence, FaultAt: at(9 * time.Minute), NextProbe: at(9*time.Minute + 10*time.Second), Backoff: 10 * time.Second},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := tc.h.Step(at(tc.now), tc.v, tc.probed, p)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Step (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProbeDue(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	h := Health{State: Unhealthy, NextProbe: t0}
	got := []bool{
		Health{}.ProbeDue(t0), Health{State: Degraded, NextProbe: t0.Add(time.Hour)}.ProbeDue(t0),
		h.ProbeDue(t0.Add(-time.Nanosecond)), h.ProbeDue(t0), h.ProbeDue(t0.Add(time.Second)),
	}
	if diff := cmp.Diff([]bool{true, true, false, true, true}, got); diff != "" {
		t.Errorf("ProbeDue (-want +got):\n%s", diff)
	}
}
