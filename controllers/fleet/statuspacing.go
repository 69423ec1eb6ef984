package fleet

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// DefaultStatusWriteInterval is how long a change of a fleet's progress alone (worker counts,
// condition messages) waits, from when a pass first saw it, before it is written
// (--status-write-interval). While a fleet's workers come up, each turning Ready would otherwise be
// a write of its own: this makes a burst of them one, or none when the fleet turns Ready within the
// interval (that is written at once, and carries them), and leaves the API server to the work that
// makes them Ready.
const DefaultStatusWriteInterval = 2 * time.Second

// statusWrites are when this process last wrote each fleet's status (statusWriteDelay's input), the
// resourceVersion that write made (ownStatusWriteOnly's), and since when progress has waited to be
// written. A restarted operator knows none, so its first write of each fleet is at once.
type statusWrites struct {
	mu sync.Mutex
	m  map[types.NamespacedName]statusWrite
}

type statusWrite struct {
	at              time.Time
	resourceVersion string
	// progressSince is when a pass first held back progress that is not written yet; zero if none.
	progressSince time.Time
}

func (w *statusWrites) wrote(key types.NamespacedName, now time.Time, resourceVersion string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[types.NamespacedName]statusWrite{}
	}
	w.m[key] = statusWrite{at: now, resourceVersion: resourceVersion}
}

// last is when the fleet's status was last written by this process; zero if never.
func (w *statusWrites) last(key types.NamespacedName) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[key].at
}

// lastVersion is the resourceVersion of this process's last status write of the fleet; "" if none.
func (w *statusWrites) lastVersion(key types.NamespacedName) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[key].resourceVersion
}

// progressWaiting is since when the fleet's progress has waited to be written; zero if it does not.
func (w *statusWrites) progressWaiting(key types.NamespacedName) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[key].progressSince
}

// heldBack records that a pass held back the fleet's progress at now, unless an earlier pass did:
// the wait counts from the first. A write (wrote) or a status with nothing to write (settled) ends
// it.
func (w *statusWrites) heldBack(key types.NamespacedName, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.m[key]; ok && e.progressSince.IsZero() {
		e.progressSince = now
		w.m[key] = e
	}
}

// settled records that the fleet's status has nothing left to write.
func (w *statusWrites) settled(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.m[key]; ok && !e.progressSince.IsZero() {
		e.progressSince = time.Time{}
		w.m[key] = e
	}
}

func (w *statusWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, key)
}

// statusWriteDelay decides how long the computed status waits before it replaces the written one:
// zero to write it now. Only a change of progress waits (progressOnly), and only when this process
// wrote the fleet's status before (lastWrite zero: none known, as after a restart); it waits the
// interval from when a pass first held it back (waitingSince; zero: this pass is the first), so that
// a burst of progress is one write at its end, and a fleet that turns Ready within the interval
// writes none of it on its own. Anything a decision, a person or a tool acts on (a condition's
// status, a Degraded fleet's reasons, observedGeneration, restarts, the rollout, jobs, usage) is
// written at once, and carries the progress with it.
func statusWriteDelay(written, computed *v1alpha1.AgentFleetStatus, lastWrite, waitingSince, now time.Time, interval time.Duration) time.Duration {
	if interval <= 0 || lastWrite.IsZero() || !progressOnly(written, computed) {
		return 0
	}
	if waitingSince.IsZero() {
		return interval
	}
	return max(waitingSince.Add(interval).Sub(now), 0)
}

