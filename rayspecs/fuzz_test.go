package rayspecs_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/buildcheck"
	"github.com/agentfleet/agentfleet/test/crdschema"
)

// FuzzValidFleetsBuild: any fleet the API server would accept (the CRD's schema and CEL rules, run
// offline by crdschema) builds, without panicking, into a RayCluster and RayJobs that pass KubeRay's
// own validation (buildcheck.Fleet). The two fields the schema cannot check, podTemplate
// (schemaless) and runtimeEnvYAML (YAML in a string), may fail to build, but only with an error
// naming them. Its seeds are the fleets of config/samples and a few at the API's limits.
//
//	go test ./rayspecs -run '^$' -fuzz FuzzValidFleetsBuild -fuzztime 60s -fuzzminimizetime 100x -parallel 1
func FuzzValidFleetsBuild(f *testing.F) {
	v := loadCRD(f)
	f.Add("coders", int64(8), int64(1), "NVIDIA-H100-80GB-HBM3", "registry.example.com/agents/coder:2.0.1", "2.52.0",
		"2025-07-31-fp8", "LOG_LEVEL", "info", "nightly", "0 3 * * *", "pip: [evals]", "25%", "platform", `{"spec":{"priorityClassName":"agents"}}`, true)
	f.Add("a", int64(0), int64(0), "", "agent:1", "2.9.0", "v1", "X", "", "j", "", "", "1", "", "", false)
	addSampleSeeds(f, v)
	f.Add("research", int64(10000), int64(16), "NVIDIA-A100-SXM4-80GB", "a", "10.0.0", "x", "A_B", "sk-short", "eval", "@hourly", "{}", "100%", "", `{"metadata":{"labels":{"x":"y"}}}`, true)
	f.Fuzz(func(t *testing.T, name string, replicas, gpus int64, product, image, rayVersion, modelVersion, envName, envValue,
		jobName, schedule, runtimeEnv, maxUnavailable, costCenter, podTemplate string, withPrompt bool) {
		spec := map[string]any{
			"replicas": replicas, "image": image, "rayVersion": rayVersion,
			"model":  map[string]any{"name": "m", "version": modelVersion},
			"worker": map[string]any{"gpus": gpus},
			"env":    []any{map[string]any{"name": envName, "value": envValue}},
		}
		if product != "" {
			spec["worker"].(map[string]any)["gpuProduct"] = product
		}
		if jobName != "" {
			spec["jobs"] = []any{map[string]any{"name": jobName, "entrypoint": "python run.py", "schedule": schedule, "runtimeEnvYAML": runtimeEnv}}
		}
		if maxUnavailable != "" {
			spec["rollout"] = map[string]any{"maxUnavailable": intOrString(maxUnavailable)}
		}
		if costCenter != "" {
			spec["costCenter"] = costCenter
		}
		if podTemplate != "" {
			var tmpl map[string]any
			if json.Unmarshal([]byte(podTemplate), &tmpl) != nil {
				return
			}
			spec["worker"].(map[string]any)["podTemplate"] = tmpl
		}
		if withPrompt {
			spec["prompt"] = map[string]any{"configMapRef": map[string]any{"name": "p", "key": "system.md"}}
		}
		obj := map[string]any{
			"apiVersion": "agentfleet.dev/v1alpha1", "kind": "AgentFleet",
			"metadata": map[string]any{"name": name, "namespace": "agents", "uid": "u"},
			"spec":     spec,
		}
		if errs := v.DefaultAndValidate(obj); len(errs) > 0 {
			return // the API server would refuse it
		}
		fleet := &v1alpha1.AgentFleet{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, fleet); err != nil {
			t.Fatalf("the schema accepts what the Go type cannot hold: %v\n%v", err, obj)
		}

		if err := buildcheck.Fleet(fleet, rayspecs.Inputs{Prompt: &name}); err != nil {
			t.Fatalf("%v\n%v", err, obj)
		}
	})
}

// intOrString reads "3" as the integer 3 and anything else as a string, as YAML would.
func intOrString(s string) any {
	var n int64
	if err := json.Unmarshal([]byte(s), &n); err == nil {
		return n
	}
	return s
}

// addSampleSeeds adds each fleet of config/samples/*.yaml as a seed, in the fuzz function's terms:
// its first env variable and first job, and its worker's podTemplate as JSON.
func addSampleSeeds(f *testing.F, v *crdschema.Validator) {
	paths, err := filepath.Glob("../config/samples/*.yaml")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no samples: %v", err)
	}
	for _, path := range paths {
		for _, fl := range readSample(f, v, path).fleets {
			s := fl.Spec
			envName, envValue := "X", ""
			if len(s.Env) > 0 {
				envName, envValue = s.Env[0].Name, s.Env[0].Value
			}
			var jobName, schedule, runtimeEnv string
			if len(s.Jobs) > 0 {
				jobName, schedule, runtimeEnv = s.Jobs[0].Name, s.Jobs[0].Schedule, s.Jobs[0].RuntimeEnvYAML
			}
			maxUnavailable := ""
			if s.Rollout.MaxUnavailable != nil {
				maxUnavailable = s.Rollout.MaxUnavailable.String()
			}
			podTemplate := ""
			if s.Worker.PodTemplate != nil {
				podTemplate = string(s.Worker.PodTemplate.Raw)
			}
			f.Add(fl.Name, int64(*s.Replicas), int64(s.Worker.GPUs), s.Worker.GPUProduct, s.Image, s.RayVersion, s.Model.Version,
				envName, envValue, jobName, schedule, runtimeEnv, maxUnavailable, s.CostCenter, podTemplate, s.Prompt != nil)
		}
	}
}
