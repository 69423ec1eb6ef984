// Package heartbeat is AgentFleet's heartbeat contract: what an agent worker writes and what the
// operator reads, defined once. The operator (its supervisor, its event filters and the RayCluster
// builder), the Go SDK (sdk/go/heartbeat) and the tests read these names from here; the Python
// client (sdk/python/agentfleet_heartbeat.py) keeps a copy that python_test.go checks against them.
//
// A worker of a fleet with spec.health.heartbeat keeps a coordination.k8s.io/v1 Lease named after
// its pod, in its namespace, labelled LabelFleet with the fleet's name, renewed at least every
// interval (EnvHeartbeatInterval, in seconds), with these annotations:
//
//   - AnnotationState: StateIdle or StateWorking;
//   - AnnotationSteps: the steps taken since the worker started;
//   - AnnotationTaskSteps: the steps of the current task (0 when idle);
//   - AnnotationActionRepeats: how many times in a row the same action was taken (0 when idle);
//   - AnnotationLastStepTime: the time of the last step, in TimeFormat (absent before the first).
//
// and, from clients that report what their tasks came to (all optional; absent means not reported):
//
//   - AnnotationTasksSucceeded, AnnotationTasksFailed: the tasks finished since the worker started,
//     by outcome;
//   - AnnotationTokensIn, AnnotationTokensOut: the model's input and output tokens since the worker
//     started;
//   - AnnotationTaskTokens: the tokens (in and out) of the current task (0 when idle);
//   - AnnotationTaskStarted: when the current task started, in TimeFormat (absent when idle).
//
// The operator in turn writes directives on the Lease (AnnotationPaused, and the AnnotationMax*
// budget in force when it changed since the worker started), which clients keep and expose.
//
// The counts are decimal integers. The cumulative ones restart at 0 with each worker (each pod): the
// operator accounts their increases, as Prometheus does a counter's, and keeps a replaced worker's. The operator replaces a worker whose Lease is not renewed, or
// that is working without a step, for the fleet's progressDeadlineSeconds (stalled), and one whose
// action-repeats reaches maxRepeatedActions or task-steps reaches maxStepsPerTask (looping). Those
// limits and their defaults are fields of the AgentFleet API (api/v1alpha1.HeartbeatSpec).
//
// This is a module of its own with no requirements, so that the Go SDK, which agents build with,
// can depend on it without inheriting the operator's module graph (KubeRay, controller-runtime): a
// package of the main module would bring the main module's go.mod into every agent's build.
package heartbeat

import (
	"strconv"
	"strings"
	"time"
)

// LabelFleet names the fleet on each worker's heartbeat Lease (and on everything else the operator
// makes for the fleet).
const LabelFleet = "agentfleet.dev/fleet"

// The annotations of a heartbeat Lease.
const (
	AnnotationState         = "agentfleet.dev/state"
	AnnotationSteps         = "agentfleet.dev/steps"
	AnnotationTaskSteps     = "agentfleet.dev/task-steps"
	AnnotationActionRepeats = "agentfleet.dev/action-repeats"
	AnnotationLastStepTime  = "agentfleet.dev/last-step-time"

	AnnotationTasksSucceeded = "agentfleet.dev/tasks-succeeded"
	AnnotationTasksFailed    = "agentfleet.dev/tasks-failed"
	AnnotationTokensIn       = "agentfleet.dev/tokens-in"
	AnnotationTokensOut      = "agentfleet.dev/tokens-out"
	AnnotationTaskTokens     = "agentfleet.dev/task-tokens"
	AnnotationTaskStarted    = "agentfleet.dev/task-started"
)

