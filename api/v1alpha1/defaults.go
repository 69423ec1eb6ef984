package v1alpha1

import "k8s.io/utils/ptr"

// DefaultReplicas is spec.replicas when it is not set (the CRD defaults it too).
const DefaultReplicas int32 = 1

// WorkerReplicas is the declared number of agent workers.
func (f *AgentFleet) WorkerReplicas() int32 { return ptr.Deref(f.Spec.Replicas, DefaultReplicas) }

// MaxRecentRestarts is how many replacements status.recentRestarts keeps (its CRD maxItems), and so
// the largest restart budget that can be enforced.
const MaxRecentRestarts = 50
