package crdschema_test

import (
	"context"
	"flag"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/cluster"
	"github.com/agentfleet/agentfleet/test/crdschema"
)

// k8s is a client of a real kube-apiserver with the CRD installed (envtest), nil in -short mode.
var k8s client.Client

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// The fuzz targets need no API server, and each fuzz worker process runs TestMain too.
		os.Exit(m.Run())
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	os.Exit(cluster.RunWithAPIServer(m, scheme, func(c client.Client) { k8s = c }))
}

// fuzzing says whether this process runs a fuzz target: go test -fuzz, or one of its workers.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// fleetDoc is a valid fleet as a decoded request body, changed by edit.
func fleetDoc(edit func(obj, meta, spec map[string]any)) map[string]any {
	meta := map[string]any{"name": "docs", "namespace": "default"}
	spec := map[string]any{
		"image": "agent:1", "rayVersion": "2.52.0",
		"model": map[string]any{"name": "m", "version": "v1"},
	}
	obj := map[string]any{"apiVersion": v1alpha1.GroupVersion.String(), "kind": v1alpha1.Kind, "metadata": meta, "spec": spec}
	if edit != nil {
		edit(obj, meta, spec)
	}
	return obj
}

// The decoding and the checks the API server applies besides the schema, as crdschema replays them:
// the same verdict and the same reasons as a real kube-apiserver (when there is one).
func TestDecodesAndValidatesAsTheAPIServer(t *testing.T) {
	v, err := crdschema.Load(crdPath, "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		doc  map[string]any
		want []string // parts of the refusal, each in both messages; none: accepted
	}{
		"valid": {doc: fleetDoc(nil)},
		"a null list is dropped, not refused": {doc: fleetDoc(func(_, _, spec map[string]any) {
			spec["dependsOn"] = nil
		})},
		"metadata that does not decode": {doc: fleetDoc(func(_, meta, _ map[string]any) {
			meta["labels"] = int64(5)
		}), want: []string{"cannot unmarshal number into Go struct field ObjectMeta.labels of type map[string]string"}},
		"a label key that is no label key": {doc: fleetDoc(func(_, meta, _ map[string]any) {
			meta["labels"] = map[string]any{"a b": "x"}
		}), want: []string{`metadata.labels: Invalid value: "a b"`}},
		"a pattern and a CEL rule broken together are both reported": {doc: fleetDoc(func(_, _, spec map[string]any) {
			spec["rayVersion"] = "latest"
			spec["env"] = []any{map[string]any{"name": "AGENTFLEET_X", "value": "1"}}
		}), want: []string{"spec.rayVersion in body should match", "names starting with AGENTFLEET_ are set by the operator"}},
		"a value of the wrong type stops the CEL rules": {doc: fleetDoc(func(_, _, spec map[string]any) {
			spec["replicas"] = "three"
			spec["env"] = []any{map[string]any{"name": "AGENTFLEET_X", "value": "1"}}
		}), want: []string{"spec.replicas in body must be of type integer", "some validation rules were not checked"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			offline := v.DefaultAndValidate(runtime.DeepCopyJSON(tc.doc))
			if len(tc.want) == 0 && len(offline) > 0 {
				t.Errorf("crdschema refuses it: %v", offline.ToAggregate())
			}
			if len(tc.want) > 0 {
				if len(offline) == 0 {
					t.Fatalf("crdschema accepts it; want a refusal saying %q", tc.want)
				}
				msg := offline.ToAggregate().Error()
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("crdschema's refusal does not say %q:\n%s", w, msg)
					}
				}
			}

			if k8s == nil {
				return // -short: no API server to compare with
			}
			u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(tc.doc)}
			err := k8s.Create(context.Background(), u, client.DryRunAll)
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("the API server refuses it: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("the API server accepts it; crdschema refuses it: %v", offline.ToAggregate())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the API server's refusal does not say %q:\n%v", w, err)
				}
			}
		})
	}
}
