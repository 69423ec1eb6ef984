// Package argocd tests the ArgoCD health checks in config/argocd in ArgoCD's own Lua engine
// (argo-cd v2.14's util/lua), on fixtures laid out as argo-cd's resource_customizations are:
// <group>/<Kind>/health.lua, health_test.yaml and testdata/.
package argocd

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appv1 "github.com/argoproj/argo-cd/v2/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v2/util/lua"
	"github.com/argoproj/gitops-engine/pkg/health"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite config/argocd/argocd-cm.yaml from the health.lua files")

const root = "../../config/argocd"

type healthTest struct {
	Tests []struct {
		HealthStatus health.HealthStatus `json:"healthStatus"`
		InputPath    string              `json:"inputPath"`
	} `json:"tests"`
}

// scripts finds config/argocd/<group>/<Kind>/health.lua, by ArgoCD's resource key "<group>/<Kind>".
func scripts(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "*", "*", "health.lua"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no health.lua under %s: %v", root, err)
	}
	out := map[string]string{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		kindDir := filepath.Dir(p)
		out[filepath.Base(filepath.Dir(kindDir))+"/"+filepath.Base(kindDir)] = string(data)
	}
	return out
}

func TestHealthChecksInArgoCDsLuaEngine(t *testing.T) {
	all := scripts(t)
	for _, want := range []string{"agentfleet.dev/AgentFleet", "ray.io/RayCluster", "ray.io/RayJob"} {
		if _, ok := all[want]; !ok {
			t.Errorf("no health check for %s", want)
		}
	}
	for key, script := range all {
		t.Run(key, func(t *testing.T) {
			// Installed the way argocd-cm installs it: as a resource override, which ArgoCD prefers to
			// any built-in script.
			vm := lua.VM{ResourceOverrides: map[string]appv1.ResourceOverride{key: {HealthLua: script}}}
			data, err := os.ReadFile(filepath.Join(root, key, "health_test.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var cases healthTest
			if err := yaml.UnmarshalStrict(data, &cases); err != nil {
				t.Fatal(err)
			}
			if len(cases.Tests) < 5 {
				t.Errorf("%d cases, want at least 5", len(cases.Tests))
			}
			for _, tc := range cases.Tests {
				t.Run(strings.TrimSuffix(filepath.Base(tc.InputPath), ".yaml"), func(t *testing.T) {
					input, err := os.ReadFile(filepath.Join(root, key, tc.InputPath))
					if err != nil {
						t.Fatal(err)
					}
					obj := &unstructured.Unstructured{}
					if err := yaml.Unmarshal(input, &obj.Object); err != nil {
						t.Fatal(err)
					}
					got, _, err := vm.GetHealthScript(obj)
					if err != nil || got != script {
						t.Fatalf("ArgoCD does not pick our script for %s (err %v)", obj.GroupVersionKind(), err)
					}
					status, err := vm.ExecuteHealthLua(obj, script)
					if err != nil {
						t.Fatalf("the script fails: %v", err)
					}
					if *status != tc.HealthStatus {
						t.Errorf("health = %s %q, want %s %q", status.Status, status.Message, tc.HealthStatus.Status, tc.HealthStatus.Message)
					}
				})
			}
		})
	}
}

// TestArgoCDConfigMapSnippet: config/argocd/argocd-cm.yaml carries exactly the health.lua files,
// under the keys ArgoCD reads (resource.customizations.health.<group>_<Kind>).
func TestArgoCDConfigMapSnippet(t *testing.T) {
	want := &corev1.ConfigMap{}
	want.APIVersion, want.Kind = "v1", "ConfigMap"
	want.Name, want.Namespace = "argocd-cm", "argocd"
	want.Labels = map[string]string{"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}
	want.Data = map[string]string{}
	for key, script := range scripts(t) {
		want.Data["resource.customizations.health."+strings.Replace(key, "/", "_", 1)] = script
	}
	wantYAML, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	header := "# Merge into ArgoCD's argocd-cm ConfigMap: health checks for AgentFleet and KubeRay's kinds.\n" +
		"# Generated from config/argocd/*/*/health.lua by `make argocd-cm`; do not edit.\n"
	wantYAML = append([]byte(header), wantYAML...)
	path := filepath.Join(root, "argocd-cm.yaml")
	if *update {
		if err := os.WriteFile(path, wantYAML, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run make argocd-cm)", err)
	}
	if string(got) != string(wantYAML) {
		t.Errorf("%s is stale: run make argocd-cm", path)
	}
}

var live = flag.String("live", "", "a folder of objects the e2e tests wrote from the live cluster, named <name>.<health>.yaml")

// TestLiveObjects runs our health checks on objects as the e2e tests saw them on the local cluster
// (`make test` passes -live): the real operator's and the real KubeRay's status, not hand-made
// fixtures only.
func TestLiveObjects(t *testing.T) {
	if *live == "" {
		t.Skip("no -live folder: run through `make test`, after the e2e tests")
	}
	paths, err := filepath.Glob(filepath.Join(*live, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 5 {
		t.Fatalf("%d live objects in %s, want the 5 the e2e tests write", len(paths), *live)
	}
	all := scripts(t)
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".yaml")
		want := health.HealthStatusCode(name[strings.LastIndexByte(name, '.')+1:])
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatal(err)
			}
			gvk := obj.GroupVersionKind()
			script, ok := all[gvk.Group+"/"+gvk.Kind]
			if !ok {
				t.Fatalf("no health check for %s", gvk)
			}
			got, err := lua.VM{}.ExecuteHealthLua(obj, script)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != want {
				t.Errorf("health = %s %q, want %s", got.Status, got.Message, want)
			}
			t.Logf("%s: %s %q", name, got.Status, got.Message)
		})
	}
}
