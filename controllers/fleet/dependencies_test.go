package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/test/cluster"
)

// limitedOperator makes the env's reconciler run as a user allowed only to read fleets and write
// their status in the env's namespace, plus the rules given there: an operator whose ClusterRole
// does not cover a dependency's kind.
func (e *env) limitedOperator(rules ...rbacv1.PolicyRule) {
	e.t.Helper()
	user := "operator-" + e.ns
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "operator", Namespace: e.ns}, Rules: append([]rbacv1.PolicyRule{
		{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"agentfleets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"agentfleets/status"}, Verbs: []string{"get", "update", "patch"}},
	}, rules...)}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "operator", Namespace: e.ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "operator"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	e.apply(role, binding)
	cfg, err := cluster.User(user)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		e.t.Fatal(err)
	}
	r := fleet.NewDirectReconciler(c, c)
	r.Clock, r.Recorder = e.clock, e.events
	e.r = r
}

// grant adds rules to the limited operator's Role.
func (e *env) grant(rules ...rbacv1.PolicyRule) {
	e.t.Helper()
	role := &rbacv1.Role{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: "operator"}, role); err != nil {
		e.t.Fatal(err)
	}
	role.Rules = append(role.Rules, rules...)
	if err := k8s.Update(e.ctx, role); err != nil {
		e.t.Fatal(err)
	}
	// The API server's authorizer reads Roles through its own informer: a reconcile right after the
	// update may still be refused. Wait until it says yes, as a SubjectAccessReview shows it.
	for _, rule := range rules {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "operator-" + e.ns,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: e.ns, Group: rule.APIGroups[0], Resource: rule.Resources[0], Verb: rule.Verbs[0],
			},
		}}
		err := wait.PollUntilContextTimeout(e.ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			r := review.DeepCopy()
			if err := k8s.Create(ctx, r); err != nil {
				return false, err
			}
			return r.Status.Allowed, nil
		})
		if err != nil {
			e.t.Fatalf("the grant of %v did not take effect: %v", rule, err)
		}
	}
}

var readDeployments = rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch"}}

// A dependency the operator may not read, or whose kind is not served, stalls the fleet with a
// message that says what to grant or install; the reconcile succeeds and looks again in 5 minutes,
// since neither a grant nor a CRD wakes the fleet.
func TestDependencyStalls(t *testing.T) {
	type dep struct{ apiVersion, kind, name string }
	cases := map[string]struct {
		limited  bool // the operator may read fleets only
		deps     []dep
		reason   string
		messages []string
	}{
		"forbidden": {
			limited: true,
			deps:    []dep{{"apps/v1", "Deployment", "db"}},
			reason:  v1alpha1.ReasonDependencyForbidden,
			messages: []string{`spec.dependsOn[0] Deployment/db (apps/v1): the operator may not get deployments.apps "db" in namespace {ns}: ` +
				`grant get, list, watch on deployments.apps (see README "Dependencies and RBAC")`},
		},
		"forbidden, core group": {
			limited: true,
			deps:    []dep{{"v1", "Service", "vllm"}},
			reason:  v1alpha1.ReasonDependencyForbidden,
			messages: []string{`spec.dependsOn[0] Service/vllm (v1): the operator may not get services "vllm" in namespace {ns}: ` +
				`grant get, list, watch on services (see README`},
		},
		"kind of a group not served": {
			deps:     []dep{{"vectors.example.com/v1", "Index", "docs"}},
			reason:   v1alpha1.ReasonDependencyKindUnknown,
			messages: []string{"spec.dependsOn[0] Index/docs (vectors.example.com/v1): the API server serves no kind Index in vectors.example.com/v1: install its CRD"},
		},
		"kind not served in a served group": {
			deps:     []dep{{"apps/v1", "Deploymnet", "db"}},
			reason:   v1alpha1.ReasonDependencyKindUnknown,
			messages: []string{"serves no kind Deploymnet in apps/v1"},
		},
		"version not served": {
			deps:     []dep{{"apps/v9", "Deployment", "db"}},
			reason:   v1alpha1.ReasonDependencyKindUnknown,
			messages: []string{"serves no kind Deployment in apps/v9"},
		},
		"all listed, the first names the reason": {
			limited: true,
			deps:    []dep{{"apps/v1", "StatefulSet", "qdrant"}, {"vectors.example.com/v1", "Index", "docs"}, {"apps/v1", "Deployment", "db"}},
			reason:  v1alpha1.ReasonDependencyForbidden,
			messages: []string{
				`spec.dependsOn[0] StatefulSet/qdrant (apps/v1): the operator may not get statefulsets.apps "qdrant"`,
				"; spec.dependsOn[1] Index/docs (vectors.example.com/v1): the API server serves no kind Index",
				`; spec.dependsOn[2] Deployment/db (apps/v1): the operator may not get deployments.apps "db"`,
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			if tc.limited {
				e.limitedOperator()
			}
			f := e.fleet("agents")
			for _, d := range tc.deps {
				f.DependsOn(d.apiVersion, d.kind, d.name)
			}
			e.apply(f.Obj())

			if res := e.reconcile("agents"); res.RequeueAfter != 5*time.Minute {
				t.Errorf("requeue after %v, want 5m0s", res.RequeueAfter)
			}
			e.noRayCluster("agents")
			for _, msg := range tc.messages {
				msg = strings.ReplaceAll(msg, "{ns}", e.ns)
				e.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, tc.reason, msg)
				e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, tc.reason, msg)
			}
		})
	}
}

// Granting the permission is enough: the next look (the 5-minute recheck) goes on to the dependency.
func TestDependencyForbiddenThenGranted(t *testing.T) {
	e := newEnv(t)
	e.limitedOperator()
	e.apply(e.fleet("agents").DependsOn("apps/v1", "Deployment", "db").Obj())
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonDependencyForbidden, "grant get, list, watch on deployments.apps")

	e.grant(readDeployments)
	if res := e.reconcile("agents"); res.RequeueAfter != 0 {
		t.Errorf("requeue after %v, want none (the Deployment's events wake the fleet)", res.RequeueAfter)
	}
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonWaitingForDependencies, "waiting for Deployment db (not found)")
	for _, c := range e.get("agents").Status.Conditions {
		if c.Type == v1alpha1.ConditionStalled {
			t.Errorf("still Stalled after the grant: %+v", c)
		}
	}
}
