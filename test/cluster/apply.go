package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldManager is the field manager of what ApplyFiles writes.
const FieldManager = "agentfleet-local-cluster"

// ApplyFiles server-side applies every object in the YAML files (*.yaml, *.yml) of dir, in file
// name order, and returns what it applied as "Kind namespace/name". Objects without a namespace in
// a namespaced kind go to "default".
func (c *Cluster) ApplyFiles(ctx context.Context, dir string) ([]string, error) {
	files, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	var applied []string
	for _, f := range files {
		objs, err := decodeFile(f)
		if err != nil {
			return applied, err
		}
		for _, obj := range objs {
			namespaced, err := c.Client.IsObjectNamespaced(obj)
			if err != nil {
				return applied, fmt.Errorf("%s: %s %s: %w", f, obj.GetKind(), obj.GetName(), err)
			}
			if namespaced && obj.GetNamespace() == "" {
				obj.SetNamespace("default")
			}
			if err := c.Client.Patch(ctx, obj, client.Apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
				return applied, fmt.Errorf("%s: applying %s %s: %w", f, obj.GetKind(), client.ObjectKeyFromObject(obj), err)
			}
			applied = append(applied, fmt.Sprintf("%s %s", obj.GetKind(), client.ObjectKeyFromObject(obj)))
		}
	}
	return applied, nil
}

func yamlFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) && e.Name() != "kustomization.yaml" {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
}

// decodeFile reads the objects of a multi-document YAML file, skipping empty documents.
func decodeFile(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		obj := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &obj.Object); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if obj.GetKind() == "" || obj.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: document %d has no kind or apiVersion", path, i)
		}
		objs = append(objs, obj)
	}
}
