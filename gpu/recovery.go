package gpu

import "time"

// RecoveryPolicy is how an Unhealthy GPU earns its way back. NVIDIA's device plugin never takes a
// GPU back once it has marked it unhealthy; a GPU reset, a transient XID or a driver reload would
// leave the node's GPU idle until someone restarts the plugin.
type RecoveryPolicy struct {
	// InitialBackoff is the wait before the first re-probe of an Unhealthy GPU; it doubles after each
	// probe that still finds a fault, up to MaxBackoff. A lost GPU can make each NVML call slow, so it
	// is not asked every poll.
	InitialBackoff, MaxBackoff time.Duration
	// QuietPeriod is how long probes must find the GPU clean, with no critical XID either, before it
	// is Healthy (or Degraded) again.
	QuietPeriod time.Duration
}

// DefaultRecoveryPolicy: re-probe after 10 s doubling to 5 min; 10 min of clean probes to recover.
func DefaultRecoveryPolicy() RecoveryPolicy {
	return RecoveryPolicy{InitialBackoff: 10 * time.Second, MaxBackoff: 5 * time.Minute, QuietPeriod: 10 * time.Minute}
}

// Health is the state published for one GPU, with what is needed to recover it. The zero Health is
// a GPU not judged yet.
type Health struct {
	State State
	// Evidence is the latest verdict's evidence while Healthy or Degraded, and the evidence of the
	// latest fault while Unhealthy (the quiet period included), so the published reason does not vanish
	// while the GPU is still on probation.
	Evidence []string
	// FaultAt is when the latest fault was seen.
	FaultAt time.Time
	// QuietSince is the first clean probe since the latest fault; zero while there is none.
	QuietSince time.Time
	// NextProbe is when an Unhealthy GPU is due to be asked again, Backoff the wait that set it.
	NextProbe time.Time
	Backoff   time.Duration
}

// ProbeDue says whether the GPU should be asked this poll: always, unless it is Unhealthy and in
// its back-off. XID events are read for every GPU every poll regardless.
func (h Health) ProbeDue(now time.Time) bool {
	return h.State != Unhealthy || !now.Before(h.NextProbe)
}

// Step returns the health after a verdict taken at now; probed says whether the GPU was asked (false:
// the verdict rests on XID events alone). Pure: the caller keeps the result for the next Step.
func (h Health) Step(now time.Time, v Verdict, probed bool, p RecoveryPolicy) Health {
	if v.State == Unhealthy {
		backoff, next := p.InitialBackoff, now.Add(p.InitialBackoff)
		if h.State == Unhealthy && h.QuietSince.IsZero() {
			// Still failing: back off further with each probe that says so. A fault in the quiet
			// period, or an XID between probes, starts again from the initial back-off.
			backoff, next = h.Backoff, h.NextProbe
			if probed {
				backoff = min(2*h.Backoff, p.MaxBackoff)
				next = now.Add(backoff)
			}
		}
		return Health{State: Unhealthy, Evidence: v.Evidence, FaultAt: now, NextProbe: next, Backoff: backoff}
	}
	if h.State != Unhealthy {
		return Health{State: v.State, Evidence: v.Evidence}
	}
	if !probed {
		return h // nothing was learnt about the GPU: it stays on probation as it was
	}
	if h.QuietSince.IsZero() {
		h.QuietSince = now
	}
	if now.Sub(h.QuietSince) >= p.QuietPeriod {
		return Health{State: v.State, Evidence: v.Evidence}
	}
	// Clean now: probe it at the initial pace, so a fault during the quiet period is seen soon.
	h.Backoff = p.InitialBackoff
	h.NextProbe = now.Add(p.InitialBackoff)
	return h
}
