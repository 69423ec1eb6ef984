package v1alpha1

import "k8s.io/utils/ptr"

// DefaultReplicas is spec.replicas when it is not set (the CRD defaults it too).
const DefaultReplicas int32 = 1

// WorkerReplicas is the declared number of agent workers.
func (f *AgentFleet) WorkerReplicas() int32 { return ptr.Deref(f.Spec.Replicas, DefaultReplicas) }

// MaxRecentRestarts is how many replacements status.recentRestarts keeps (its CRD maxItems), and so
// the largest restart budget that can be enforced.
const MaxRecentRestarts = 50

// MaxStepsPerTask is the steps budget of one task in force: spec.budgets.maxSteps, else the
// deprecated spec.health.heartbeat.maxStepsPerTask; 0 (none) without a heartbeat contract, which
// is what counts steps.
func (f *AgentFleet) MaxStepsPerTask() int32 {
	if f.Spec.Health.Heartbeat == nil {
		return 0
	}
	if b := f.Spec.Budgets; b != nil && b.MaxSteps != nil {
		return *b.MaxSteps
	}
	return f.Spec.Health.Heartbeat.MaxStepsPerTask
}
