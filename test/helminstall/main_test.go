// Package helminstall installs charts/agentfleet with the helm binary (bin/helm, pinned in the
// Makefile) into the local cluster and runs the operator as the chart's ServiceAccount, so that the
// CRD, RBAC, GPU policy and ConfigMaps under test are the chart's own. kwok runs no containers: the
// chart's Deployment gets fake pods and the operator runs beside the cluster as a process, with a
// TokenRequest token of the ServiceAccount the Deployment names.
package helminstall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/agentfleet/agentfleet/test/cluster"
)

var (
	c       *cluster.Cluster
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	mapper  meta.ResettableRESTMapper
	helmBin string
	manager string // the operator's binary, built from cmd/manager
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	binDir := os.Getenv("AGENTFLEET_BIN_DIR")
	if binDir == "" {
		dir, err := cluster.RepoPath("bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = dir
	}
	helmBin = filepath.Join(binDir, "helm")
	if _, err := os.Stat(helmBin); err != nil {
		fmt.Fprintf(os.Stderr, "no helm in %s: run `make bins`\n", binDir)
		return 1
	}
	// No CRD of ours here: the chart installs it. KubeRay's come from the module cache as always.
	var err error
	c, err = cluster.Start(ctx, cluster.Options{
		BinDir: binDir,
		// One CPU node for the fleet and the chart's Deployment, one GPU node for the GPU agent's
		// DaemonSet.
		Nodes:    append(cluster.GPUNodes("h100", 1, 8, "NVIDIA-H100-80GB-HBM3"), cluster.Node{Name: "cpu-0", CPU: "256", Memory: "1Ti"}),
		Progress: os.Stdout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := 1
	defer func() { c.Finish(code) }()
	if kube, err = kubernetes.NewForConfig(c.Config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if dyn, err = dynamic.NewForConfig(c.Config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	disc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	if manager, err = c.BuildOperator(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code = m.Run()
	return code
}

func needCluster(t *testing.T) {
	t.Helper()
	if c == nil {
		t.Skip("needs the local cluster (not started in -short mode)")
	}
}

// helm runs bin/helm against the cluster with its state under the cluster's folder, never $HOME,
// and returns its standard output.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin, append(args, "--kubeconfig", c.Kubeconfig)...)
	home := filepath.Join(c.Dir, "helm")
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+c.Kubeconfig,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// decodeObjects reads the objects of a multi-document YAML stream, skipping empty documents.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &obj.Object); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if obj.GetKind() == "" || obj.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d has no kind or apiVersion", i)
		}
		objs = append(objs, obj)
	}
}

// resource is the dynamic client of obj's kind, in obj's namespace where the kind has namespaces.
func resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		// A kind the chart has just installed (its CRD) is not in the cached discovery yet.
		mapper.Reset()
		if m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, fmt.Errorf("mapping %s: %w", gvk, err)
		}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return dyn.Resource(m.Resource), nil
}

// eventually polls cond every 200 ms for up to timeout, failing with what it last said.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, msg := cond(ctx)
		// The last call may fail only because the deadline has come: keep what the one before said.
		if ctx.Err() == nil || last == "" {
			last = msg
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not after %s; last: %s (cluster logs in %s)", what, timeout, last, c.Dir)
	}
}

// key names an object for messages: Kind namespace/name.
func key(obj *unstructured.Unstructured) string {
	if obj.GetNamespace() == "" {
		return obj.GetKind() + " " + obj.GetName()
	}
	return obj.GetKind() + " " + obj.GetNamespace() + "/" + obj.GetName()
}
