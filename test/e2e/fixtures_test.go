package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// liveFixture writes an object as the cluster has it to $AGENTFLEET_LIVE_FIXTURES/<name>.<health>.yaml,
// where `make test` then has ArgoCD's Lua engine (test/argocd) check that our health check reads
// it as health: the live objects, not only hand-made fixtures, go through ArgoCD's engine.
func liveFixture(t *testing.T, name, health string, obj client.Object) {
	t.Helper()
	dir := os.Getenv("AGENTFLEET_LIVE_FIXTURES")
	if dir == "" {
		return
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	gvk, err := k8s.GroupVersionKindFor(obj)
	if err != nil {
		t.Fatal(err)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	obj.SetManagedFields(nil)
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s.%s.yaml", name, health)), data, 0o644); err != nil {
		t.Fatal(err)
	}
}
