package v1alpha1

import (
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

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

// CanaryID names one canary: its revision and when it began (REVISION@YYYYMMDDTHHMMSS), as the
// annotation agentfleet.dev/promote must name it: a promotion of one canary never promotes another.
func (s *RolloutStatus) CanaryID() string {
	if s == nil || s.Canary == nil {
		return ""
	}
	id := s.Canary.Revision
	if s.StartedAt != nil {
		id += "@" + s.StartedAt.UTC().Format("20060102T150405")
	}
	return id
}

// Canary defaults (the CRD defaults them too).
const (
	DefaultCanaryMinTasks               = 20
	DefaultCanaryMaxDurationSeconds     = 3600
	DefaultCanaryMaxFailureRateIncrease = "0.05"
)

// CanarySettings is spec.rollout.canary with the defaults of what is not set.
func (f *AgentFleet) CanarySettings() CanarySpec {
	var c CanarySpec
	if f.Spec.Rollout.Canary != nil {
		c = *f.Spec.Rollout.Canary.DeepCopy()
	}
	if c.Workers == nil {
		one := intstr.FromInt32(1)
		c.Workers = &one
	}
	if c.AutoPromote == nil {
		c.AutoPromote = ptr.To(true)
	}
	c.Analysis = c.Analysis.WithDefaults()
	return c
}

// WithDefaults is an analysis with the defaults of what is not set.
func (a CanaryAnalysis) WithDefaults() CanaryAnalysis {
	if a.MinTasks == 0 {
		a.MinTasks = DefaultCanaryMinTasks
	}
	if a.MaxDurationSeconds == 0 {
		a.MaxDurationSeconds = DefaultCanaryMaxDurationSeconds
	}
	if a.OnTimeout == "" {
		a.OnTimeout = CanaryAbort
	}
	if a.MaxFailureRateIncrease == "" {
		a.MaxFailureRateIncrease = DefaultCanaryMaxFailureRateIncrease
	}
	if a.MaxRestarts == nil {
		a.MaxRestarts = ptr.To[int32](0)
	}
	return a
}

// BlueGreenAnalysis is spec.rollout.blueGreen.analysis with its defaults; nil when none is set (the
// switch then waits for readiness alone).
func (f *AgentFleet) BlueGreenAnalysis() *CanaryAnalysis {
	bg := f.Spec.Rollout.BlueGreen
	if bg == nil || bg.Analysis == nil {
		return nil
	}
	a := bg.Analysis.WithDefaults()
	return &a
}

// DefaultBlueGreenReadyTimeoutSeconds is blueGreen.readyTimeoutSeconds' default (the CRD defaults it
// too).
const DefaultBlueGreenReadyTimeoutSeconds = 900

// BlueGreenReadyTimeout is how long a blue-green preview has to be Ready.
func (f *AgentFleet) BlueGreenReadyTimeout() time.Duration {
	s := int32(DefaultBlueGreenReadyTimeoutSeconds)
	if bg := f.Spec.Rollout.BlueGreen; bg != nil && bg.ReadyTimeoutSeconds > 0 {
		s = bg.ReadyTimeoutSeconds
	}
	return time.Duration(s) * time.Second
}
