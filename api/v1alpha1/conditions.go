package v1alpha1

// Condition types of an AgentFleet. Ready is the summary; Reconciling and Stalled follow kstatus'
// conventions, so that Flux, `kubectl wait` and kstatus-based tools read fleets too.
const (
	ConditionReady       = "Ready"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
	// ConditionBudgetExceeded is True while the fleet is over a fleet budget (spec.budgets), False
	// while it has one and is under it, absent without one.
	ConditionBudgetExceeded = "BudgetExceeded"
)

// Condition reasons.
const (
	ReasonReady                  = "Ready"
	ReasonWaitingForDependencies = "WaitingForDependencies"
	ReasonDependencyFailed       = "DependencyFailed"
	// ReasonDependencyKindUnknown: the API server serves no such kind (its CRD is not installed, or
	// apiVersion is wrong). Stalled until the CRD is installed or the spec changes.
	ReasonDependencyKindUnknown = "DependencyKindUnknown"
	// ReasonDependencyForbidden: the operator may not read a dependency; the message names the
	// permission to grant. Stalled until RBAC grants it.
	ReasonDependencyForbidden = "DependencyForbidden"
	ReasonPromptNotFound      = "PromptNotFound"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonInvalidSpec         = "InvalidSpec"
	// ReasonGPUNotAllowed: the fleet asks for more GPUs than its namespace allows (label
	// agentfleet.dev/gpu-allowed=false, annotation agentfleet.dev/max-gpus).
	ReasonGPUNotAllowed      = "GPUNotAllowed"
	ReasonRayClusterNotOwned = "RayClusterNotOwned"
	ReasonCreating           = "Creating"
	ReasonRolling            = "Rolling"
	ReasonScaling            = "Scaling"
	ReasonHeadNotReady       = "HeadNotReady"
	ReasonRayClusterFailure  = "RayClusterFailure"
	// ReasonWaitingForKubeRay: KubeRay has not observed the RayCluster's latest generation for a
	// minute (is the KubeRay operator running?); what it reports is stale until it does.
	ReasonWaitingForKubeRay      = "WaitingForKubeRay"
	ReasonSuspended              = "Suspended"
	ReasonSuspending             = "Suspending"
	ReasonRestartBudgetExhausted = "RestartBudgetExhausted"
	ReasonAsExpected             = "AsExpected"
	ReasonReconcileError         = "ReconcileError"
	// ReasonBudgetExceeded: a fleet budget with onExceeded: Pause is exceeded (Degraded), or any is
	// (BudgetExceeded=True).
	ReasonBudgetExceeded = "BudgetExceeded"
	// ReasonCanary: a canary of a new revision is being judged (Progressing); ReasonWaitingForPromotion:
	// it passed and waits for a person (autoPromote: false); ReasonPromoting: the other workers roll
	// to it; ReasonCanaryAborted: it failed and every worker returns to the stable revision (Degraded
	// until the spec changes).
	ReasonCanary              = "Canary"
	ReasonWaitingForPromotion = "WaitingForPromotion"
	ReasonPromoting           = "Promoting"
	ReasonCanaryAborted       = "CanaryAborted"
	// ReasonBlueGreen: a preview RayCluster with the new revision is starting beside the active one.
	ReasonBlueGreen = "BlueGreen"
	// ReasonBlueGreenAborted: the preview RayCluster was not Ready in time and was deleted; the
	// active one runs the previous revision until the spec changes again.
	ReasonBlueGreenAborted = "BlueGreenAborted"
	// ReasonNeedsBlueGreen: the spec changes the head (rayVersion, spec.head), which only the
	// BlueGreen strategy applies; the RayCluster keeps running what it runs.
	ReasonNeedsBlueGreen = "NeedsBlueGreen"
	// ReasonWithinBudget: BudgetExceeded=False.
	ReasonWithinBudget = "WithinBudget"
)
