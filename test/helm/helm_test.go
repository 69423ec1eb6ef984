package helm

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const (
	chartDir  = "../../charts/agentfleet"
	release   = "agentfleet"
	namespace = "agentfleet-system"
)

func readValues(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// TestLint runs `helm lint --strict` (Helm's pkg/lint) with the default and the full values.
func TestLint(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"default": nil,
		"full":    readValues(t, "testdata/values-full.yaml"),
	} {
		t.Run(name, func(t *testing.T) {
			res := lint.AllWithKubeVersion(chartDir, values, namespace, kubeVersion)
			for _, m := range res.Messages {
				// The chart has no icon: an INFO, not a fault.
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestTemplate compares `helm template --include-crds` with the golden files (go test -update
// rewrites them).
func TestTemplate(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"default": nil,
		"full":    readValues(t, "testdata/values-full.yaml"),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := RenderChart(chartDir, release, namespace, values)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Objects(got); err != nil {
				t.Fatalf("rendered manifest does not parse: %v", err)
			}
			golden := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("helm template differs from %s (-want +got; go test -update if the change is meant):\n%s", golden, diff)
			}
		})
	}
}

// TestTemplateSettings checks what the brief of the chart promises, on the rendered objects
// rather than on the snapshot's text.
func TestTemplateSettings(t *testing.T) {
	out, err := RenderChart(chartDir, release, namespace, nil)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	dep := objs["Deployment/agentfleet-system/agentfleet-operator"]
	if dep == nil {
		t.Fatalf("no Deployment agentfleet-operator in %v", Keys(objs))
	}
	if got := dig(dep, "spec", "replicas"); got != float64(2) {
		t.Errorf("replicas = %v, want 2", got)
	}
	c := dig(dep, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	args := strings.Join(toStrings(c["args"]), " ")
	for _, a := range []string{"--leader-elect=true", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080", "--gpu-fault-conditions=GPUHealthy=False,", "--label-faulty-gpu-nodes=true"} {
		if !strings.Contains(args, a) {
			t.Errorf("operator args %q lack %q", args, a)
		}
	}
	sc := c["securityContext"].(map[string]any)
	for path, want := range map[string]any{
		"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
	} {
		if sc[path] != want {
			t.Errorf("securityContext.%s = %v, want %v", path, sc[path], want)
		}
	}
	if got := toStrings(dig(sc, "capabilities", "drop")); len(got) != 1 || got[0] != "ALL" {
		t.Errorf("capabilities.drop = %v, want [ALL]", got)
	}
	if got := dig(sc, "seccompProfile", "type"); got != "RuntimeDefault" {
		t.Errorf("seccompProfile = %v, want RuntimeDefault", got)
	}
	if got := dig(c, "livenessProbe", "httpGet", "port"); got != "health" {
		t.Errorf("liveness probe port = %v, want health", got)
	}
	if got := c["image"]; got != "ghcr.io/agentfleet/operator:"+appVersion(t) {
		t.Errorf("image = %v, want the chart's appVersion as tag", got)
	}
	for _, k := range []string{"DaemonSet/agentfleet-system/agentfleet-gpu-agent", "ServiceMonitor/agentfleet-system/agentfleet-operator", "ConfigMap/argocd/argocd-cm"} {
		if objs[k] != nil {
			t.Errorf("%s is rendered by default; it must be off", k)
		}
	}
	if objs["ValidatingAdmissionPolicy//agentfleet-gpu-policy"] == nil {
		t.Errorf("the GPU policy is not rendered by default")
	}
}

// TestDefaultsMatchBinaries checks that the chart's defaults are the binaries' own: a default
// changed in Go and not in values.yaml is caught here.
func TestDefaultsMatchBinaries(t *testing.T) {
	values := readValues(t, filepath.Join(chartDir, "values.yaml"))
	for _, c := range []struct{ file, constant, value string }{
		{"../../controllers/gpunode/fault.go", "DefaultFaultConditions", dig(values, "manager", "gpuFaultConditions").(string)},
		{"../../gpu/health.go", "DefaultIgnoredXIDList", dig(values, "gpuAgent", "ignoredXIDs").(string)},
	} {
		src, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(c.constant + `\s*=\s*"([^"]*)"`).FindSubmatch(src)
		if m == nil {
			t.Fatalf("no constant %s in %s", c.constant, c.file)
		}
		if string(m[1]) != c.value {
			t.Errorf("values.yaml has %q, %s.%s is %q", c.value, c.file, c.constant, m[1])
		}
	}
}

// TestSchemaRefuses installs wrong values: each must fail with a message naming the key and
// what is wrong.
func TestSchemaRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		values map[string]any
		want   []string
	}{
		"string for a number": {
			values: map[string]any{"replicaCount": "two"},
			want:   []string{"/replicaCount", "got string, want integer"},
		},
		"unknown key": {
			values: map[string]any{"replicas": 3},
			want:   []string{"additional properties 'replicas' not allowed"},
		},
		"unknown nested key": {
			values: map[string]any{"gpuAgent": map[string]any{"maxTemp": 90}},
			want:   []string{"/gpuAgent", "additional properties 'maxTemp' not allowed"},
		},
		"pull policy": {
			values: map[string]any{"image": map[string]any{"repository": "r", "pullPolicy": "Sometimes"}},
			want:   []string{"/image/pullPolicy", "value must be one of"},
		},
		"duration": {
			values: map[string]any{"gpuAgent": map[string]any{"quietPeriod": "ten minutes"}},
			want:   []string{"/gpuAgent/quietPeriod", "does not match pattern"},
		},
		"temperature": {
			values: map[string]any{"gpuAgent": map[string]any{"maxTemperature": 2000}},
			want:   []string{"/gpuAgent/maxTemperature", "maximum: got 2,000, want 1,000"},
		},
		"fault conditions": {
			values: map[string]any{"manager": map[string]any{"gpuFaultConditions": "GPUHealthy:False"}},
			want:   []string{"/manager/gpuFaultConditions", "does not match pattern"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := RenderChart(chartDir, release, namespace, c.values)
			if err == nil {
				t.Fatalf("values %v installed; want an error", c.values)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestChartAgreesWithKustomize renders the chart and config/default and compares their objects
// by kind, namespace and name, after Normalise. What differs on purpose: config/default also
// makes the Namespace (Helm leaves it to --create-namespace); Helm's release labels; CRD labels.
func TestChartAgreesWithKustomize(t *testing.T) {
	for name, c := range map[string]struct {
		kustomization string
		values        map[string]any
	}{
		// config/default, as shipped, against the chart's defaults.
		"default": {"../../config/default", nil},
		// config/default with its optional parts (the GPU agent, the ServiceMonitor) against the
		// chart with them on.
		"optional parts": {"testdata/kustomize-optional", map[string]any{
			"gpuAgent": map[string]any{"enabled": true},
			"metrics":  map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			chartOut, err := RenderChart(chartDir, release, namespace, c.values)
			if err != nil {
				t.Fatal(err)
			}
			kOut, err := RenderKustomize(c.kustomization)
			if err != nil {
				t.Fatal(err)
			}
			chartObjs, err := Objects(chartOut)
			if err != nil {
				t.Fatal(err)
			}
			kObjs, err := Objects(kOut)
			if err != nil {
				t.Fatal(err)
			}
			delete(kObjs, "Namespace//"+namespace) // Helm: --create-namespace
			if diff := cmp.Diff(Keys(kObjs), Keys(chartObjs)); diff != "" {
				t.Fatalf("objects differ (-kustomize +chart):\n%s", diff)
			}
			for _, k := range Keys(kObjs) {
				if diff := cmp.Diff(Normalise(kObjs[k]), Normalise(chartObjs[k])); diff != "" {
					t.Errorf("%s differs (-kustomize +chart):\n%s", k, diff)
				}
			}
		})
	}
}

func appVersion(t *testing.T) string {
	t.Helper()
	return readValues(t, filepath.Join(chartDir, "Chart.yaml"))["appVersion"].(string)
}

func dig(o any, path ...string) any {
	for _, p := range path {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[p]
	}
	return o
}

func toStrings(x any) []string {
	var out []string
	l, _ := x.([]any)
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}
