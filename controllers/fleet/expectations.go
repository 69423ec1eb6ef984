package fleet

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// statusExpectations are the status writes of this process its cache has not shown yet, by fleet:
// a pass that read the fleet from a cache still behind its own last status write would decide from
// a stale status.rollout (a canary already aborted read as running) and could write the RayCluster
// against that newer decision before its own status write failed on the conflict. Such a pass waits
// instead (the ReplicaSet controller's expectations, for one object). The informer clears an
// expectation when it delivers the version written; a relist that skips it is covered by a timeout.
type statusExpectations struct {
	mu sync.Mutex
	m  map[types.NamespacedName]statusExpectation
}

type statusExpectation struct {
	resourceVersion string
	at              time.Time
}

// expectationTimeout bounds a wait for the cache: past it the pass goes on (the optimistic lock of
// the status write still stops a stale one from writing the status).
const expectationTimeout = 5 * time.Second

// expect records the resourceVersion of a status this process wrote.
func (e *statusExpectations) expect(key types.NamespacedName, resourceVersion string, now time.Time) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[types.NamespacedName]statusExpectation{}
	}
	e.m[key] = statusExpectation{resourceVersion: resourceVersion, at: now}
}

// observed clears the expectation the informer delivered.
func (e *statusExpectations) observed(key types.NamespacedName, resourceVersion string) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok && x.resourceVersion == resourceVersion {
		delete(e.m, key)
	}
}

// behind says whether the fleet as read (its resourceVersion) is older than this process's last
// status write of it, as far as can be told: the cache has not delivered that write yet.
func (e *statusExpectations) behind(key types.NamespacedName, resourceVersion string, now time.Time) bool {
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	switch {
	case !ok:
		return false
	case x.resourceVersion == resourceVersion || now.Sub(x.at) >= expectationTimeout:
		delete(e.m, key)
		return false
	}
	return true
}

// forget drops a fleet's expectation (the fleet is gone).
func (e *statusExpectations) forget(key types.NamespacedName) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
