// Package usage keeps the ledger of what agent workers report on their heartbeat Leases: tasks
// finished, by outcome, and model tokens, by direction. The Lease's counts are cumulative for a
// worker's life and restart at 0 with it; the ledger accounts their increases, as Prometheus does a
// counter's, so that a replaced worker's counts are kept and none is counted twice.
package usage

import (
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
)

// Counts are a worker's cumulative counts, as its Lease reports them.
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

// absent marks a count a Lease does not carry, or carries malformed (Read).
const absent = -1

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

// Read reads a Lease's counts; a count it does not carry, or carries malformed or negative, is
// absent (-1): not a reset to 0.
func Read(l *coordinationv1.Lease) Counts {
	get := func(key string) int64 {
		n, ok := heartbeatapi.ParseCount(l.Annotations[key])
		if !ok {
			return absent
		}
		return n
	}
	return Counts{
		Succeeded: get(heartbeatapi.AnnotationTasksSucceeded), Failed: get(heartbeatapi.AnnotationTasksFailed),
		TokensIn: get(heartbeatapi.AnnotationTokensIn), TokensOut: get(heartbeatapi.AnnotationTokensOut),
	}
}

// orKeep fills cur's absent counts with prev's: an absent count (a write that dropped the
// annotation) says nothing new, and must not read as a reset whose next value is counted again.
func orKeep(cur, prev Counts) Counts {
	keep := func(c, p int64) int64 {
		if c == absent {
			return max(p, 0)
		}
		return c
	}
	return Counts{keep(cur.Succeeded, prev.Succeeded), keep(cur.Failed, prev.Failed), keep(cur.TokensIn, prev.TokensIn), keep(cur.TokensOut, prev.TokensOut)}
}

// Ledger accounts the Leases it is shown. It is safe for concurrent use.
type Ledger struct {
	// Retention is how long a deleted Lease's last counts are kept by its name: a worker still
	// running out its grace period recreates its Lease (a new UID, the same name, its lifetime's
	// counts), which must continue from them, not count them again.
	Retention time.Duration

	mu      sync.Mutex
	workers map[types.UID]seen
	deleted map[types.NamespacedName]tombstone
}

type seen struct {
	name    types.NamespacedName
	counts  Counts
	renewed time.Time
}

type tombstone struct {
	counts Counts
	at     time.Time
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{Retention: 10 * time.Minute, workers: map[types.UID]seen{}, deleted: map[types.NamespacedName]tombstone{}}
}

// Observe accounts a Lease and returns what its counts gained since the ledger last saw it.
// baseline says the Lease is seen as it stood when the ledger started (the informer's initial list,
// when this process became the leader): its counts were counted by an earlier process, whose
// counters Prometheus has, and are taken as they are, not counted again. A snapshot older than the
// one seen last (by renewTime: the informer delivers one object's events in order, but two writers
// of one Lease need not write in order) is ignored: it is no reset.
func (l *Ledger) Observe(lease *coordinationv1.Lease, baseline bool) Counts {
	renewed := lease.CreationTimestamp.Time
	if lease.Spec.RenewTime != nil {
		renewed = lease.Spec.RenewTime.Time
	}
	name := types.NamespacedName{Namespace: lease.Namespace, Name: lease.Name}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.workers[lease.UID]
	if ok && renewed.Before(prev.renewed) {
		return Counts{}
	}
	if !ok {
		// A Lease recreated under a deleted one's name is the same worker (pod names are unique):
		// it continues from the deleted one's counts.
		if t, recreated := l.deleted[name]; recreated {
			prev.counts = t.counts
			delete(l.deleted, name)
		}
	}
	cur := orKeep(Read(lease), prev.counts)
	l.workers[lease.UID] = seen{name: name, counts: cur, renewed: renewed}
	if !ok && baseline {
		return Counts{}
	}
	return Increase(prev.counts, cur)
}

// Forget accounts a deleted Lease's last state (the informer's delete event carries it), drops it,
// and keeps its counts by name for Retention. now prunes older tombstones.
func (l *Ledger) Forget(lease *coordinationv1.Lease, now time.Time) Counts {
	inc := l.Observe(lease, false)
	l.mu.Lock()
	defer l.mu.Unlock()
	if w, ok := l.workers[lease.UID]; ok {
		l.deleted[w.name] = tombstone{counts: w.counts, at: now}
		delete(l.workers, lease.UID)
	}
	for name, t := range l.deleted {
		if now.Sub(t.at) > l.Retention {
			delete(l.deleted, name)
		}
	}
	return inc
}

// Len is the number of Leases the ledger follows, and of deleted ones whose counts it keeps.
func (l *Ledger) Len() (live, deleted int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.workers), len(l.deleted)
}
