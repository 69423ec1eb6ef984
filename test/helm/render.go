// Package helm tests the Helm chart charts/agentfleet and the kustomize layout config/default: lint,
// rendered snapshots, the values schema, and that both make the same objects. It is a module of its
// own: Helm's SDK and kustomize bring their own Kubernetes libraries.
package helm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// RenderChart renders the chart at dir as `helm template --include-crds` would, for a release name
// in namespace with values (nil: the chart's defaults). It fails as `helm install` would on values
// that values.schema.json refuses.
func RenderChart(dir, release, namespace string, values map[string]any) (string, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return "", fmt.Errorf("loading chart %s: %w", dir, err)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace, install.IncludeCRDs = true, true, true, true
	install.ReleaseName, install.Namespace = release, namespace
	install.KubeVersion = kubeVersion
	if values == nil {
		values = map[string]any{}
	}
	rel, err := install.Run(chrt, values)
	if err != nil {
		return "", err
	}
	return rel.Manifest, nil
}

// RenderKustomize builds the kustomization at dir as `kubectl kustomize` would; kustomizations
// under testdata may reach outside their folder.
func RenderKustomize(dir string) (string, error) {
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return "", fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := m.AsYaml()
	return string(out), err
}

// Object is one rendered object as JSON-like maps.
type Object = map[string]any

// Key names an object: kind/namespace/name.
func Key(o Object) string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	kind, _ := o["kind"].(string)
	return kind + "/" + ns + "/" + name
}

// Objects splits a multi-document YAML stream into its objects by Key; a key twice is an error.
func Objects(stream string) (map[string]Object, error) {
	objs := map[string]Object{}
	r := yamlutil.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var o Object
		if err := yaml.UnmarshalStrict(doc, &o); err != nil { // strict: a key twice is a fault
			return nil, fmt.Errorf("%w in:\n%s", err, doc)
		}
		if o == nil {
			continue
		}
		k := Key(o)
		if _, dup := objs[k]; dup {
			return nil, fmt.Errorf("%s twice", k)
		}
		objs[k] = o
	}
}

// Keys are the sorted keys of objs.
func Keys(objs map[string]Object) []string {
	keys := make([]string, 0, len(objs))
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// releaseLabels are the labels only Helm sets: which chart version and release made an object.
var releaseLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// Normalise removes from o what legitimately differs between the chart and config/default:
// Helm's release labels (in every label map and selector, the instance label being part of the
// chart's selectors so that two releases do not select each other's pods), and the labels of
// CRDs, which Helm installs from crds/ untemplated while kustomize labels them like the rest; and
// whitespace in CEL expressions, where it means nothing and where kustomize's YAML library reads
// the policy's folded (>-) scalars with more blank lines than Helm's does.
func Normalise(o Object) Object {
	o = deepCopy(o)
	if o["kind"] == "ValidatingAdmissionPolicy" {
		squeezeCEL(o)
	}
	if o["kind"] == "CustomResourceDefinition" {
		delete(o["metadata"].(map[string]any), "labels")
	}
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, v := range x {
				if m, ok := v.(map[string]any); ok && (k == "labels" || k == "matchLabels" || k == "selector") {
					for _, l := range releaseLabels {
						delete(m, l)
					}
					if len(m) == 0 && k == "labels" {
						delete(x, k)
						continue
					}
				}
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	walk(o)
	return o
}

var spaces = regexp.MustCompile(`\s+`)

// squeezeCEL turns every run of whitespace in the CEL expressions under x into one space.
func squeezeCEL(x any) {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			if s, ok := v.(string); ok && (k == "expression" || k == "messageExpression") {
				x[k] = spaces.ReplaceAllString(s, " ")
				continue
			}
			squeezeCEL(v)
		}
	case []any:
		for _, v := range x {
			squeezeCEL(v)
		}
	}
}

func deepCopy(o Object) Object {
	b, err := yaml.Marshal(o)
	if err != nil {
		panic(err)
	}
	var c Object
	if err := yaml.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return c
}

// kubeVersion is the Kubernetes version the chart is rendered for (test/cluster's minor).
var kubeVersion = &chartutil.KubeVersion{Version: "v1.34.0", Major: "1", Minor: "34"}
