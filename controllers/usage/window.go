package usage

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Use is what a fleet used: tasks, tokens, and their cost and the GPUs', in the price table's
// currency.
type Use struct {
	Succeeded, Failed   int64
	TokensIn, TokensOut int64
	TokenCost, GPUCost  float64
}

// Plus returns u + v.
func (u Use) Plus(v Use) Use {
	return Use{u.Succeeded + v.Succeeded, u.Failed + v.Failed, u.TokensIn + v.TokensIn, u.TokensOut + v.TokensOut,
		u.TokenCost + v.TokenCost, u.GPUCost + v.GPUCost}
}

// Tokens are the tokens in and out.
func (u Use) Tokens() int64 { return u.TokensIn + u.TokensOut }

// Cost is the GPU cost and the token cost.
func (u Use) Cost() float64 { return u.TokenCost + u.GPUCost }

// Windows keeps each fleet's use by minute for the last Span, for budgets over sliding windows and
// the fleet's status. It is safe for concurrent use. What it holds is the leader's memory: a new
// leader starts empty and is seeded from the fleets' status (Seed), so that a restart of the
// operator does not reset a fleet's budget.
type Windows struct {
	mu     sync.Mutex
	fleets map[types.NamespacedName]*minutes
	seeded map[types.NamespacedName]bool
}

// Span is the longest window kept: a day.
const Span = 24 * time.Hour

// slots: a day's minutes, and one more: the minute a whole day old still overlaps the window.
const slots = int(Span/time.Minute) + 1

// minutes is a ring of one-minute buckets: slot i holds the minute at[i] (a Unix minute).
type minutes struct {
	at  [slots]int64
	use [slots]Use
}

// Bucket is one minute's use.
type Bucket struct {
	Minute time.Time
	Use    Use
}

// NewWindows returns empty windows.
func NewWindows() *Windows {
	return &Windows{fleets: map[types.NamespacedName]*minutes{}, seeded: map[types.NamespacedName]bool{}}
}

// Add records use by a fleet at t.
func (w *Windows) Add(fleet types.NamespacedName, t time.Time, u Use) {
	if u == (Use{}) {
		return
	}
	m := t.Unix() / 60
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.fleets[fleet]
	if r == nil {
		r = &minutes{}
		w.fleets[fleet] = r
	}
	i := int(m % int64(slots))
	switch {
	case r.at[i] > m:
		return // older than the ring holds: out of every window already
	case r.at[i] < m:
		r.at[i], r.use[i] = m, Use{}
	}
	r.use[i] = r.use[i].Plus(u)
}

// Buckets are a fleet's minutes within Span before now, oldest first.
func (w *Windows) Buckets(fleet types.NamespacedName, now time.Time) []Bucket {
	nowMinute := now.Unix() / 60
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.fleets[fleet]
	if r == nil {
		return nil
	}
	var b []Bucket
	for i := range r.at {
		if m := r.at[i]; m > nowMinute-int64(slots) && m <= nowMinute && r.use[i] != (Use{}) {
			b = append(b, Bucket{time.Unix(m*60, 0).UTC(), r.use[i]})
		}
	}
	slices.SortFunc(b, func(x, y Bucket) int { return x.Minute.Compare(y.Minute) })
	return b
}

// Sum is a fleet's use within d before now (the minute of now included), as Sum of its Buckets,
// reading only the minutes of the window (a Lease event asks for the last hour's tokens: 61 minutes,
// not the day's ring).
func (w *Windows) Sum(fleet types.NamespacedName, now time.Time, d time.Duration) Use {
	w.mu.Lock()
	defer w.mu.Unlock()
	var u Use
	r := w.fleets[fleet]
	if r == nil {
		return u
	}
	nowMinute := now.Unix() / 60
	for m := nowMinute; m > nowMinute-int64(slots); m-- {
		if !within(time.Unix(m*60, 0), now, d) {
			break
		}
		if i := int(m % int64(slots)); r.at[i] == m {
			u = u.Plus(r.use[i])
		}
	}
	return u
}

// Hours are a fleet's Buckets summed by hour (Minute is the hour's start), oldest first.
func Hours(b []Bucket) []Bucket {
	var h []Bucket
	for _, x := range b {
		start := x.Minute.Truncate(time.Hour)
		if n := len(h); n > 0 && h[n-1].Minute.Equal(start) {
			h[n-1].Use = h[n-1].Use.Plus(x.Use)
			continue
		}
		h = append(h, Bucket{start, x.Use})
	}
	return h
}

// Seed records, once per fleet and process, use the fleet had before this process kept its
// windows: the caller passes what the fleet's status last said. It reports whether it recorded.
func (w *Windows) Seed(fleet types.NamespacedName, seed func(add func(time.Time, Use))) bool {
	w.mu.Lock()
	if w.seeded[fleet] {
		w.mu.Unlock()
		return false
	}
	w.seeded[fleet] = true
	w.mu.Unlock()
	seed(func(t time.Time, u Use) { w.Add(fleet, t, u) })
	return true
}

// Forget drops a deleted fleet's windows.
func (w *Windows) Forget(fleet types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.fleets, fleet)
	delete(w.seeded, fleet)
}

// Sum is the use in the buckets within d before now (the minute of now included).
func Sum(b []Bucket, now time.Time, d time.Duration) Use {
	var u Use
	for _, x := range b {
		if within(x.Minute, now, d) {
			u = u.Plus(x.Use)
		}
	}
	return u
}

// within says whether a minute's bucket is in the window of d ending now: the window holds the
// minutes after now-d, counted whole (a bucket stays until its whole minute has left the window).
func within(minute, now time.Time, d time.Duration) bool {
	return minute.Add(time.Minute).After(now.Add(-d)) && !minute.After(now)
}

// Until is how long, with no more use, until measure over the window of d falls to at most limit:
// 0 if it is there now.
func Until(b []Bucket, now time.Time, d time.Duration, limit float64, measure func(Use) float64) time.Duration {
	total := measure(Sum(b, now, d))
	for _, x := range b {
		if total <= limit {
			break
		}
		if !within(x.Minute, now, d) {
			continue
		}
		total -= measure(x.Use)
		if total <= limit {
			// This bucket leaves the window when its whole minute is d old.
			return max(x.Minute.Add(time.Minute+d).Sub(now), 0)
		}
	}
	return 0
}
