package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// workerServiceAccount is the ServiceAccount the operator makes for the workers of a fleet with a
// heartbeat contract, which the agents heartbeat as.
func workerServiceAccount(ns, fleet string) string {
	return rayspecs.HeartbeatServiceAccount(&v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Name: fleet, Namespace: ns}})
}

// workerKubeconfig writes a kubeconfig for cfg (a server, its CA and a bearer token), for agents
// that are processes of their own.
func workerKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["worker"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["worker"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "worker"}
	kc.CurrentContext = "worker"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// expectLeasesOnly checks that the worker ServiceAccount of a fleet may keep a Lease in the
// fleet's namespace, which is all a heartbeat needs, and nothing else: not list or delete Leases,
// not read Pods or Secrets, not touch another namespace.
func expectLeasesOnly(t *testing.T, ns, fleet string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := c.ServiceAccountConfig(ctx, ns, workerServiceAccount(ns, fleet), nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	leases := cs.CoordinationV1().Leases(ns)
	const probe = "least-privilege-probe" // no fleet label: the operator ignores it
	t.Cleanup(func() {
		_ = admin.CoordinationV1().Leases(ns).Delete(context.Background(), probe, metav1.DeleteOptions{})
	})

	// The Role is the operator's; the API server's RBAC cache may see its binding a moment late.
	eventually(t, 10*time.Second, "the worker ServiceAccount creates a Lease", func(ctx context.Context) (bool, string) {
		_, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: probe}}, metav1.CreateOptions{})
		return err == nil, errString(err)
	})
	lease, err := leases.Get(ctx, probe, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the worker ServiceAccount reading its Lease: %v", err)
	}
	lease.Spec.HolderIdentity = ptr.To(probe)
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Errorf("the worker ServiceAccount updating its Lease: %v", err)
	}
	if _, err := leases.Patch(ctx, probe, types.MergePatchType, []byte(`{"spec":{"leaseDurationSeconds":5}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("the worker ServiceAccount patching its Lease: %v", err)
	}

	forbidden := map[string]func(ctx context.Context) error{
		"list Leases": func(ctx context.Context) error {
			_, err := leases.List(ctx, metav1.ListOptions{})
			return err
		},
		"delete a Lease": func(ctx context.Context) error {
			return leases.Delete(ctx, probe, metav1.DeleteOptions{})
		},
		"list Pods": func(ctx context.Context) error {
			_, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err
		},
		"read a Secret": func(ctx context.Context) error {
			_, err := cs.CoreV1().Secrets(ns).Get(ctx, "any", metav1.GetOptions{})
			return err
		},
		"create a Lease in another namespace": func(ctx context.Context) error {
			_, err := cs.CoordinationV1().Leases(metav1.NamespaceDefault).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: probe}}, metav1.CreateOptions{})
			return err
		},
	}
	for what, call := range forbidden {
		if err := call(ctx); !apierrors.IsForbidden(err) {
			t.Errorf("the worker ServiceAccount may %s: got %v, want Forbidden", what, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
