package fleet

// Event reasons, all in one place: people and alerting rules select on them.
const (
	EventRayClusterCreated  = "RayClusterCreated"
	EventRayClusterUpdated  = "RayClusterUpdated"
	EventDriftReverted      = "DriftReverted"
	EventScaled             = "Scaled"
	EventSuspended          = "Suspended"
	EventResumed            = "Resumed"
	EventInvalidSpec        = "InvalidSpec"
	EventRayClusterNotOwned = "RayClusterNotOwned"

	EventRollingWorkers = "RollingWorkers"

	EventRayJobCreated   = "RayJobCreated"
	EventRayJobDeleted   = "RayJobDeleted"
	EventInvalidSchedule = "InvalidSchedule"

	// EventWorkerReplaced is emitted once per replacement, after it is recorded in status.
	EventWorkerReplaced         = "WorkerReplaced"
	EventRestartBudgetExhausted = "RestartBudgetExhausted"
	// EventStrandedWorkerDeleted: a worker whose node went silent was force-deleted, so that KubeRay
	// replaces it (stranded.go).
	EventStrandedWorkerDeleted = "StrandedWorkerDeleted"

	// EventBudgetExceeded (Warning) when a fleet budget is first exceeded; EventWithinBudget
	// (Normal) when the fleet is back under its budgets.
	EventBudgetExceeded = "BudgetExceeded"
	EventWithinBudget   = "WithinBudget"

	// A canary's course: started, passed (waiting for a person), promoting, promoted, aborted
	// (Warning), abandoned (its change reverted before a verdict).
	EventCanaryStarted   = "CanaryStarted"
	EventCanaryPassed    = "CanaryPassed"
	EventCanaryPromoting = "CanaryPromoting"
	EventCanaryPromoted  = "CanaryPromoted"
	EventCanaryAborted   = "CanaryAborted"
	EventCanaryAbandoned = "CanaryAbandoned"

	// A blue-green rollout's course: a preview RayCluster started, switched to, aborted, or its
	// change reverted; and a head change that only BlueGreen applies.
	EventBlueGreenStarted   = "BlueGreenStarted"
	EventBlueGreenPromoted  = "BlueGreenPromoted"
	EventBlueGreenAborted   = "BlueGreenAborted"
	EventBlueGreenAbandoned = "BlueGreenAbandoned"
	EventNeedsBlueGreen     = "NeedsBlueGreen"
)
