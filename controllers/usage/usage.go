// Package usage keeps the ledger of what agent workers report on their heartbeat Leases: tasks
// finished, by outcome, and model tokens, by direction. The Lease's counts are cumulative for a
// worker's life and restart at 0 with it; the ledger accounts their increases, as Prometheus does a
// counter's, so that a replaced worker's counts are kept and none is counted twice.
package usage

import (
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
)

// Counts are a worker's cumulative counts, as its Lease reports them. A count its Lease does not
// carry (a client that does not report it) is 0.
type Counts struct {
	Succeeded, Failed   int64
	TokensIn, TokensOut int64
}

// Add returns c + d.
func (c Counts) Add(d Counts) Counts {
	return Counts{c.Succeeded + d.Succeeded, c.Failed + d.Failed, c.TokensIn + d.TokensIn, c.TokensOut + d.TokensOut}
}

// IsZero says whether no count is set.
func (c Counts) IsZero() bool { return c == Counts{} }

// Increase is what each count gained from prev to cur. A count lower than before restarted (a new
// worker process writing the same Lease) and gained all of cur's, as Prometheus reads a counter
// reset: what the old process counted after its last report is lost, nothing is counted twice.
func Increase(prev, cur Counts) Counts {
	inc := func(p, c int64) int64 {
		if c < p {
			return c
		}
		return c - p
	}
	return Counts{inc(prev.Succeeded, cur.Succeeded), inc(prev.Failed, cur.Failed), inc(prev.TokensIn, cur.TokensIn), inc(prev.TokensOut, cur.TokensOut)}
}

// Read reads a Lease's counts; malformed or negative values read as absent (0).
func Read(l *coordinationv1.Lease) Counts {
	get := func(key string) int64 {
		n, err := strconv.ParseInt(strings.TrimSpace(l.Annotations[key]), 10, 64)
		if err != nil || n < 0 {
			return 0
		}
		return n
	}
	return Counts{
		Succeeded: get(heartbeatapi.AnnotationTasksSucceeded), Failed: get(heartbeatapi.AnnotationTasksFailed),
		TokensIn: get(heartbeatapi.AnnotationTokensIn), TokensOut: get(heartbeatapi.AnnotationTokensOut),
	}
}

// Ledger accounts the Leases it is shown. It is safe for concurrent use.
type Ledger struct {
	// Since is when the ledger started: a Lease created before it was counted by an earlier
	// process (whose counters Prometheus has), so its counts at first sight are a baseline, not an
	// increase. A Lease created after it counts from 0.
	Since time.Time

	mu      sync.Mutex
	workers map[types.UID]seen
}

type seen struct {
	counts  Counts
	renewed time.Time
}

// NewLedger returns a ledger started at since.
func NewLedger(since time.Time) *Ledger {
	return &Ledger{Since: since, workers: map[types.UID]seen{}}
}

// Observe accounts a Lease and returns what its counts gained since the ledger last saw it. A
// snapshot older than the one seen last (by renewTime) is ignored: heartbeats seen out of order
// are not a reset.
func (l *Ledger) Observe(lease *coordinationv1.Lease) Counts {
	cur := Read(lease)
	renewed := lease.CreationTimestamp.Time
	if lease.Spec.RenewTime != nil {
		renewed = lease.Spec.RenewTime.Time
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.workers[lease.UID]
	switch {
	case ok && renewed.Before(prev.renewed):
		return Counts{}
	case !ok && lease.CreationTimestamp.Time.Before(l.Since):
		l.workers[lease.UID] = seen{counts: cur, renewed: renewed}
		return Counts{}
	}
	l.workers[lease.UID] = seen{counts: cur, renewed: renewed}
	return Increase(prev.counts, cur)
}

// Forget accounts a deleted Lease's last state (the informer's delete event carries it) and drops
// it: a replaced worker's final counts are kept.
func (l *Ledger) Forget(lease *coordinationv1.Lease) Counts {
	inc := l.Observe(lease)
	l.mu.Lock()
	delete(l.workers, lease.UID)
	l.mu.Unlock()
	return inc
}

// Len is the number of Leases the ledger follows.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.workers)
}
