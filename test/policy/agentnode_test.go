// Package policy tests the admission policies AgentFleet ships that are not about fleets, in a real
// kube-apiserver (envtest).
package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/cluster"
)

var k8s client.Client

func TestMain(m *testing.M) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	os.Exit(cluster.RunWithAPIServer(m, scheme, func(c client.Client) { k8s = c }))
}

// apply creates every object of a multi-document YAML file of the repository.
func apply(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		var obj client.Object
		switch meta.Kind {
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		case "ValidatingAdmissionPolicy":
			obj = &admissionv1.ValidatingAdmissionPolicy{}
		case "ValidatingAdmissionPolicyBinding":
			obj = &admissionv1.ValidatingAdmissionPolicyBinding{}
		default:
			t.Fatalf("%s: unexpected kind %q", path, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: decoding %s: %v", path, meta.Kind, err)
		}
		if err := k8s.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: creating %s %s: %v", path, meta.Kind, obj.GetName(), err)
		}
	}
}

// The GPU agent changes only its own node's GPU health, and the GPU condition of the pods on its
// node, however broad its RBAC.
func TestGPUAgentIsConfinedToItsNode(t *testing.T) {
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	ctx := context.Background()
	const ns, sa = "agentfleet-system", "agentfleet-gpu-agent"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	apply(t, ctx, "../../config/gpu-agent/rbac.yaml")
	apply(t, ctx, "../../config/gpu-agent/own-node-policy.yaml")
	for _, n := range []string{"gpu-a", "gpu-b"} {
		if err := k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(name, node, account string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: account, Containers: []corev1.Container{{Name: "c", Image: "agent"}}},
		}
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	agent := pod("gpu-agent-a", "gpu-a", sa)
	if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	pod("worker-a", "gpu-a", "worker")
	pod("worker-b", "gpu-b", "worker")

	// The agent's own token: bound to its pod, as the kubelet projects it.
	admin, err := kubernetes.NewForConfig(k8sConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agent.Name, UID: agent.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	as := clientWithToken(t, tr.Status.Token)

	label := func(node, key, value string) func(context.Context) error {
		return func(ctx context.Context) error {
			patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
			_, err := as.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		}
	}
	nodeCondition := func(node, condType string) func(context.Context) error {
		return func(ctx context.Context) error {
			patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]any{{
				"type": condType, "status": "False", "reason": "GPUUnhealthy", "message": "xid 79", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}}})
			_, err := as.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
			return err
		}
	}
	podCondition := func(name, condType string) func(context.Context) error {
		return func(ctx context.Context) error {
			patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]any{{
				"type": condType, "status": "False", "reason": "GPUUnhealthy", "message": "xid 79"}}}})
			_, err := as.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
			return err
		}
	}

	// The policy is loaded by the API server asynchronously: wait until it refuses the other node.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return apierrors.IsForbidden(label("gpu-b", "agentfleet.dev/gpu-health", "unhealthy")(ctx)), nil
	})
	if err != nil {
		t.Fatalf("the own-node policy is not enforced 30 s after it was created: %v", err)
	}

	for name, tc := range map[string]struct {
		write func(context.Context) error
		want  string // "" allowed; else a part of the refusal
	}{
		"its node's GPU health label":            {write: label("gpu-a", "agentfleet.dev/gpu-health", "unhealthy")},
		"another node's GPU health label":        {write: label("gpu-b", "agentfleet.dev/gpu-health", "unhealthy"), want: "the GPU agent of node gpu-a may not change nodes of node gpu-b"},
		"another label of its node":              {write: label("gpu-a", "node-role.kubernetes.io/control-plane", ""), want: "may change only the label agentfleet.dev/gpu-health of its node"},
		"its node's GPUHealthy condition":        {write: nodeCondition("gpu-a", "GPUHealthy")},
		"its node's Ready condition":             {write: nodeCondition("gpu-a", "Ready"), want: "may change only the condition GPUHealthy of a nodes status"},
		"another node's GPUHealthy condition":    {write: nodeCondition("gpu-b", "GPUHealthy"), want: "may not change nodes/status of node gpu-b"},
		"the GPU condition of a pod on its node": {write: podCondition("worker-a", "agentfleet.dev/GPUHealthy")},
		"another condition of a pod on its node": {write: podCondition("worker-a", "Ready"),
			want: "may change only the condition agentfleet.dev/GPUHealthy of a pods status"},
		"a pod on another node": {write: podCondition("worker-b", "agentfleet.dev/GPUHealthy"), want: "may not change pods/status of node gpu-b"},
	} {
		t.Run(name, func(t *testing.T) { expectRefusal(t, tc.write(ctx), tc.want) })
	}

	// A token of the agent's ServiceAccount not bound to a pod names no node: it may change nothing.
	unbound, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	us := clientWithToken(t, unbound.Status.Token)
	_, err = us.CoreV1().Nodes().Patch(ctx, "gpu-a", types.MergePatchType, []byte(`{"metadata":{"labels":{"agentfleet.dev/gpu-health":"healthy"}}}`), metav1.PatchOptions{})
	if err == nil || !strings.Contains(err.Error(), "the GPU agent's token names no node") {
		t.Errorf("a token bound to no pod: err = %v, want the policy's refusal", err)
	}

	// Others are not the policy's business: an administrator labels any node.
	if err := k8s.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-b"}}, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"ml"}}}`))); err != nil {
		t.Errorf("an administrator's label refused: %v", err)
	}
}

// clientWithToken is a client of the API server that authenticates with a ServiceAccount's token only.
func clientWithToken(t *testing.T, token string) kubernetes.Interface {
	t.Helper()
	cfg := rest.AnonymousClientConfig(k8sConfig(t))
	cfg.BearerToken = token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// expectRefusal checks a request's outcome: allowed when want is "", else refused with a message
// containing want.
func expectRefusal(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("refused: %v", err)
	case want != "" && err == nil:
		t.Errorf("allowed; want refused with %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("refused with\n  %v\nwant a message containing\n  %s", err, want)
	}
}

func k8sConfig(t *testing.T) *rest.Config {
	t.Helper()
	c, err := cluster.APIServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
