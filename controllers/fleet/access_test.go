package fleet_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// A fleet with heartbeats gets a ServiceAccount for its workers that may keep Leases and nothing
// else; when it turns heartbeats off, the access goes with them.
func TestHeartbeatAccessComesAndGoesWithTheContract(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("hb").Heartbeat(10, 60, 20, 500).Obj())
	e.reconcile("hb")

	key := client.ObjectKey{Namespace: e.ns, Name: "hb-agent"}
	var sa corev1.ServiceAccount
	if err := k8s.Get(e.ctx, key, &sa); err != nil {
		t.Fatalf("ServiceAccount %s: %v", key, err)
	}
	var role rbacv1.Role
	if err := k8s.Get(e.ctx, key, &role); err != nil {
		t.Fatalf("Role %s: %v", key, err)
	}
	wantRules := []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update", "patch"}}}
	if diff := cmp.Diff(wantRules, role.Rules); diff != "" {
		t.Errorf("Role rules (-want +got):\n%s", diff)
	}
	var binding rbacv1.RoleBinding
	if err := k8s.Get(e.ctx, key, &binding); err != nil {
		t.Fatalf("RoleBinding %s: %v", key, err)
	}
	if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "hb-agent"}, binding.RoleRef); diff != "" {
		t.Errorf("RoleBinding roleRef (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "hb-agent", Namespace: e.ns}}, binding.Subjects); diff != "" {
		t.Errorf("RoleBinding subjects (-want +got):\n%s", diff)
	}
	if got := workerServiceAccount(e, "hb"); got != "hb-agent" {
		t.Errorf("workers run as %q, want hb-agent", got)
	}

	// A worker still runs as the ServiceAccount when heartbeats are turned off (it is rolled later).
	old := e.workers(e.rayCluster("hb"), 1, "0ldhash0000000", true)[0]
	pod := &corev1.Pod{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: old}, pod); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: old, Namespace: e.ns, Labels: pod.Labels},
		Spec: corev1.PodSpec{ServiceAccountName: "hb-agent", Containers: pod.Spec.Containers}}
	e.apply(pod)

	f := e.get("hb")
	f.Spec.Health.Heartbeat = nil
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("hb")
	for _, obj := range []client.Object{&rbacv1.RoleBinding{}, &rbacv1.Role{}} {
		if err := k8s.Get(e.ctx, key, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s after heartbeats were turned off: err = %v, want NotFound", obj, key, err)
		}
	}
	if got := workerServiceAccount(e, "hb"); got != "" {
		t.Errorf("workers run as %q after heartbeats were turned off, want the default", got)
	}
	if err := k8s.Get(e.ctx, key, &corev1.ServiceAccount{}); err != nil {
		t.Errorf("ServiceAccount %s deleted while worker %s still runs as it (its token would stop working): %v", key, old, err)
	}

	// Once no worker runs as it, it goes too.
	if err := k8s.Delete(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	e.reconcile("hb")
	if err := k8s.Get(e.ctx, key, &corev1.ServiceAccount{}); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceAccount %s after its last worker went: err = %v, want NotFound", key, err)
	}
}

// Objects of the same names that the fleet does not control are not its to delete.
func TestHeartbeatAccessOfOthersIsLeftAlone(t *testing.T) {
	e := newEnv(t)
	meta := metav1.ObjectMeta{Name: "plain-agent", Namespace: e.ns}
	others := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: meta},
		&rbacv1.Role{ObjectMeta: meta},
		&rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "plain-agent"}},
	}
	e.apply(others...)
	e.apply(e.fleet("plain").Obj())
	e.reconcile("plain")
	for _, obj := range others {
		if err := k8s.Get(e.ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Errorf("%T %s that the fleet does not own: %v, want it kept", obj, client.ObjectKeyFromObject(obj), err)
		}
	}
}

func workerServiceAccount(e *env, fleet string) string {
	e.t.Helper()
	for _, g := range e.rayCluster(fleet).Spec.WorkerGroupSpecs {
		if g.GroupName == v1alpha1.WorkerGroup {
			return g.Template.Spec.ServiceAccountName
		}
	}
	e.t.Fatalf("RayCluster %s has no worker group %s", fleet, v1alpha1.WorkerGroup)
	return ""
}
