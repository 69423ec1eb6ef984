package fleet

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// DefaultStatusWriteInterval is how long after a status write of a fleet a change of its progress
// alone (worker counts, condition messages) waits before it is written (--status-write-interval).
// While a fleet's workers come up, each turning Ready would otherwise be a write of its own: this
// makes a burst of them one or two, and leaves the API server to the work that makes them Ready.
const DefaultStatusWriteInterval = 2 * time.Second

// statusWrites are when this process last wrote each fleet's status (statusWriteDelay's input).
// A restarted operator knows none, so its first write of each fleet is at once.
type statusWrites struct {
	mu sync.Mutex
	m  map[types.NamespacedName]time.Time
}

func (w *statusWrites) wrote(key types.NamespacedName, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[types.NamespacedName]time.Time{}
	}
	w.m[key] = now
}

// last is when the fleet's status was last written by this process; zero if never.
func (w *statusWrites) last(key types.NamespacedName) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[key]
}

func (w *statusWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, key)
}

// statusWriteDelay decides how long the computed status waits before it replaces the written one:
// zero to write it now. Only a change of progress waits (progressOnly), and only within interval of
// the last write (lastWrite zero: none known); anything a decision, a person or a tool acts on (a
// condition's status, a Degraded fleet's reasons, observedGeneration, restarts, the rollout, jobs,
// usage) is written at once, and carries the progress with it.
func statusWriteDelay(written, computed *v1alpha1.AgentFleetStatus, lastWrite, now time.Time, interval time.Duration) time.Duration {
	if interval <= 0 || lastWrite.IsZero() || !progressOnly(written, computed) {
		return 0
	}
	return max(lastWrite.Add(interval).Sub(now), 0)
}

// progressOnly says whether two statuses differ in the progress of the workers at most: their
// counts, the GPUs they hold, the conditions' messages (which count them) and, while the fleet is
// not Degraded, the reasons of conditions whose status stays (a fleet coming up goes through
// Creating, HeadNotReady and Scaling within a second or two, Progressing all along). A condition's
// status, and any reason while Degraded, is never progress.
func progressOnly(a, b *v1alpha1.AgentFleetStatus) bool {
	degraded := meta.IsStatusConditionTrue(a.Conditions, v1alpha1.ConditionDegraded) || meta.IsStatusConditionTrue(b.Conditions, v1alpha1.ConditionDegraded)
	strip := func(s *v1alpha1.AgentFleetStatus) *v1alpha1.AgentFleetStatus {
		s = s.DeepCopy()
		s.Replicas, s.ReadyReplicas, s.UpdatedReplicas, s.Workers, s.GPUs.Allocated = 0, 0, 0, "", 0
		for i := range s.Conditions {
			s.Conditions[i].Message = ""
			if !degraded {
				s.Conditions[i].Reason = ""
			}
		}
		return s
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}