// progressOnly says whether two statuses differ in the progress of the workers at most: their
// counts, the GPUs they hold, the conditions' messages (which count them), what they are seen to run
// (revision, model version, prompt hash, the dashboard's URL: read by people and `agentfleet
// status`, by no decision or health check; a rollout whose workers are all Ready turns Progressing
// False and is written at once, one whose last workers are not yet Ready, or a Degraded fleet's,
// waits at most the interval, as any progress) and, while the fleet is not Degraded, the reasons of
// conditions whose status stays (a fleet coming up goes through Creating, HeadNotReady and Scaling
// within a second or two, Progressing all along). A condition's status, and any reason while
// Degraded, is never progress.
func progressOnly(a, b *v1alpha1.AgentFleetStatus) bool {
	degraded := meta.IsStatusConditionTrue(a.Conditions, v1alpha1.ConditionDegraded) || meta.IsStatusConditionTrue(b.Conditions, v1alpha1.ConditionDegraded)
	strip := func(s *v1alpha1.AgentFleetStatus) *v1alpha1.AgentFleetStatus {
		s = s.DeepCopy()
		clearWorkersShown(s)
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

// clearWorkersShown zeroes what the status shows of the workers: their counts, the GPUs they hold,
// and what they are seen to run (revision, model version, prompt hash, the dashboard's URL). No
// pass reads these back: progressOnly paces them, statusMemory leaves them out.
func clearWorkersShown(s *v1alpha1.AgentFleetStatus) {
	s.Replicas, s.ReadyReplicas, s.UpdatedReplicas, s.Workers, s.GPUs.Allocated = 0, 0, 0, "", 0
	s.Revision, s.ModelVersion, s.PromptHash, s.DashboardURL = "", "", "", ""
}

// ownStatusWriteOnly says whether an update of a fleet is only this process's own status write
// coming back through the cache, with nothing in it that a pass reads: then it needs no pass. A
// pass reads the status it wrote only as memory (the RayCluster's name, observedGeneration, the
// rollout, restarts, usage, jobs, GPU faults, whether a budget is exceeded) and as the base of the
// next status, which it computes again to the same result (a fixpoint: nothing is written at
// rest). So a write that changed only what is written for people and tools (conditions, phase,
// counts, what the workers are seen to run, the GPUs held) leaves the next pass nothing to decide
// that the writing pass did not; what it waits for, it has asked a timer for. While a fleet comes
// up, these are its progress writes and its turning Ready: each woke a pass that found nothing to
// do.
//
// The update must carry the resourceVersion this process's write made (written): the write was
// made with an optimistic lock on the version the pass read, so the object is exactly that
// version with the status written. Its metadata and spec must be unchanged. An event that comes
// before the write is recorded, or any doubt, wakes a pass as before; so does the cache's periodic
// resync (the same version delivered again), which is a safety net and not a write coming back.
func ownStatusWriteOnly(old, updated *v1alpha1.AgentFleet, written string) bool {
	if written == "" || updated.ResourceVersion != written || old.ResourceVersion == updated.ResourceVersion || old.Generation != updated.Generation ||
		!equality.Semantic.DeepEqual(old.Labels, updated.Labels) || !equality.Semantic.DeepEqual(old.Annotations, updated.Annotations) ||
		!equality.Semantic.DeepEqual(old.Finalizers, updated.Finalizers) || !equality.Semantic.DeepEqual(old.OwnerReferences, updated.OwnerReferences) ||
		!old.DeletionTimestamp.Equal(updated.DeletionTimestamp) {
		return false
	}
	return equality.Semantic.DeepEqual(statusMemory(&old.Status), statusMemory(&updated.Status))
}

// statusMemory is the status without what no pass reads back: whatever is not stripped here counts
// as memory, so that a field added later is memory until someone shows it is not.
func statusMemory(s *v1alpha1.AgentFleetStatus) *v1alpha1.AgentFleetStatus {
	budgetExceeded := meta.IsStatusConditionTrue(s.Conditions, v1alpha1.ConditionBudgetExceeded)
	s = s.DeepCopy()
	s.Conditions, s.Phase = nil, ""
	if budgetExceeded {
		// Read by the budget phase (to send an Event on the change) and the usage ledger.
		s.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionBudgetExceeded, Status: metav1.ConditionTrue}}
	}
	clearWorkersShown(s)
	s.GPUs = v1alpha1.GPUStatus{} // also what they request and on which product: the spec's, shown
	return s
}

// ownStatusWritesIgnored filters out of the fleet's own events those that are only this process's
// status writes coming back (ownStatusWriteOnly).
func (r *Reconciler) ownStatusWritesIgnored() predicate.TypedFuncs[client.Object] {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		old, ok1 := e.ObjectOld.(*v1alpha1.AgentFleet)
		updated, ok2 := e.ObjectNew.(*v1alpha1.AgentFleet)
		if !ok1 || !ok2 {
			return true
		}
		return !ownStatusWriteOnly(old, updated, r.statusWrites.lastVersion(client.ObjectKeyFromObject(updated)))
	}}
}
