package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// AgentFleet is a fleet of LLM agents: the workers of one KubeRay RayCluster, all running the same
// image, model version and prompt, plus the Ray jobs run against that cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=af,categories=agentfleet
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Workers",type=string,JSONPath=`.status.workers`,description="Ready agent workers / declared"
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.status.gpus.requested`
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model.name`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.modelVersion`,priority=1
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,priority=1
// +kubebuilder:printcolumn:name="Rollout",type=string,JSONPath=`.status.rollout.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 53",message="metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) of at most 53 characters: it names the fleet's RayCluster"
type AgentFleet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AgentFleetSpec   `json:"spec"`
	Status AgentFleetStatus `json:"status,omitempty"`
}

// AgentFleetSpec is the desired state of a fleet, as declared in Git.
//
// +kubebuilder:validation:XValidation:rule="!has(self.env) || !has(self.secretEnv) || self.env.all(e, !self.secretEnv.exists(s, s.name == e.name))",message="a variable is named in both env and secretEnv: each name may appear in one of them only"
// +kubebuilder:validation:XValidation:rule="!has(self.budgets) || (has(self.health) && has(self.health.heartbeat)) || !(has(self.budgets.maxSteps) || has(self.budgets.maxTokens) || has(self.budgets.maxDurationSeconds) || has(self.budgets.maxCost) || has(self.budgets.maxTokensPerHour))",message="budgets other than maxCostPerDay need spec.health.heartbeat: steps, tokens and task times are read from the workers' heartbeat Leases"
type AgentFleetSpec struct {
	// Replicas is the declared number of agent workers: the Ray worker pods of the worker group
	// "agents". Autoscaling is off in v1alpha1: this is the count the fleet is held at.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Suspend stops the fleet: the RayCluster is suspended (its pods deleted) and no job runs.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Image is the agents' container image, run by the head and every worker.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.matches('\\\\s')",message="image must not contain white space"
	Image string `json:"image"`

	// RayVersion is the version of Ray in Image, e.g. 2.52.0.
	// +kubebuilder:validation:Pattern=`^[0-9]+\.[0-9]+\.[0-9]+$`
	RayVersion string `json:"rayVersion"`

	// Head configures the Ray head pod, which runs no agents.
	// +optional
	Head HeadSpec `json:"head,omitempty"`

	// Worker configures each agent worker pod.
	// +optional
	Worker WorkerSpec `json:"worker,omitempty"`

	// Model is the model the agents call; its version is recorded on every pod and in status.
	Model ModelSpec `json:"model"`

	// Prompt is the system prompt, from a ConfigMap ("prompts are code"): mounted read-only into the
	// head and every worker at the path in the environment variable AGENTFLEET_PROMPT_FILE. A change
	// of its text rolls the workers.
	// +optional
	Prompt *PromptSpec `json:"prompt,omitempty"`

	// Env are plain environment variables for the agents. Values that look like provider API keys
	// are refused: secrets belong in Secrets, referenced from SecretEnv.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=128
	// +optional
	Env []EnvVar `json:"env,omitempty"`

	// SecretEnv are environment variables read from Secrets. There is no field that takes a secret's
	// value: only references.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	SecretEnv []SecretEnvVar `json:"secretEnv,omitempty"`

	// Health configures the supervision of agent workers: heartbeats and the restart budget.
	// +kubebuilder:default={}
	// +optional
	Health HealthSpec `json:"health,omitempty"`

	// Budgets bound what a task, and the fleet, may spend: handed to the agents (the
	// AGENTFLEET_MAX_* environment) and enforced by the operator from the heartbeat Leases. A budget
	// change is not a new revision: it rolls no worker.
	// +optional
	Budgets *BudgetsSpec `json:"budgets,omitempty"`

	// DependsOn are objects in the fleet's namespace that must be healthy (kstatus Current) before
	// any agent starts: a vector database StatefulSet, a model server Deployment.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(d, self.exists_one(e, e.apiVersion == d.apiVersion && e.kind == d.kind && e.name == d.name))",message="dependsOn lists the same object twice"
	// +optional
	DependsOn []DependencyRef `json:"dependsOn,omitempty"`

	// Rollout configures how workers are replaced when what they run changes.
	// +kubebuilder:default={}
	// +optional
	Rollout RolloutSpec `json:"rollout,omitempty"`

	// Jobs are Ray jobs run against the fleet's cluster, once or on a schedule.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Jobs []JobSpec `json:"jobs,omitempty"`

	// CostCenter is copied to the label agentfleet.dev/cost-center of every pod, for cost reports.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$')",message="costCenter becomes a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	// +optional
	CostCenter string `json:"costCenter,omitempty"`
}

