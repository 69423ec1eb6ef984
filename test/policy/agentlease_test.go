package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// An agent writes only its own heartbeat Lease: the one named after the pod its token is bound to,
// labelled with its fleet, whatever its Role allows in the namespace.
func TestAgentsWriteOnlyTheirOwnLease(t *testing.T) {
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	ctx := context.Background()
	const ns = "agent-leases"
	admin, err := kubernetes.NewForConfig(k8sConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	mustCreate := func(obj client.Object) {
		t.Helper()
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	// What the operator makes for a fleet with heartbeats (controllers/fleet/access.go), and another
	// application's ServiceAccount that is named like an agent's and keeps Leases too.
	leaseWriter := func(sa string, labels map[string]string) {
		meta := metav1.ObjectMeta{Name: sa, Namespace: ns, Labels: labels}
		mustCreate(&corev1.ServiceAccount{ObjectMeta: meta})
		mustCreate(&rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update", "patch"}}}})
		mustCreate(&rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}})
	}
	leaseWriter("alpha-agent", map[string]string{v1alpha1.LabelFleet: "alpha"})
	leaseWriter("beta-agent", map[string]string{v1alpha1.LabelFleet: "beta"})
	leaseWriter("metrics-agent", nil)
	pod := func(name, sa string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "agent"}}}}
		mustCreate(p)
		return p
	}
	alpha0, beta0, metrics := pod("alpha-0", "alpha-agent"), pod("beta-0", "beta-agent"), pod("metrics-0", "metrics-agent")
	pod("alpha-1", "alpha-agent")
	lease := func(name, fleet string) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		if fleet != "" {
			l.Labels = map[string]string{v1alpha1.LabelFleet: fleet}
		}
		return l
	}
	for _, l := range []*coordinationv1.Lease{lease("alpha-1", "alpha"), lease("beta-0", "beta"), lease("leader", "")} {
		mustCreate(l)
	}

	as := func(sa string, boundTo *corev1.Pod) kubernetes.Interface {
		t.Helper()
		req := &authenticationv1.TokenRequest{}
		if boundTo != nil {
			req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: boundTo.Name, UID: boundTo.UID}
		}
		tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return clientWithToken(t, tr.Status.Token)
	}
	agent, unbound, beta, other := as("alpha-agent", alpha0), as("alpha-agent", nil), as("beta-agent", beta0), as("metrics-agent", metrics)
	patch := func(cs kubernetes.Interface, name, body string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := cs.CoordinationV1().Leases(ns).Patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
			return err
		}
	}
	renew := func(cs kubernetes.Interface, name string) func(context.Context) error {
		return patch(cs, name, fmt.Sprintf(`{"spec":{"renewTime":%q}}`, time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")))
	}
	create := func(cs kubernetes.Interface, l *coordinationv1.Lease) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := cs.CoordinationV1().Leases(ns).Create(ctx, l, metav1.CreateOptions{})
			return err
		}
	}

	apply(t, ctx, "../../config/policy/lease-policy.yaml")
	// The policy, its params and the Roles reach the API server's caches asynchronously: wait until
	// the policy refuses the agent another application's Lease (allowed, and harmless, before).
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := renew(agent, "leader")(ctx)
		return err != nil && strings.Contains(err.Error(), "agentfleet-agent-lease"), nil
	})
	if err != nil {
		t.Fatalf("the agent Lease policy is not enforced 30 s after it was created: %v", err)
	}

	// Its own Lease first: the table's cases renew and relabel it.
	if err := create(agent, lease("alpha-0", "alpha"))(ctx); err != nil {
		t.Fatalf("the agent creating its own Lease: %v", err)
	}
	for name, tc := range map[string]struct {
		write func(context.Context) error
		want  string // "" allowed; else a part of the refusal
	}{
		"renew its own Lease": {write: renew(agent, "alpha-0")},
		"relabel its own Lease as another fleet's": {write: patch(agent, "alpha-0", `{"metadata":{"labels":{"agentfleet.dev/fleet":"beta"}}}`),
			want: "may write only Leases labelled agentfleet.dev/fleet=alpha, not Lease alpha-0 labelled agentfleet.dev/fleet=beta"},
		"unlabel its own Lease": {write: patch(agent, "alpha-0", `{"metadata":{"labels":{"agentfleet.dev/fleet":null}}}`),
			want: "not Lease alpha-0 without that label"},
		"renew another worker's Lease of its fleet": {write: renew(agent, "alpha-1"),
			want: "the agent of pod alpha-0 (fleet alpha) may write only its own Lease, alpha-0, not Lease alpha-1"},
		"renew another fleet's Lease":        {write: renew(agent, "beta-0"), want: "may write only its own Lease, alpha-0, not Lease beta-0"},
		"renew another application's Lease":  {write: renew(agent, "leader"), want: "not Lease leader"},
		"create a Lease for a pod not begun": {write: create(agent, lease("alpha-2", "alpha")), want: "not Lease alpha-2"},
		"its own Lease with a token bound to no pod": {write: renew(unbound, "alpha-0"),
			want: "the agents of fleet alpha write Leases only with a token bound to their pod"},
		"another fleet's agent, its own Lease":              {write: renew(beta, "beta-0")},
		"another fleet's agent, this fleet's Lease":         {write: renew(beta, "alpha-0"), want: "(fleet beta) may write only its own Lease, beta-0, not Lease alpha-0"},
		"a ServiceAccount named like an agent, of no fleet": {write: renew(other, "leader")},
	} {
		t.Run(name, func(t *testing.T) { expectRefusal(t, tc.write(ctx), tc.want) })
	}

	// Others are not the policy's business: the operator (here an administrator) writes directives on
	// any Lease.
	if err := k8s.Patch(ctx, lease("alpha-1", ""), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"example.com/note":"directive"}}}`))); err != nil {
		t.Errorf("an administrator's write refused: %v", err)
	}
}
