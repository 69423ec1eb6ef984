// Package builder has fluent builders of AgentFleets for tests:
//
//	builder.MakeAgentFleet("research", "agents").Replicas(4).GPUs(2, "NVIDIA-H100-80GB-HBM3").Obj()
package builder

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// FleetWrapper wraps an AgentFleet under construction.
type FleetWrapper struct{ f v1alpha1.AgentFleet }

// MakeAgentFleet starts a valid fleet of one CPU worker: image agent:1.0, Ray 2.52.0, model
// claude-sonnet-4-5 at version 2025-09-29.
func MakeAgentFleet(name, namespace string) *FleetWrapper {
	return &FleetWrapper{f: v1alpha1.AgentFleet{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: types.UID("uid-" + name), Generation: 1},
		Spec: v1alpha1.AgentFleetSpec{
			Replicas:   ptr(int32(1)),
			Image:      "registry.example.com/agents/researcher:1.0",
			RayVersion: "2.52.0",
			Model:      v1alpha1.ModelSpec{Name: "claude-sonnet-4-5", Version: "2025-09-29"},
		},
	}}
}

// Obj returns a copy of the fleet.
func (w *FleetWrapper) Obj() *v1alpha1.AgentFleet { return w.f.DeepCopy() }

// Replicas sets spec.replicas.
func (w *FleetWrapper) Replicas(n int32) *FleetWrapper { w.f.Spec.Replicas = &n; return w }

// Image sets spec.image.
func (w *FleetWrapper) Image(image string) *FleetWrapper { w.f.Spec.Image = image; return w }

// RayVersion sets spec.rayVersion.
func (w *FleetWrapper) RayVersion(v string) *FleetWrapper { w.f.Spec.RayVersion = v; return w }

// Suspend sets spec.suspend.
func (w *FleetWrapper) Suspend(s bool) *FleetWrapper { w.f.Spec.Suspend = s; return w }

// GPUs sets the GPUs per worker and, when not empty, the GPU product.
func (w *FleetWrapper) GPUs(n int32, product string) *FleetWrapper {
	w.f.Spec.Worker.GPUs, w.f.Spec.Worker.GPUProduct = n, product
	return w
}

// WorkerResources sets the worker's CPU and memory.
func (w *FleetWrapper) WorkerResources(cpu, memory string) *FleetWrapper {
	w.f.Spec.Worker.CPU, w.f.Spec.Worker.Memory = quantity(cpu), quantity(memory)
	return w
}

// Model sets the model name and version.
func (w *FleetWrapper) Model(name, version string) *FleetWrapper {
	w.f.Spec.Model.Name, w.f.Spec.Model.Version = name, version
	return w
}

// ModelEndpoint sets the model endpoint.
func (w *FleetWrapper) ModelEndpoint(url string) *FleetWrapper {
	w.f.Spec.Model.Endpoint = url
	return w
}

// Prompt sets the prompt ConfigMap and key.
func (w *FleetWrapper) Prompt(configMap, key string) *FleetWrapper {
	w.f.Spec.Prompt = &v1alpha1.PromptSpec{ConfigMapRef: v1alpha1.ConfigMapKeyRef{Name: configMap, Key: key}}
	return w
}

// Env adds a plain environment variable.
func (w *FleetWrapper) Env(name, value string) *FleetWrapper {
	w.f.Spec.Env = append(w.f.Spec.Env, v1alpha1.EnvVar{Name: name, Value: value})
	return w
}

// SecretEnv adds an environment variable read from a Secret.
func (w *FleetWrapper) SecretEnv(name, secret, key string) *FleetWrapper {
	w.f.Spec.SecretEnv = append(w.f.Spec.SecretEnv, v1alpha1.SecretEnvVar{Name: name, SecretKeyRef: v1alpha1.SecretKeyRef{Name: secret, Key: key}})
	return w
}

// DependsOn adds a dependency.
func (w *FleetWrapper) DependsOn(apiVersion, kind, name string) *FleetWrapper {
	w.f.Spec.DependsOn = append(w.f.Spec.DependsOn, v1alpha1.DependencyRef{APIVersion: apiVersion, Kind: kind, Name: name})
	return w
}

// Job adds a job.
func (w *FleetWrapper) Job(j v1alpha1.JobSpec) *FleetWrapper {
	w.f.Spec.Jobs = append(w.f.Spec.Jobs, j)
	return w
}

// MaxUnavailable sets rollout.maxUnavailable.
func (w *FleetWrapper) MaxUnavailable(v intstr.IntOrString) *FleetWrapper {
	w.f.Spec.Rollout.MaxUnavailable = &v
	return w
}

// Heartbeat sets the heartbeat contract, its steps limit in the deprecated field, as fleets written
// before spec.budgets.maxSteps do: they keep working.
func (w *FleetWrapper) Heartbeat(interval, deadline, maxRepeats, maxSteps int32) *FleetWrapper {
	w.f.Spec.Health.Heartbeat = &v1alpha1.HeartbeatSpec{IntervalSeconds: interval, ProgressDeadlineSeconds: deadline, MaxRepeatedActions: maxRepeats,
		MaxStepsPerTask: maxSteps} //nolint:staticcheck // the deprecated field on purpose (see above)
	return w
}

// CostCenter sets spec.costCenter.
func (w *FleetWrapper) CostCenter(c string) *FleetWrapper { w.f.Spec.CostCenter = c; return w }

// Mutate applies f to the fleet, for what has no method.
func (w *FleetWrapper) Mutate(f func(*v1alpha1.AgentFleet)) *FleetWrapper { f(&w.f); return w }

func quantity(s string) *resource.Quantity {
	if s == "" {
		return nil
	}
	q := resource.MustParse(s)
	return &q
}

func ptr[T any](v T) *T { return &v }
