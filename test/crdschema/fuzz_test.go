package crdschema_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/buildcheck"
	"github.com/agentfleet/agentfleet/test/crdschema"
)

const (
	crdPath    = "../../config/crd/bases/agentfleet.dev_agentfleets.yaml"
	samplesDir = "../../config/samples"
	// maxDocument bounds what the fuzzer feeds the validator: the samples are about 2 KiB, and
	// larger inputs only slow it down (the API server's own limit is 3 MiB).
	maxDocument = 64 << 10
)

// FuzzFleetDocuments mutates the AgentFleet documents of config/samples byte by byte, as YAML, and
// runs what still parses through the API server's admission as crdschema replays it (metadata,
// pruning, defaults, OpenAPI schema, list-map keys, CEL):
//
//	go test ./test/crdschema -run '^$' -fuzz FuzzFleetDocuments -fuzztime 60s -fuzzminimizetime 100x -parallel 1
//
// It holds that:
//   - nothing panics: not the YAML and JSON decoding, the schema, CEL, the typed decoding or the
//     builders;
//   - the validator is deterministic: the same document gets the same verdict, the same errors
//     (in any order: the OpenAPI validator, like the API server, reports them in map order) and
//     the same defaulted object twice;
//   - a document it accepts decodes into a v1alpha1.AgentFleet, and that fleet is stored as it is
//     read: written back (as the operator's client would, from the Go type) it is accepted again
//     and decodes to the same fleet, so no default or value is lost between the API server and the
//     Go type;
//   - the fleet builds into a RayCluster and RayJobs that KubeRay accepts, or fails only on the
//     fields the schema cannot check (buildcheck.Fleet).
func FuzzFleetDocuments(f *testing.F) {
	v, err := crdschema.Load(crdPath, "v1alpha1")
	if err != nil {
		f.Fatal(err)
	}
	docs := sampleFleetDocuments(f)
	if len(docs) == 0 {
		f.Fatalf("no AgentFleet in %s", samplesDir)
	}
	for _, doc := range docs {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > maxDocument {
			return
		}
		obj, ok := decode(doc)
		if !ok {
			return // not a YAML mapping: kubectl would not send it
		}
		// The API server knows the kind from the URL and refuses a body that names another;
		// mutations of these two fields only make documents it never validates.
		obj["apiVersion"], obj["kind"] = v1alpha1.GroupVersion.String(), v1alpha1.Kind

		first, second := runtime.DeepCopyJSON(obj), runtime.DeepCopyJSON(obj)
		errs := v.DefaultAndValidate(first)
		if again := v.DefaultAndValidate(second); errText(errs) != errText(again) || !reflect.DeepEqual(first, second) {
			t.Fatalf("the same document validated twice differs:\nerrors %v\nthen   %v\nobject %v\nthen   %v", errs, again, first, second)
		}
		if len(errs) > 0 {
			return // the API server refuses it
		}

		fleet := &v1alpha1.AgentFleet{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(first, fleet); err != nil {
			t.Fatalf("the schema accepts what the Go type cannot hold: %v\n%s", err, dump(first))
		}
		stored := fleet.DeepCopy()
		if errs := v.Object(stored); len(errs) > 0 {
			t.Fatalf("an accepted fleet, written back from the Go type, is refused: %v\n%s", errs.ToAggregate(), dump(first))
		}
		if !equality.Semantic.DeepEqual(fleet, stored) {
			t.Fatalf("an accepted fleet, written back from the Go type, changes:\nread    %s\nwritten %s", dump(fleet), dump(stored))
		}

		var in rayspecs.Inputs
		if fleet.Spec.Prompt != nil {
			prompt := "You are a careful agent." // the ConfigMap's text is no part of the fleet
			in.Prompt = &prompt
		}
		if err := buildcheck.Fleet(fleet, in); err != nil {
			t.Fatalf("%v\n%s", err, dump(first))
		}
	})
}

// decode reads a YAML document into the form the API server validates: YAML converted to JSON as
// kubectl does, then JSON decoded as the API server decodes unstructured objects (whole numbers as
// int64).
func decode(doc []byte) (map[string]any, bool) {
	data, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, false
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

// sampleFleetDocuments returns each AgentFleet document of the YAML files under config/samples, as
// written there (the GitOps overlays' partial fleets too: their mutations are fleets as well).
func sampleFleetDocuments(t testing.TB) [][]byte {
	t.Helper()
	var docs [][]byte
	err := filepath.WalkDir(samplesDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return err
			}
			if meta.Kind == v1alpha1.Kind {
				docs = append(docs, bytes.TrimSpace(doc))
			}
		}
	})
	if err != nil {
		t.Fatalf("reading the samples: %v", err)
	}
	return docs
}

// errText is the errors, sorted: the OpenAPI validator reports them in map order (as the API server
// does), so only the set of errors is deterministic.
func errText(errs field.ErrorList) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func dump(v any) string {
	out, err := json.Marshal(v)
	if err != nil {
		return strings.TrimSpace(err.Error())
	}
	return string(out)
}