// The annotations the operator writes on a worker's heartbeat Lease: directives to the agent. A
// client keeps them when it writes the Lease (it owns only the keys above) and reads them at each
// write; a write that conflicts with the operator's reads the Lease again and retries, so an agent
// sees a directive at its next write or renewal at the latest.
const (
	// AnnotationPaused is "true" while the fleet is paused by its budget (spec.budgets.onExceeded:
	// Pause): the agent must not start a new task. It finishes, or abandons, the current one, keeps
	// renewing, and starts again when the annotation is gone.
	AnnotationPaused = "agentfleet.dev/paused"

	// The per-task budget in force, when it differs from the one the worker was started with (the
	// EnvMax* variables): a budget change is no new revision and rolls no worker, so a running
	// worker learns it here. Each is a decimal, or "" for no limit; absent means the environment's
	// value stands.
	AnnotationMaxStepsPerTask  = "agentfleet.dev/max-steps-per-task"
	AnnotationMaxTokensPerTask = "agentfleet.dev/max-tokens-per-task"
	AnnotationMaxTaskSeconds   = "agentfleet.dev/max-task-seconds"
	AnnotationMaxTaskCost      = "agentfleet.dev/max-task-cost"
)

// BudgetAnnotations pairs each per-task budget's Lease annotation with its environment variable.
var BudgetAnnotations = [][2]string{
	{AnnotationMaxStepsPerTask, EnvMaxStepsPerTask},
	{AnnotationMaxTokensPerTask, EnvMaxTokensPerTask},
	{AnnotationMaxTaskSeconds, EnvMaxTaskSeconds},
	{AnnotationMaxTaskCost, EnvMaxTaskCost},
}

// The values of AnnotationState. Only a working agent can stall for lack of steps: an idle one
// waits for its next task as long as it keeps renewing.
const (
	StateIdle    = "idle"
	StateWorking = "working"
)

// TimeFormat is the format of AnnotationLastStepTime and AnnotationTaskStarted: RFC 3339, in UTC,
// with fractional seconds.
const TimeFormat = time.RFC3339Nano

// The environment the operator gives every agent container (the interval only to workers, and
// only when the fleet has a heartbeat contract). Fleets may not set names starting AGENTFLEET_.
const (
	// EnvFleet is the fleet's name.
	EnvFleet = "AGENTFLEET_FLEET"
	// EnvNamespace is the fleet's, and the Lease's, namespace.
	EnvNamespace = "AGENTFLEET_NAMESPACE"
	// EnvPodName is the pod's name, and so the Lease's.
	EnvPodName = "AGENTFLEET_POD_NAME"
	// EnvHeartbeatInterval is how often the Lease must be renewed at the least, in whole seconds.
	EnvHeartbeatInterval = "AGENTFLEET_HEARTBEAT_INTERVAL"
	// EnvModelName, EnvModelVersion and EnvModelEndpoint are spec.model's fields (the endpoint only
	// when set).
	EnvModelName     = "AGENTFLEET_MODEL_NAME"
	EnvModelVersion  = "AGENTFLEET_MODEL_VERSION"
	EnvModelEndpoint = "AGENTFLEET_MODEL_ENDPOINT"
	// EnvPromptFile is the path of the system prompt's file, when the fleet has a prompt.
	EnvPromptFile = "AGENTFLEET_PROMPT_FILE"

	// The per-task budget of spec.budgets, given to workers when the fleet declares it, so that the
	// agent framework's own caps come from Git (each absent when not declared): the steps, the model
	// tokens (in and out), the seconds, and the cost (a decimal in the price table's currency) one
	// task may take. Steps are always given (the looping limit). The operator enforces them from
	// outside as well.
	EnvMaxStepsPerTask  = "AGENTFLEET_MAX_STEPS_PER_TASK"
	EnvMaxTokensPerTask = "AGENTFLEET_MAX_TOKENS_PER_TASK"
	EnvMaxTaskSeconds   = "AGENTFLEET_MAX_TASK_SECONDS"
	EnvMaxTaskCost      = "AGENTFLEET_MAX_TASK_COST"
)

// ParseCount reads one of the counts of a heartbeat Lease (a decimal integer, 0 or more), and whether
// it is one: absent, malformed and negative counts are not.
func ParseCount(value string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
