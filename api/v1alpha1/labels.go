package v1alpha1

import heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"

// Labels and annotations AgentFleet puts on what it creates. They are a contract: cost reports,
// dashboards, the supervisor and people's selectors read them.
const (
	// LabelFleet names the fleet on its RayCluster, RayJobs, pods and heartbeat Leases, and as a Ray
	// node label, so that the Ray dashboard shows which fleet a node belongs to. Workers label their
	// Leases with it too, so it is defined by the heartbeat contract.
	LabelFleet = heartbeatapi.LabelFleet
	// LabelRole is "head" or "agent" on pods and Ray nodes.
	LabelRole = "agentfleet.dev/role"
	// LabelModelVersion is spec.model.version, on every pod.
	LabelModelVersion = "agentfleet.dev/model-version"
	// LabelPromptHash is the first 16 hex digits of the prompt's SHA-256 (a label value holds 63
	// characters; the full hash is in AnnotationPromptHash).
	LabelPromptHash = "agentfleet.dev/prompt-hash"
	// LabelWorkerHash is the hash of the worker pod template: pods whose value differs from the
	// RayCluster's current one run an outdated template and are rolled.
	LabelWorkerHash = "agentfleet.dev/worker-hash"
	// LabelCostCenter is spec.costCenter, for cost reports.
	LabelCostCenter = "agentfleet.dev/cost-center"
	// LabelJob names the fleet's job on a RayJob.
	LabelJob = "agentfleet.dev/job"

	// AnnotationPromptHash is the full SHA-256 of the prompt text, on pod templates: a prompt change
	// changes the template.
	AnnotationPromptHash = "agentfleet.dev/prompt-hash"
	// AnnotationTemplateHash is the hash of the RayCluster spec AgentFleet wrote, leaving out what
	// KubeRay and the rollout change (replicas, workersToDelete, suspend); a difference between it
	// and the hash of the observed spec is a hand edit to revert.
	AnnotationTemplateHash = "agentfleet.dev/template-hash"
	// AnnotationJobSpecHash is the hash of the job spec a RayJob was made from.
	AnnotationJobSpecHash = "agentfleet.dev/job-spec-hash"
	// AnnotationScheduledTime is when a scheduled RayJob run was due (RFC 3339).
	AnnotationScheduledTime = "agentfleet.dev/scheduled-time"

	// RoleHead and RoleAgent are the values of LabelRole.
	RoleHead  = "head"
	RoleAgent = "agent"

	// WorkerGroup is the name of the Ray worker group that runs the agents; CanaryGroup the one that
	// runs a canary's workers on the new revision (rollout.strategy: Canary).
	WorkerGroup = "agents"
	CanaryGroup = "agents-canary"

	// AnnotationHeadHash is the hash of what the head runs that a worker roll cannot carry
	// (rayVersion, spec.head), on the RayCluster: a change of it needs the BlueGreen strategy.
	AnnotationHeadHash = "agentfleet.dev/head-hash"
	// AnnotationPreview on a RayCluster marks the preview of a blue-green rollout, beside the fleet's
	// active RayCluster; the fleet switches to it when it is Ready.
	AnnotationPreview = "agentfleet.dev/preview"

	// AnnotationPromote on a fleet, set to its canary's revision and start (REVISION@YYYYMMDDTHHMMSS,
	// from status.rollout.canary.revision and status.rollout.startedAt), promotes a canary that passed
	// and waits for a person (autoPromote: false); `agentfleet promote` sets it.
	AnnotationPromote = "agentfleet.dev/promote"

	// LabelGPUAllowed on a Namespace: "false" forbids fleets there to ask for GPUs (enforced at
	// admission by config/policy and by the operator, reason GPUNotAllowed).
	LabelGPUAllowed = "agentfleet.dev/gpu-allowed"
	// AnnotationMaxGPUs on a Namespace caps the GPUs of each fleet there (replicas x worker GPUs +
	// head GPUs).
	AnnotationMaxGPUs = "agentfleet.dev/max-gpus"
)
