package fleet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// The access of heartbeat workers is removed when a fleet turns heartbeats off.
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=delete

// reconcileHeartbeatAccess gives the workers of a fleet with a heartbeat contract what they need to
// keep their Leases, and nothing more: a ServiceAccount, and a Role allowing get, create, update and
// patch on Leases in the fleet's namespace, bound to it. A fleet without one has none of them.
func (r *Reconciler) reconcileHeartbeatAccess(ctx context.Context, s *scope) error {
	f := s.fleet
	name := rayspecs.HeartbeatServiceAccount(f)
	objectMeta := metav1.ObjectMeta{Name: name, Namespace: f.Namespace}
	sa := &corev1.ServiceAccount{ObjectMeta: objectMeta}
	role := &rbacv1.Role{ObjectMeta: objectMeta}
	binding := &rbacv1.RoleBinding{ObjectMeta: objectMeta}
	if f.Spec.Health.Heartbeat == nil {
		return r.removeHeartbeatAccess(ctx, f, sa, role, binding)
	}
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

// removeHeartbeatAccess deletes the RoleBinding and the Role the fleet made for its heartbeats. The
// ServiceAccount stays while workers still run as it: they are rolled off it a batch at a time, and
// deleting it would invalidate the tokens of those not yet rolled (removeHeartbeatServiceAccount
// deletes it once none does).
//
// The ServiceAccount is made first and deleted last, so that without one there is nothing to delete:
// a fleet that never had heartbeats costs one read of the cache of ServiceAccounts, which the
// controller watches anyway, and starts no informer of Roles.
func (r *Reconciler) removeHeartbeatAccess(ctx context.Context, f *v1alpha1.AgentFleet, sa *corev1.ServiceAccount, role *rbacv1.Role, binding *rbacv1.RoleBinding) error {
	if err := r.Get(ctx, client.ObjectKeyFromObject(sa), sa); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading ServiceAccount %s: %w", klog.KObj(sa), err)
	}
	if !metav1.IsControlledBy(sa, f) {
		return nil // not ours: neither are a Role and RoleBinding of that name
	}
	// The binding first: without it the Role grants nothing, whatever fails after.
	for _, o := range []struct {
		kind string
		obj  client.Object
	}{{"RoleBinding", binding}, {"Role", role}} {
		if err := r.deleteControlled(ctx, f, o.kind, o.obj); err != nil {
			return err
		}
	}
	return nil
}

// removeHeartbeatServiceAccount deletes the workers' heartbeat ServiceAccount of a fleet without
// heartbeats once no worker pod runs as it any more.
func (r *Reconciler) removeHeartbeatServiceAccount(ctx context.Context, s *scope) error {
	f := s.fleet
	if f.Spec.Health.Heartbeat != nil || s.cluster == nil {
		return nil
	}
	name := rayspecs.HeartbeatServiceAccount(f)
	for i := range s.pods {
		if s.pods[i].Spec.ServiceAccountName == name {
			return nil // workers not yet rolled off it still use its tokens
		}
	}
	return r.deleteControlled(ctx, f, "ServiceAccount", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.Namespace}})
}

// deleteControlled deletes an object if the fleet controls it: one of the same name that someone
// else made is left alone, and the UID precondition spares one made since it was read.
func (r *Reconciler) deleteControlled(ctx context.Context, f *v1alpha1.AgentFleet, kind string, obj client.Object) error {
	if err := r.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading %s %s: %w", kind, klog.KObj(obj), err)
	}
	if !metav1.IsControlledBy(obj, f) {
		return nil
	}
	if err := r.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting %s %s of a fleet without heartbeats: %w", kind, klog.KObj(obj), err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted the heartbeat access of a fleet without heartbeats", kind, klog.KObj(obj))
	return nil
}
