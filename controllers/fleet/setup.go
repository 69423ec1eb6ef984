package fleet

import (
	"context"
	"fmt"
	"strconv"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// +kubebuilder:rbac:groups=agentfleet.dev,resources=agentfleets,verbs=get;list;watch
// +kubebuilder:rbac:groups=agentfleet.dev,resources=agentfleets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ray.io,resources=rayclusters;rayjobs,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods;configmaps;secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets;replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=selfsubjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch

// NewReconciler returns a Reconciler with the defaults of an operator: the real clock, a history of
// three finished RayJobs per job.
func NewReconciler(c client.Client, apiReader client.Reader) *Reconciler {
	return &Reconciler{Client: c, APIReader: apiReader, Clock: clock.RealClock{}, JobHistoryLimit: 3, deletions: newDeletions()}
}

// SetupWithManager registers the controller: it owns RayClusters and RayJobs, and is woken by the
// worker pods, the prompt ConfigMaps and Secrets (their metadata only: their contents are not
// cached) and, once seen, the kinds fleets depend on.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("agentfleet-controller")
	}
	if r.deletions == nil {
		r.deletions = newDeletions()
	}
	indexer := mgr.GetFieldIndexer()
	for name, fn := range map[string]client.IndexerFunc{dependencyIndex: indexDependencies, promptIndex: indexPrompt, secretIndex: indexSecrets} {
		if err := indexer.IndexField(ctx, &v1alpha1.AgentFleet{}, name, fn); err != nil {
			return fmt.Errorf("indexing fleets by %s: %w", name, err)
		}
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.AgentFleet{}).
		Owns(&rayv1.RayCluster{}).
		Owns(&rayv1.RayJob{}).
		Owns(&corev1.ServiceAccount{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToFleet)).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(r.leaseToFleet)).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.fleetsReferencing(promptIndex))).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.fleetsReferencing(secretIndex))).
		Named("agentfleet").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Build(r)
	if err != nil {
		return err
	}
	r.deps = &dependencyWatches{watched: map[schema.GroupVersionKind]bool{}, ctrl: c, cache: mgr.GetCache(), client: mgr.GetClient()}
	return nil
}

// podToFleet maps an agent pod, or its heartbeat Lease, to its fleet by the label both carry.
func podToFleet(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[v1alpha1.LabelFleet]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// leaseToFleet wakes a fleet for a heartbeat Lease only when the Lease shows a loop: renewals are
// most of the operator's events (a thousand workers renewing every 10 s are 100 a second), and a
// stall is found by the timer set for the deadline, not by an event. A new or deleted Lease wakes
// the fleet too (the informer's delete event carries the last state; creation starts a worker's
// contract).
func (r *Reconciler) leaseToFleet(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := podToFleet(ctx, o)
	if len(reqs) == 0 {
		return nil
	}
	f := &v1alpha1.AgentFleet{}
	if err := r.Get(ctx, reqs[0].NamespacedName, f); err != nil || f.Spec.Health.Heartbeat == nil {
		return nil
	}
	hb := f.Spec.Health.Heartbeat
	a := o.GetAnnotations()
	if o.GetDeletionTimestamp() != nil || a[heartbeatapi.AnnotationSteps] == "" || a[heartbeatapi.AnnotationSteps] == "0" ||
		atLeast(a[heartbeatapi.AnnotationActionRepeats], hb.MaxRepeatedActions) || atLeast(a[heartbeatapi.AnnotationTaskSteps], hb.MaxStepsPerTask) {
		return reqs
	}
	return nil
}

func atLeast(value string, limit int32) bool {
	n, err := strconv.Atoi(value)
	return err == nil && limit > 0 && n >= int(limit)
}

// fleetsReferencing maps an object to the fleets in its namespace whose index holds its name.
func (r *Reconciler) fleetsReferencing(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var fleets v1alpha1.AgentFleetList
		if err := r.List(ctx, &fleets, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing the fleets that reference an object", "index", index)
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(fleets.Items))
		for _, f := range fleets.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&f)})
		}
		return reqs
	}
}
