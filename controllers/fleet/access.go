package fleet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// reconcileHeartbeatAccess gives the workers of a fleet with a heartbeat contract what they need to
// keep their Leases, and nothing more: a ServiceAccount, and a Role allowing get, create, update and
// patch on Leases in the fleet's namespace, bound to it.
func (r *Reconciler) reconcileHeartbeatAccess(ctx context.Context, s *scope) error {
	f := s.fleet
	if f.Spec.Health.Heartbeat == nil {
		return nil
	}
	name := rayspecs.HeartbeatServiceAccount(f)
	objectMeta := metav1.ObjectMeta{Name: name, Namespace: f.Namespace}
	sa := &corev1.ServiceAccount{ObjectMeta: objectMeta}
	role := &rbacv1.Role{ObjectMeta: objectMeta}
	binding := &rbacv1.RoleBinding{ObjectMeta: objectMeta}
	if err := r.ensure(ctx, f, sa, func() {}); err != nil {
		return err
	}
	if err := r.ensure(ctx, f, role, func() {
		role.Rules = []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update", "patch"}}}
	}); err != nil {
		return err
	}
	return r.ensure(ctx, f, binding, func() {
		binding.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
		binding.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: f.Namespace}}
	})
}

// ensure creates or updates an object the fleet owns, labelled with the fleet.
func (r *Reconciler) ensure(ctx context.Context, f *v1alpha1.AgentFleet, obj client.Object, mutate func()) error {
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
		mutate()
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[v1alpha1.LabelFleet] = f.Name
		obj.SetLabels(labels)
		return controllerutil.SetControllerReference(f, obj, r.Scheme())
	})
	if err != nil {
		return fmt.Errorf("%T %s for the heartbeat: %w", obj, klog.KObj(obj), err)
	}
	return nil
}
