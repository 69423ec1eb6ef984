package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

// leasePolicyName is the policy of config/policy/lease-policy.yaml, which the API server names in
// each refusal.
const leasePolicyName = "agentfleet-agent-lease"

// installLeasePolicy creates the agent Lease policy of config/policy, bound to namespace ns only:
// other tests write Leases as agents with tokens bound to no pod (least-privilege probes, the
// benches' simulated agents), which the policy refuses.
func installLeasePolicy(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	path, err := cluster.RepoPath("config/policy/lease-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	policy, binding := &admissionv1.ValidatingAdmissionPolicy{}, &admissionv1.ValidatingAdmissionPolicyBinding{}
	docs := bytes.Split(data, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("%s: %d documents, want the policy and its binding", path, len(docs))
	}
	for i, obj := range []any{policy, binding} {
		if err := yaml.UnmarshalStrict(docs[i], obj); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
	}
	binding.Spec.MatchResources = &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}}
	for _, obj := range []client.Object{policy, binding} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}

	// The policy reaches the API server asynchronously: wait until it refuses a ServiceAccount
	// labelled as a fleet's agents (its params) a Lease written with a token bound to no pod. Until
	// then the probe is created (and deleted again) or refused by RBAC, whose binding may lag too.
	const probe = "probe-agent"
	meta := metav1.ObjectMeta{Name: probe, Namespace: ns, Labels: map[string]string{v1alpha1.LabelFleet: "probe"}}
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: meta},
		&rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}}}},
		&rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: probe},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: probe, Namespace: ns}}},
	} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	cfg, err := c.ServiceAccountConfig(ctx, ns, probe, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the agent Lease policy enforced", func(ctx context.Context) (bool, string) {
		_, err := cs.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: probe}}, metav1.CreateOptions{})
		if err == nil {
			_ = k8s.Delete(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: probe, Namespace: ns}})
			return false, "the probe Lease was created"
		}
		return strings.Contains(err.Error(), leasePolicyName), err.Error()
	})
}