// ComputeResources are a pod's CPU and memory, set as both request and limit for memory and as
// request for CPU.
type ComputeResources struct {
	// CPU, e.g. "2" or "500m".
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`
	// Memory, e.g. "8Gi".
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
}

// HeadSpec configures the Ray head. Default resources: 1 CPU, 4Gi.
type HeadSpec struct {
	ComputeResources `json:",inline"`

	// PodTemplate is a partial pod template (metadata and spec) merged into the generated head pod
	// template by strategic merge (containers, volumes and env by name); what it sets wins. For what
	// the fleet's fields do not cover. It is kept out of the CRD's schema (the full PodTemplateSpec
	// schema would add about 600 KiB to the CRD) and decoded strictly by the operator: an unknown
	// field makes the fleet Stalled with the field's name.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	PodTemplate *runtime.RawExtension `json:"podTemplate,omitempty"`
}

// WorkerSpec configures each agent worker. Default resources: 1 CPU, 2Gi, no GPU.
//
// +kubebuilder:validation:XValidation:rule="!has(self.gpuProduct) || (has(self.gpus) && self.gpus > 0)",message="gpuProduct requires gpus > 0: a worker without GPUs cannot ask for a GPU product"
type WorkerSpec struct {
	ComputeResources `json:",inline"`

	// GPUs per worker (nvidia.com/gpu), also given to Ray as num-gpus.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16
	// +optional
	GPUs int32 `json:"gpus,omitempty"`

	// GPUProduct pins workers to nodes whose nvidia.com/gpu.product label has this value, e.g.
	// NVIDIA-H100-80GB-HBM3.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",message="gpuProduct is matched against the nvidia.com/gpu.product node label, so it must be a label value, e.g. NVIDIA-H100-80GB-HBM3"
	// +optional
	GPUProduct string `json:"gpuProduct,omitempty"`

	// NodeSelector is added to the workers' node selector.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations are added to the workers' tolerations (GPU workers already tolerate the
	// nvidia.com/gpu taint).
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// PodTemplate is a partial pod template (metadata and spec) merged into the generated worker pod
	// template by strategic merge (containers, volumes and env by name); what it sets wins. For what
	// the fleet's fields do not cover. It is kept out of the CRD's schema (the full PodTemplateSpec
	// schema would add about 600 KiB to the CRD) and decoded strictly by the operator: an unknown
	// field makes the fleet Stalled with the field's name.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	PodTemplate *runtime.RawExtension `json:"podTemplate,omitempty"`
}

// ModelSpec names the model the agents call.
type ModelSpec struct {
	// Name of the model, e.g. claude-sonnet-4-5 or llama-3.1-70b-instruct.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Version is a tag recorded on every pod (label agentfleet.dev/model-version) and in status; a
	// change rolls the workers.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",message="model.version becomes a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	Version string `json:"version"`

	// Endpoint is the model server's URL, given to agents as AGENTFLEET_MODEL_ENDPOINT.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'http' || url(self).getScheme() == 'https')",message="model.endpoint must be an http or https URL"
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
}

// PromptSpec locates the system prompt.
type PromptSpec struct {
	// ConfigMapRef names the ConfigMap, in the fleet's namespace, and the key holding the prompt.
	ConfigMapRef ConfigMapKeyRef `json:"configMapRef"`
}

// ConfigMapKeyRef names one key of a ConfigMap in the fleet's namespace.
type ConfigMapKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// EnvVar is a plain environment variable.
//
// +kubebuilder:validation:XValidation:rule="!self.value.matches('(^|[^A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}') && !self.value.matches('(^|[^A-Z0-9])(AKIA|ASIA)[0-9A-Z]{16}([^A-Z0-9]|$)')",message="the value looks like a provider API key (sk-…, sk-ant-…, AKIA…): put it in a Secret and reference it from secretEnv"
type EnvVar struct {
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('AGENTFLEET_')",message="names starting with AGENTFLEET_ are set by the operator"
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// SecretEnvVar is an environment variable read from a Secret in the fleet's namespace.
type SecretEnvVar struct {
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('AGENTFLEET_')",message="names starting with AGENTFLEET_ are set by the operator"
	Name string `json:"name"`
	// SecretKeyRef names the Secret and key.
	SecretKeyRef SecretKeyRef `json:"secretKeyRef"`
}

// SecretKeyRef names one key of a Secret in the fleet's namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// HealthSpec configures the supervision of agent workers.
type HealthSpec struct {
	// Heartbeat turns on the heartbeat contract: each worker renews a Lease named after its pod.
	// Without it, only crashes (from pod status) are detected.
	// +optional
	Heartbeat *HeartbeatSpec `json:"heartbeat,omitempty"`

	// RestartBudget bounds replacements: past it the fleet is Degraded and replacement stops.
	// +kubebuilder:default={}
	// +optional
	RestartBudget RestartBudget `json:"restartBudget,omitempty"`
}

// HeartbeatSpec is the heartbeat contract of agent workers.
//
// +kubebuilder:validation:XValidation:rule="self.progressDeadlineSeconds > self.intervalSeconds",message="progressDeadlineSeconds must be greater than intervalSeconds: an agent needs time to renew its heartbeat"
type HeartbeatSpec struct {
	// IntervalSeconds is how often an agent renews its Lease at the least.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=10
	// +optional
	IntervalSeconds int32 `json:"intervalSeconds,omitempty"`
	// ProgressDeadlineSeconds: an agent whose Lease is not renewed, or that is working without a
	// step, for this long is stalled.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=86400
	// +kubebuilder:default=300
	// +optional
	ProgressDeadlineSeconds int32 `json:"progressDeadlineSeconds,omitempty"`
	// MaxRepeatedActions: an agent taking the same action this many times in a row is looping.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=100000
	// +kubebuilder:default=20
	// +optional
	MaxRepeatedActions int32 `json:"maxRepeatedActions,omitempty"`
	// MaxStepsPerTask: an agent taking this many steps in one task is looping.
	//
	// Deprecated: set spec.budgets.maxSteps, which takes precedence when both are set. This field
	// keeps working (and its default of 500 applies when budgets.maxSteps is not set).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +kubebuilder:default=500
	// +optional
	MaxStepsPerTask int32 `json:"maxStepsPerTask,omitempty"`
}

// BudgetsSpec bounds what agents spend, per task and per fleet. Costs are decimal strings in the
// currency of the operator's price table (its GPU and token prices).
//
// Per task (read from each worker's heartbeat Lease): a worker over maxTokens, maxDurationSeconds or
// maxCost in its current task is replaced (supervisor reason OverBudget), within the restart
// budget; over maxSteps it is replaced as Looping.
//
// Per fleet, over sliding windows (the last hour, the last 24 hours): past maxTokensPerHour or
// maxCostPerDay the fleet has the condition BudgetExceeded=True and a Warning Event; with
// onExceeded: Pause its workers are also told to start no new task (agentfleet.dev/paused=true on
// their Leases), no job run is started, and the fleet is Degraded (reason BudgetExceeded) until the
// window's total falls back under the budget or the budget is raised.
//
// +kubebuilder:validation:XValidation:rule="!has(self.onExceeded) || self.onExceeded != 'Pause' || has(self.maxTokensPerHour) || has(self.maxCostPerDay)",message="onExceeded: Pause needs a fleet budget to exceed: set maxTokensPerHour or maxCostPerDay"
type BudgetsSpec struct {
	// MaxSteps is the steps one task may take (it replaces health.heartbeat.maxStepsPerTask).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	MaxSteps *int32 `json:"maxSteps,omitempty"`
	// MaxTokens is the model tokens, in and out, one task may use.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxTokens *int64 `json:"maxTokens,omitempty"`
	// MaxDurationSeconds is how long one task may run.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=604800
	// +optional
	MaxDurationSeconds *int32 `json:"maxDurationSeconds,omitempty"`
	// MaxCost is what the model tokens of one task may cost, e.g. "0.50", at the model's token
	// prices (a task's input and output tokens are priced at its worker's mix of the two).
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	// +optional
	MaxCost string `json:"maxCost,omitempty"`

	// MaxTokensPerHour is the model tokens the whole fleet may use in any hour.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxTokensPerHour *int64 `json:"maxTokensPerHour,omitempty"`
	// MaxCostPerDay is what the fleet may cost in any 24 hours: the GPU-time of its Running workers
	// plus its model tokens, at the price table's prices.
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	// +optional
	MaxCostPerDay string `json:"maxCostPerDay,omitempty"`
	// OnExceeded is what happens past a fleet budget: Alert (the condition and an Event only; the
	// fleet stays Healthy) or Pause (no new task or job run; the fleet is Degraded).
	// +kubebuilder:validation:Enum=Alert;Pause
	// +kubebuilder:default=Alert
	// +optional
	OnExceeded BudgetAction `json:"onExceeded,omitempty"`
}

// BudgetAction is what happens when a fleet budget is exceeded.
type BudgetAction string

// Budget actions.
const (
	BudgetAlert BudgetAction = "Alert"
	BudgetPause BudgetAction = "Pause"
)

// RestartBudget bounds how many workers may be replaced in a sliding window.
type RestartBudget struct {
	// MaxRestarts is how many replacements the window allows. At most 50: the window is counted
	// from status.recentRestarts, which keeps the latest 50 (MaxRecentRestarts), so a larger budget
	// could never be found spent.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	// +kubebuilder:default=10
	// +optional
	MaxRestarts *int32 `json:"maxRestarts,omitempty"`
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=604800
	// +kubebuilder:default=3600
	// +optional
	WindowSeconds int32 `json:"windowSeconds,omitempty"`
}

// DependencyRef names an object in the fleet's namespace.
type DependencyRef struct {
	// APIVersion, e.g. apps/v1.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+((alpha|beta)[0-9]+)?$`
	APIVersion string `json:"apiVersion"`
	// Kind, e.g. StatefulSet.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Z][A-Za-z0-9]*$`
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// RolloutSpec configures how workers are replaced when what they run changes.
//
// +kubebuilder:validation:XValidation:rule="!has(self.canary) || !has(self.strategy) || self.strategy == 'Canary'",message="rollout.canary is set but rollout.strategy is not Canary"
// +kubebuilder:validation:XValidation:rule="!has(self.blueGreen) || (has(self.strategy) && self.strategy == 'BlueGreen')",message="rollout.blueGreen is set but rollout.strategy is not BlueGreen"
type RolloutSpec struct {
	// MaxUnavailable is how many workers may be down for replacement at once, as a count or a
	// percentage of replicas (rounded down, at least 1).
	// +kubebuilder:default="25%"
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="maxUnavailable must be a count of at least 1 or a percentage from 1% to 100%: with 0 no worker could ever be replaced"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// Strategy is how workers move to a new revision (a prompt, model version, image or other
	// template change): Rolling replaces them maxUnavailable at a time; Canary runs the new revision
	// on a few workers first, judges them against the stable ones by the agents' own task outcomes,
	// and promotes it or rolls it back on its own; BlueGreen starts a second RayCluster with the new
	// revision beside the running one and switches to it once it is Ready.
	//
	// A change of the head, spec.rayVersion or spec.head (the head's resources and podTemplate), needs
	// BlueGreen: KubeRay does not restart a running head, and workers of a new Ray version beside a
	// head of the old one are a half-updated cluster. Under Rolling and Canary such a change is not
	// applied at all: the RayCluster keeps running what it runs (workers still healed, replicas and
	// suspend still applied) and the fleet is Degraded, reason NeedsBlueGreen, until the strategy is
	// BlueGreen or the change is reverted. The head also carries the agents' image, prompt and model
	// settings (it runs no agents): those changes roll the workers and leave a running head as it is.
	// +kubebuilder:validation:Enum=Rolling;Canary;BlueGreen
	// +kubebuilder:default=Rolling
	// +optional
	Strategy RolloutStrategy `json:"strategy,omitempty"`

	// Canary configures the Canary strategy (its defaults when absent).
	// +optional
	Canary *CanarySpec `json:"canary,omitempty"`

	// BlueGreen configures the BlueGreen strategy (its defaults when absent).
	// +optional
	BlueGreen *BlueGreenSpec `json:"blueGreen,omitempty"`
}

// BlueGreenSpec configures a blue-green rollout: every change of what the RayCluster runs (its
// template: the head, rayVersion, the workers' prompt, model, image, env) starts a preview RayCluster
// with the new revision beside the active one, at the fleet's replicas (the fleet holds twice its
// resources meanwhile). When the preview's head and all its workers are Ready (and its analysis, if
// set, passes), the fleet switches to it: its jobs' new runs go to it, status.rayClusterName names
// it, and the old RayCluster is deleted (a run still going on the old cluster is cut). A preview not
// Ready within readyTimeoutSeconds, or that fails its analysis, is deleted and the old cluster keeps
// running: the fleet is Degraded, reason BlueGreenAborted, until the spec changes again. A newer
// change during a preview replaces the preview; a revert to the active revision deletes it. Replicas
// and suspend apply to both clusters in place. The preview's workers are healed by the supervisor
// only once the fleet switched to them.
type BlueGreenSpec struct {
	// ReadyTimeoutSeconds is how long the preview RayCluster has to be Ready (the head and every
	// worker), counted while the fleet is not suspended.
	// +kubebuilder:validation:Minimum=30
	// +kubebuilder:validation:Maximum=86400
	// +kubebuilder:default=900
	// +optional
	ReadyTimeoutSeconds int32 `json:"readyTimeoutSeconds,omitempty"`
	// Analysis, when set, judges the preview once it is Ready by its agents' task outcomes against
	// the active RayCluster's agents' (over the same time), as a canary's: minTasks,
	// maxFailureRateIncrease, checks ({{revision}} is the preview's worker hash, {{stable}} the
	// active one's), maxDurationSeconds counted from the preview's start, onTimeout. maxRestarts
	// counts the restarts of the preview's containers (its workers are not replaced before the
	// switch). A preview that fails it is deleted (BlueGreenAborted).
	// +optional
	Analysis *CanaryAnalysis `json:"analysis,omitempty"`
}

// RolloutStrategy is how workers move to a new revision.
type RolloutStrategy string

// Rollout strategies.
const (
	RolloutRolling   RolloutStrategy = "Rolling"
	RolloutCanary    RolloutStrategy = "Canary"
	RolloutBlueGreen RolloutStrategy = "BlueGreen"
)

// CanarySpec configures a canary rollout: a second worker group runs the new revision on Workers
// workers while the rest stay on the stable one (the fleet's total stays at replicas); the verdict
// comes from the agents' task outcomes as their heartbeat Leases report them (a canary needs
// spec.health.heartbeat and agents that report outcomes).
type CanarySpec struct {
	// Workers on the new revision during the analysis, a count or a percentage of replicas (rounded
	// up), at least 1 and at most replicas − 1. A fleet of fewer than 2 workers cannot run a canary:
	// it rolls as under Rolling.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9]|[1-9][0-9])%$')",message="canary.workers must be a count of at least 1 or a percentage from 1% to 99%"
	// +optional
	Workers *intstr.IntOrString `json:"workers,omitempty"`
	// Analysis is how the canary is judged.
	// +kubebuilder:default={}
	// +optional
	Analysis CanaryAnalysis `json:"analysis,omitempty"`
	// AutoPromote: a canary that passes is promoted at once (true, the default), or waits for a
	// person: `agentfleet promote FLEET`, or the annotation agentfleet.dev/promote set to the canary's
	// revision and start, REVISION@YYYYMMDDTHHMMSS (what `agentfleet promote` writes).
	// +kubebuilder:default=true
	// +optional
	AutoPromote *bool `json:"autoPromote,omitempty"`
}

// CanaryAnalysis is how a canary is judged.
type CanaryAnalysis struct {
	// MinTasks is the tasks the canary workers must finish before a verdict on their outcomes.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +kubebuilder:default=20
	// +optional
	MinTasks int32 `json:"minTasks,omitempty"`
	// MaxDurationSeconds: a canary without a verdict by then is decided by OnTimeout.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=604800
	// +kubebuilder:default=3600
	// +optional
	MaxDurationSeconds int32 `json:"maxDurationSeconds,omitempty"`
	// OnTimeout is Abort (the default) or Promote.
	// +kubebuilder:validation:Enum=Abort;Promote
	// +kubebuilder:default=Abort
	// +optional
	OnTimeout CanaryTimeoutAction `json:"onTimeout,omitempty"`
	// MaxFailureRateIncrease is how much the canary's task failure rate may exceed the stable
	// workers' (over the same time), e.g. "0.05" for five points.
	// +kubebuilder:validation:Pattern=`^(0(\.[0-9]+)?|1(\.0+)?)$`
	// +kubebuilder:default="0.05"
	// +optional
	MaxFailureRateIncrease string `json:"maxFailureRateIncrease,omitempty"`
	// MaxRestarts is how many canary workers the supervisor may replace (crashed, stalled, looping,
	// over budget) before the canary is aborted.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	// +kubebuilder:default=0
	// +optional
	MaxRestarts *int32 `json:"maxRestarts,omitempty"`
	// Checks are Prometheus queries the canary must pass as well (the operator's --prometheus-url),
	// in the style of Argo Rollouts' AnalysisTemplate: run once the canary finished minTasks within
	// maxFailureRateIncrease. A check that cannot run (no Prometheus, no data) holds the verdict
	// until it can, or until maxDurationSeconds.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Checks []CanaryCheck `json:"checks,omitempty"`
}

// CanaryCheck is a Prometheus query a canary must pass.
type CanaryCheck struct {
	// Name names the check in the verdict.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Query is an instant PromQL query whose result is one number (a scalar, or a vector of one
	// sample); {{namespace}}, {{fleet}}, {{revision}} (the canary's worker hash, the pods'
	// agentfleet.dev/worker-hash) and {{stable}} (the stable one's) are replaced.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Query string `json:"query"`
	// SuccessCondition compares the result with a number: `result < 0.1` (<, <=, >, >=, ==, !=).
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^\s*result\s*(<=|>=|==|!=|<|>)\s*-?[0-9]+(\.[0-9]+)?\s*$`
	SuccessCondition string `json:"successCondition"`
}

// CanaryTimeoutAction is what a canary without a verdict at its deadline gets.
type CanaryTimeoutAction string

// Canary timeout actions.
const (
	CanaryAbort   CanaryTimeoutAction = "Abort"
	CanaryPromote CanaryTimeoutAction = "Promote"
)

// JobSpec is a Ray job run against the fleet's RayCluster.
type JobSpec struct {
	// Name is unique in the fleet and part of the RayJob's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=30
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="job name must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter"
	Name string `json:"name"`
	// Entrypoint is the command submitted to Ray, e.g. "python eval.py".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	Entrypoint string `json:"entrypoint"`
	// RuntimeEnvYAML is Ray's runtime environment, as YAML.
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	RuntimeEnvYAML string `json:"runtimeEnvYAML,omitempty"`
	// ActiveDeadlineSeconds bounds a run: past it the RayJob fails.
	// +kubebuilder:validation:Minimum=1
	// +optional
	ActiveDeadlineSeconds *int32 `json:"activeDeadlineSeconds,omitempty"`
	// Schedule, in cron syntax (five fields, or @hourly, @daily, …), runs the job repeatedly; without
	// it the job runs once per change of its spec.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$') || self.matches('^(TZ=[A-Za-z_/+-]+ )?[*?0-9A-Za-z,/-]+( [*?0-9A-Za-z,/-]+){4}$')",message="schedule must be cron syntax: five fields (minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\") or one of @yearly, @monthly, @weekly, @daily, @hourly"
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// Suspend stops new runs of the job.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// AgentFleetStatus is the observed state of a fleet, computed from what the operator observes.
type AgentFleetStatus struct {
	// ObservedGeneration is the generation last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Progressing, Degraded, and kstatus' Reconciling and Stalled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Phase summarises the conditions for people: Pending, Progressing, Running, Degraded, Suspended.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Replicas is the number of agent worker pods observed.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of agent worker pods Ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// UpdatedReplicas is the number of agent worker pods on the current template.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// Workers is "ready/declared", for kubectl.
	// +optional
	Workers string `json:"workers,omitempty"`

	// RayClusterName is the fleet's RayCluster.
	// +optional
	RayClusterName string `json:"rayClusterName,omitempty"`
	// DashboardURL is the Ray dashboard, inside the cluster.
	// +optional
	DashboardURL string `json:"dashboardURL,omitempty"`
	// PromptHash is the SHA-256 of the prompt the workers run.
	// +optional
	PromptHash string `json:"promptHash,omitempty"`
	// ModelVersion is the model version the workers run.
	// +optional
	ModelVersion string `json:"modelVersion,omitempty"`
	// Revision is the hash of the worker template the fleet is rolled to.
	// +optional
	Revision string `json:"revision,omitempty"`

	// Restarts counts worker replacements by reason.
	// +optional
	Restarts RestartCounts `json:"restarts,omitempty"`
	// RecentRestarts are the latest replacements, newest last (at most 50): the restart budget's
	// window is counted from them, so it survives an operator restart.
	// +kubebuilder:validation:MaxItems=50
	// +optional
	RecentRestarts []RestartRecord `json:"recentRestarts,omitempty"`

	// Jobs is the state of each job's latest RayJob.
	// +listType=map
	// +listMapKey=name
	// +optional
	Jobs []JobStatus `json:"jobs,omitempty"`

	// GPUs the fleet requests and those its Running workers hold.
	// +optional
	GPUs GPUStatus `json:"gpus,omitempty"`

	// GPUFaults are the agent workers on failing or degraded GPUs, as last observed (at most 32).
	// Failing ones are replaced within the restart budget; they are listed until they are gone.
	// +listType=map
	// +listMapKey=worker
	// +kubebuilder:validation:MaxItems=32
	// +optional
	GPUFaults []GPUFault `json:"gpuFaults,omitempty"`

	// Rollout is the state of the latest change of what the fleet runs under the Canary or BlueGreen
	// strategy (absent under Rolling).
	// +optional
	Rollout *RolloutStatus `json:"rollout,omitempty"`

	// Usage is what the fleet's agents reported and what the fleet cost, over the last hour and
	// the last 24 hours, refreshed at most once a minute; absent while nothing was reported.
	// +optional
	Usage *UsageStatus `json:"usage,omitempty"`
}

// RolloutStatus is a canary or blue-green rollout as observed and decided.
type RolloutStatus struct {
	// Strategy is the strategy the rollout runs under.
	// +optional
	Strategy RolloutStrategy `json:"strategy,omitempty"`
	// Phase: Canary (the new revision runs on the canary workers, being judged), WaitingForPromotion
	// (it passed; autoPromote is false), Promoting (the other workers roll to it), Promoted, Aborted
	// (the canary failed: every worker runs the stable revision until the spec changes), Stable (no
	// change in progress: the workers run the stable revision). Under BlueGreen: Preview (the new
	// revision's RayCluster starts beside the active one), Promoted (the fleet switched to it),
	// Aborted (it was not Ready in time and was deleted), Stable.
	Phase RolloutPhase `json:"phase"`
	// Stable is the revision the stable workers run (under BlueGreen: the active RayCluster's);
	// Canary the new one (under BlueGreen: the preview RayCluster's; absent in Stable).
	Stable RevisionStatus `json:"stable"`
	// +optional
	Canary *RevisionStatus `json:"canary,omitempty"`
	// StartedAt is when the canary began; FinishedAt when it was promoted or aborted.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// PausedAt is when the canary's clock stopped: the fleet was suspended, or paused by its budget
	// (its agents take no task). maxDurationSeconds counts only the time it ran.
	// +optional
	PausedAt *metav1.Time `json:"pausedAt,omitempty"`
	// Message is the verdict's evidence: the failure rates, the restarts, the deadline.
	// +optional
	Message string `json:"message,omitempty"`
}

// RolloutPhase is the phase of a canary rollout.
// +kubebuilder:validation:Enum=Canary;WaitingForPromotion;Promoting;Promoted;Aborted;Stable;Preview
type RolloutPhase string

// Rollout phases.
const (
	RolloutPhaseCanary              RolloutPhase = "Canary"
	RolloutPhaseWaitingForPromotion RolloutPhase = "WaitingForPromotion"
	RolloutPhasePromoting           RolloutPhase = "Promoting"
	RolloutPhasePromoted            RolloutPhase = "Promoted"
	RolloutPhaseAborted             RolloutPhase = "Aborted"
	RolloutPhaseStable              RolloutPhase = "Stable"
	RolloutPhasePreview             RolloutPhase = "Preview"
)

// RevisionStatus is one revision of the workers and how its workers did since the canary began.
type RevisionStatus struct {
	// Revision is the worker template's hash (the pods' agentfleet.dev/worker-hash).
	// +optional
	Revision string `json:"revision,omitempty"`
	// +optional
	PromptHash string `json:"promptHash,omitempty"`
	// +optional
	ModelVersion string `json:"modelVersion,omitempty"`
	// +optional
	Image string `json:"image,omitempty"`
	// TemplateHash, RayVersion and RayCluster, under BlueGreen: the RayCluster's
	// agentfleet.dev/template-hash (what a blue-green rollout tells revisions by: a change of the
	// head changes it, not always the workers' revision), its Ray version, and the RayCluster that
	// runs the revision.
	// +optional
	TemplateHash string `json:"templateHash,omitempty"`
	// +optional
	RayVersion string `json:"rayVersion,omitempty"`
	// +optional
	RayCluster string `json:"rayCluster,omitempty"`
	// +optional
	TasksSucceeded int64 `json:"tasksSucceeded,omitempty"`
	// +optional
	TasksFailed int64 `json:"tasksFailed,omitempty"`
	// Restarts are the supervisor's replacements of this revision's workers since the canary began.
	// +optional
	Restarts int32 `json:"restarts,omitempty"`
}

// UsageStatus is the fleet's ledger over two sliding windows.
type UsageStatus struct {
	// LastHour and LastDay (the last 24 hours).
	LastHour UsageWindow `json:"lastHour"`
	LastDay  UsageWindow `json:"lastDay"`
	// Currency of the costs.
	// +optional
	Currency string `json:"currency,omitempty"`
	// Unpriced names what has no price in the price table (a model's tokens, a GPU product): its
	// use is counted, and left out of the costs, never priced at 0.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Unpriced []string `json:"unpriced,omitempty"`
	// UpdatedAt is when these figures were computed.
	UpdatedAt metav1.Time `json:"updatedAt"`
	// Hours are the last 24 hours' figures by hour, oldest first: a new leader of the operator
	// starts its budget windows from them, so that a restart neither resets a budget nor holds
	// one longer than an hour.
	// +kubebuilder:validation:MaxItems=25
	// +optional
	Hours []UsageHour `json:"hours,omitempty"`
}

// UsageHour is the fleet's use in the hour from Start.
type UsageHour struct {
	Start       metav1.Time `json:"start"`
	UsageWindow `json:",inline"`
}

// UsageWindow is the fleet's use over one window.
type UsageWindow struct {
	// +optional
	TokensIn int64 `json:"tokensIn,omitempty"`
	// +optional
	TokensOut int64 `json:"tokensOut,omitempty"`
	// +optional
	TasksSucceeded int64 `json:"tasksSucceeded,omitempty"`
	// +optional
	TasksFailed int64 `json:"tasksFailed,omitempty"`
	// GPUCost and TokenCost are decimal strings in the status' currency.
	// +optional
	GPUCost string `json:"gpuCost,omitempty"`
	// +optional
	TokenCost string `json:"tokenCost,omitempty"`
	// CostPerSucceededTask is (GPUCost + TokenCost) / TasksSucceeded; absent without a succeeded
	// task, and while something the fleet used has no price (see unpriced): never understated.
	// +optional
	CostPerSucceededTask string `json:"costPerSucceededTask,omitempty"`
}

// Phase summarises a fleet's conditions.
// +kubebuilder:validation:Enum=Pending;Progressing;Running;Degraded;Suspended
type Phase string

// Phases.
const (
	PhasePending     Phase = "Pending"
	PhaseProgressing Phase = "Progressing"
	PhaseRunning     Phase = "Running"
	PhaseDegraded    Phase = "Degraded"
	PhaseSuspended   Phase = "Suspended"
)

// RestartCounts counts worker replacements by reason.
type RestartCounts struct {
	// +optional
	Crashed int32 `json:"crashed,omitempty"`
	// +optional
	Stalled int32 `json:"stalled,omitempty"`
	// +optional
	Looping int32 `json:"looping,omitempty"`
	// +optional
	GPUUnhealthy int32 `json:"gpuUnhealthy,omitempty"`
	// +optional
	OverBudget int32 `json:"overBudget,omitempty"`
}

// RestartRecord is one worker replacement.
type RestartRecord struct {
	Time metav1.Time `json:"time"`
	// Worker is the replaced pod.
	Worker string `json:"worker"`
	// Reason is Crashed, Stalled, Looping, GPUUnhealthy or OverBudget.
	Reason string `json:"reason"`
	// Evidence is what was seen: an exit code, seconds since the last step, repeats.
	// +optional
	Evidence string `json:"evidence,omitempty"`
	// Revision is the replaced worker's revision (its agentfleet.dev/worker-hash): a canary's
	// restarts are counted from it.
	// +optional
	Revision string `json:"revision,omitempty"`
}

// JobStatus is the state of a job's latest RayJob.
type JobStatus struct {
	Name string `json:"name"`
	// RayJobName is the latest RayJob of this job.
	// +optional
	RayJobName string `json:"rayJobName,omitempty"`
	// JobStatus is Ray's status of the job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED).
	// +optional
	JobStatus string `json:"jobStatus,omitempty"`
	// DeploymentStatus is KubeRay's status of the RayJob.
	// +optional
	DeploymentStatus string `json:"deploymentStatus,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// LastScheduleTime is when the latest scheduled run was due.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
}

// GPUStatus is the fleet's GPUs: those its declared workers request, and those its worker pods
// actually hold.
type GPUStatus struct {
	// Requested is the number of GPUs the declared workers request in all.
	// +optional
	Requested int32 `json:"requested,omitempty"`
	// Allocated is the number of GPUs held by the fleet's agent worker pods that are Running (as
	// observed, not as requested): what the fleet is paying for now.
	// +optional
	Allocated int32 `json:"allocated,omitempty"`
	// +optional
	Product string `json:"product,omitempty"`
}

// GPUFault is an agent worker on a failing or degraded GPU.
type GPUFault struct {
	// Worker is the worker's pod.
	Worker string `json:"worker"`
	// Node is the node it runs on.
	// +optional
	Node string `json:"node,omitempty"`
	// Reason is the reason of the pod condition agentfleet.dev/GPUHealthy that the GPU health agent
	// set on the worker (GPUUnhealthy when False, GPUDegraded), or NodeGPUFault for a GPU fault of
	// its node that no pod condition attributes (a fault condition, or the unhealthy label, of a
	// node without the agent).
	Reason string `json:"reason"`
	// Message is the evidence: the pod condition's message (the GPU's UUID and the XID codes), or
	// the node's conditions or label.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
}

// AgentFleetList is a list of AgentFleets.
//
// +kubebuilder:object:root=true
type AgentFleetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentFleet `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AgentFleet{}, &AgentFleetList{})
}
