package rayspecs_test

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/crdschema"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const crdPath = "../config/crd/bases/agentfleet.dev_agentfleets.yaml"

// The time the golden files' scheduled runs are due.
var goldenRun = time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)

func loadCRD(t testing.TB) *crdschema.Validator {
	t.Helper()
	v, err := crdschema.Load(crdPath, "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sample is what a file of config/samples holds: fleets and the ConfigMaps beside them.
type sample struct {
	fleets     []*v1alpha1.AgentFleet
	configMaps map[string]*corev1.ConfigMap
}

func readSample(t testing.TB, v *crdschema.Validator, path string) sample {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sample{configMaps: map[string]*corev1.ConfigMap{}}
	docs := utilyaml.NewYAMLReader(bufioReader(data))
	for {
		doc, err := docs.Read()
		if err != nil {
			break
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch meta.Kind {
		case v1alpha1.Kind:
			var f v1alpha1.AgentFleet
			if err := yaml.UnmarshalStrict(doc, &f); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			// As the API server would store it: defaulted, and refused if invalid.
			if errs := v.Object(&f); len(errs) > 0 {
				t.Fatalf("%s: fleet %s is invalid: %v", path, f.Name, errs.ToAggregate())
			}
			f.UID = "00000000-0000-0000-0000-000000000001"
			s.fleets = append(s.fleets, &f)
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict(doc, &cm); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			s.configMaps[cm.Name] = &cm
		}
	}
	return s
}

// TestSamplesGolden builds every sample fleet's RayCluster and RayJobs and compares them with
// testdata/<sample>.golden.yaml; `go test ./rayspecs -update` rewrites those files.
func TestSamplesGolden(t *testing.T) {
	v := loadCRD(t)
	paths, err := filepath.Glob("../config/samples/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			s := readSample(t, v, path)
			if len(s.fleets) == 0 {
				t.Fatalf("%s has no AgentFleet", path)
			}
			var out bytes.Buffer
			for _, f := range s.fleets {
				var in rayspecs.Inputs
				if p := f.Spec.Prompt; p != nil {
					cm, ok := s.configMaps[p.ConfigMapRef.Name]
					if !ok {
						t.Fatalf("fleet %s: ConfigMap %s is not in the sample", f.Name, p.ConfigMapRef.Name)
					}
					text := cm.Data[p.ConfigMapRef.Key]
					in.Prompt = &text
				}
				rc := build(t, f, in)
				writeDoc(t, &out, rc)
				for _, j := range f.Spec.Jobs {
					var o rayspecs.JobOptions
					if j.Schedule != "" {
						o.ScheduledTime = goldenRun
					}
					writeDoc(t, &out, buildJob(t, f, j.Name, o))
				}
			}
			golden := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run `go test ./rayspecs -update` to write it)", err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("%s is out of date (-golden +built); if the change is meant, run `go test ./rayspecs -update`:\n%s", golden, diff)
			}
		})
	}
}

func writeDoc(t *testing.T, out *bytes.Buffer, obj any) {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	out.WriteString("---\n")
	out.Write(data)
}

func bufioReader(data []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(data)) }