// An agent writes only its own heartbeat Lease, with the API server's policy installed: not a Lease
// of another worker of its fleet, nor of another fleet in the namespace, nor relabelled, nor with a
// token bound to no pod. The Go and Python clients keep their Leases under it.
func TestAgentsWriteOnlyTheirOwnLease(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	installLeasePolicy(t, ns)

	// Two fleets in one namespace, their agents (the Go client, with tokens bound to their pods)
	// writing Leases from the start under the policy: Ready means each Lease was written.
	var keys []client.ObjectKey
	goAgents := map[string]*agents{}
	for _, name := range []string{"alpha", "beta"} {
		_, key := newFleet(t, builder.MakeAgentFleet(name, ns).Replicas(2).Heartbeat(1, 10, 5, 1000))
		goAgents[name] = simulateAgents(t, ns, name, time.Second)
		keys = append(keys, key)
	}
	for _, key := range keys {
		waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	}
	alpha, beta := agentPods(t, ns, "alpha"), agentPods(t, ns, "beta")
	if len(alpha) != 2 || len(beta) != 2 {
		t.Fatalf("%d workers of alpha and %d of beta, want 2 each", len(alpha), len(beta))
	}
	for _, p := range append(append([]corev1.Pod(nil), alpha...), beta...) {
		eventually(t, 10*time.Second, "the Lease of "+p.Name, func(ctx context.Context) (bool, string) {
			l := &coordinationv1.Lease{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: p.Name}, l); err != nil {
				return false, err.Error()
			}
			return l.Labels[v1alpha1.LabelFleet] == p.Labels[v1alpha1.LabelFleet], fmt.Sprintf("labels %v", l.Labels)
		})
	}

	// The agent of alpha's first worker, as its pod's projected token would make it.
	me := alpha[0].Name
	as := func(boundTo *corev1.Pod) kubernetes.Interface {
		cfg, err := c.ServiceAccountConfig(ctx, ns, workerServiceAccount(ns, "alpha"), boundTo)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	agent, unbound := as(&alpha[0]), as(nil)
	patch := func(cs kubernetes.Interface, name, body string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := cs.CoordinationV1().Leases(ns).Patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
			return err
		}
	}
	const note = `{"metadata":{"annotations":{"e2e.agentfleet.dev/note":"written"}}}`
	for name, tc := range map[string]struct {
		write func(context.Context) error
		want  string // "" allowed; else a part of the refusal
	}{
		"its own Lease": {write: patch(agent, me, note)},
		"its own Lease, labelled as fleet beta": {write: patch(agent, me, `{"metadata":{"labels":{"agentfleet.dev/fleet":"beta"}}}`),
			want: fmt.Sprintf("may write only Leases labelled agentfleet.dev/fleet=alpha, not Lease %s labelled agentfleet.dev/fleet=beta", me)},
		"a Lease of fleet beta": {write: patch(agent, beta[0].Name, note),
			want: fmt.Sprintf("the agent of pod %s (fleet alpha) may write only its own Lease, %s, not Lease %s", me, me, beta[0].Name)},
		"the Lease of another worker of its fleet": {write: patch(agent, alpha[1].Name, note),
			want: fmt.Sprintf("may write only its own Lease, %s, not Lease %s", me, alpha[1].Name)},
		"a new Lease named after no pod of its": {write: func(ctx context.Context) error {
			_, err := agent.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
				Name: "alpha-extra", Labels: map[string]string{v1alpha1.LabelFleet: "alpha"}}}, metav1.CreateOptions{})
			return err
		}, want: "not Lease alpha-extra"},
		"its own Lease with a token bound to no pod": {write: patch(unbound, me, note),
			want: "the agents of fleet alpha write Leases only with a token bound to their pod"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.write(ctx)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("allowed; want refused with %q", tc.want)
			case tc.want != "" && (!apierrors.IsForbidden(err) || !strings.Contains(err.Error(), leasePolicyName) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("refused with\n  %v\nwant Forbidden by %s with a message containing\n  %s", err, leasePolicyName, tc.want)
			}
		})
	}
	for _, p := range beta {
		l := &coordinationv1.Lease{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: p.Name}, l); err != nil {
			t.Fatal(err)
		}
		if l.Labels[v1alpha1.LabelFleet] != "beta" || l.Annotations["e2e.agentfleet.dev/note"] != "" {
			t.Errorf("Lease %s of fleet beta changed by alpha's agent: labels %v, annotations %v", p.Name, l.Labels, l.Annotations)
		}
	}

	t.Run("the Python client keeps its Lease under the policy", func(t *testing.T) {
		goAgents["alpha"].set(alpha[1].Name, "stall") // the Python agent takes over its Lease
		pyAgentUnderLeasePolicy(t, ns, alpha[1])
	})
}

// pyAgentUnderLeasePolicy runs the Python client as the agent of pod for a few steps: start and
// the first step write the Lease at once, and raise if the policy refuses the write.
func pyAgentUnderLeasePolicy(t *testing.T, ns string, pod corev1.Pod) {
	fleet := pod.Labels[v1alpha1.LabelFleet]
	cfg, err := c.ServiceAccountConfig(context.Background(), ns, workerServiceAccount(ns, fleet), &pod)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := cluster.RepoPath("sdk/python")
	if err != nil {
		t.Fatal(err)
	}
	script := `
import sys
sys.path.insert(0, sys.argv[1])
from agentfleet_heartbeat import Heartbeat
hb = Heartbeat.from_env()
hb.start()
for i in range(3):
    hb.step("python step %d" % i)
print("writes", hb.writes)
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", script, dir)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+workerKubeconfig(t, cfg), heartbeatapi.EnvNamespace+"="+ns, heartbeatapi.EnvFleet+"="+fleet,
		heartbeatapi.EnvPodName+"="+pod.Name, heartbeatapi.EnvHeartbeatInterval+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the Python agent of %s under the Lease policy: %v\n%s", pod.Name, err, out)
	}
	if !strings.Contains(string(out), "writes ") {
		t.Errorf("the Python agent of %s said %q, want its count of writes", pod.Name, out)
	}
}
