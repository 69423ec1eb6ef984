package fleet

import (
	"context"
	"fmt"
	"strconv"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/gpunode"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
)

// The verbs the operator uses and no more (the e2e suite checks each against the API server's audit
// log: test/e2e/rbacusage_test.go). What it reads through its cache needs list and watch, not get;
// get is for what it reads live (the APIReader: prompt ConfigMaps, Secrets' keys; dependencies).
// Leases: its own leader election, and what the agents' Role grants, which RBAC lets it grant only
// if it holds it.
// +kubebuilder:rbac:groups=agentfleet.dev,resources=agentfleets,verbs=list;watch
// +kubebuilder:rbac:groups=agentfleet.dev,resources=agentfleets/status,verbs=patch
// +kubebuilder:rbac:groups=ray.io,resources=rayclusters,verbs=list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=ray.io,resources=rayjobs,verbs=list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps;secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=list;watch;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets;replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=selfsubjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=list;watch;create;update
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=list;watch;create;update

// NewReconciler returns a Reconciler with the defaults of an operator: the real clock, a history of
// three finished RayJobs per job, the default GPU fault conditions, worker pods coming up batched.
func NewReconciler(c client.Client, apiReader client.Reader) *Reconciler {
	return &Reconciler{Client: c, APIReader: apiReader, Clock: clock.RealClock{}, JobHistoryLimit: 3, deletions: newDeletions(),
		GPUFaultConditions: gpunode.DefaultFaultConditionList(), ForceDeleteStrandedWorkers: true, PodComingUpBatch: DefaultPodComingUpBatch}
}

// podNodeIndex indexes the cached (agent) pods by their node.
const podNodeIndex = "spec.nodeName"

func indexPodNode(o client.Object) []string {
	if name := o.(*corev1.Pod).Spec.NodeName; name != "" {
		return []string{name}
	}
	return nil
}

// Indexes of a fleet's children in the cache, each named after the label it indexes: the one that
// names their fleet, and a pod's RayCluster. A fleet's List goes through one of them to its own
// objects: a label selector alone filters every cached object of the namespace, and with 500 fleets
// in one namespace that filtering was 45 % of the operator's CPU while they came up (make bench,
// converge --cpu-profile).
const (
	fleetIndex      = v1alpha1.LabelFleet         // pods, heartbeat Leases, RayClusters, RayJobs
	podClusterIndex = rayutils.RayClusterLabelKey // pods, by their RayCluster
)

// labelIndexes are the indexes named after the label they index.
var labelIndexes = []string{fleetIndex, podClusterIndex}

// indexLabel indexes an object by the value of one of its labels.
func indexLabel(key string) client.IndexerFunc {
	return func(o client.Object) []string {
		if v, ok := o.GetLabels()[key]; ok {
			return []string{v}
		}
		return nil
	}
}

// indexChildren registers the indexes of a fleet's children.
func indexChildren(ctx context.Context, indexer client.FieldIndexer) error {
	for _, obj := range []client.Object{&corev1.Pod{}, &coordinationv1.Lease{}, &rayv1.RayCluster{}, &rayv1.RayJob{}} {
		if err := indexer.IndexField(ctx, obj, fleetIndex, indexLabel(fleetIndex)); err != nil {
			return fmt.Errorf("indexing %T by %s: %w", obj, fleetIndex, err)
		}
	}
	if err := indexer.IndexField(ctx, &corev1.Pod{}, podClusterIndex, indexLabel(podClusterIndex)); err != nil {
		return fmt.Errorf("indexing pods by %s: %w", podClusterIndex, err)
	}
	return nil
}

// SetupWithManager registers the controller: it owns RayClusters and RayJobs, and is woken by the
// worker pods, the prompt ConfigMaps and Secrets (their metadata only: their contents are not
// cached), the GPU health of the nodes its GPU workers run on and, once seen, the kinds fleets
// depend on.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("agentfleet-controller")
	}
	if r.deletions == nil {
		r.deletions = newDeletions()
	}
	r.wake = make(chan event.TypedGenericEvent[*v1alpha1.AgentFleet], 1024)
	indexer := mgr.GetFieldIndexer()
	for name, fn := range map[string]client.IndexerFunc{dependencyIndex: indexDependencies, promptIndex: indexPrompt, secretIndex: indexSecrets} {
		if err := indexer.IndexField(ctx, &v1alpha1.AgentFleet{}, name, fn); err != nil {
			return fmt.Errorf("indexing fleets by %s: %w", name, err)
		}
	}
	if err := indexer.IndexField(ctx, &corev1.Pod{}, podNodeIndex, indexPodNode); err != nil {
		return fmt.Errorf("indexing pods by %s: %w", podNodeIndex, err)
	}
	if err := indexChildren(ctx, indexer); err != nil {
		return err
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.AgentFleet{}, builder.WithPredicates(r.ownStatusWritesIgnored())).
		Owns(&rayv1.RayCluster{}).
		Owns(&rayv1.RayJob{}).
		Owns(&corev1.ServiceAccount{}).
		Watches(&corev1.Pod{}, podEvents(r.PodComingUpBatch)).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(r.leaseToFleet)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.nodeToFleets), builder.WithPredicates(r.nodeGPUHealthChanged())).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.configMapToFleets)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.fleetsReferencing(secretIndex))).
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.fleetsInNamespace), builder.WithPredicates(gpuPolicyChanged())).
		WatchesRawSource(source.Channel(r.wake, &handler.TypedEnqueueRequestForObject[*v1alpha1.AgentFleet]{})).
		Named("agentfleet").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Build(r)
	if err != nil {
		return err
	}
	r.deps = &dependencyWatches{watched: map[schema.GroupVersionKind]bool{}, ctrl: c, cache: mgr.GetCache(), client: mgr.GetClient()}
	// The cache tells when it has delivered this process's status writes (expectations.go).
	fleets, err := mgr.GetCache().GetInformer(ctx, &v1alpha1.AgentFleet{})
	if err != nil {
		return fmt.Errorf("the AgentFleet informer: %w", err)
	}
	r.expectations = &statusExpectations{}
	if _, err := fleets.AddEventHandler(toolscache.ResourceEventHandlerFuncs{UpdateFunc: func(_, o any) {
		if f, ok := o.(*v1alpha1.AgentFleet); ok {
			r.expectations.observed(client.ObjectKeyFromObject(f), f.ResourceVersion)
		}
	}}); err != nil {
		return fmt.Errorf("watching the AgentFleet informer: %w", err)
	}
	return r.watchUsage(mgr)
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
		atLeast(a[heartbeatapi.AnnotationActionRepeats], hb.MaxRepeatedActions) || atLeast(a[heartbeatapi.AnnotationTaskSteps], f.MaxStepsPerTask()) {
		return reqs
	}
	return nil
}

func atLeast(value string, limit int32) bool {
	n, err := strconv.Atoi(value)
	return err == nil && limit > 0 && n >= int(limit)
}

// nodeGPUHealthChanged lets through only the node events that change what the fleets read of a
// node (gpunode.WorkerFault): nodes write their status every few seconds.
func (r *Reconciler) nodeGPUHealthChanged() predicate.Funcs {
	state := func(o client.Object) string {
		n, ok := o.(*corev1.Node)
		if !ok {
			return ""
		}
		return gpunode.WorkerFault(n, r.GPUFaultConditions)
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return state(e.Object) != "" },
		UpdateFunc:  func(e event.UpdateEvent) bool { return state(e.ObjectOld) != state(e.ObjectNew) },
		DeleteFunc:  func(event.DeleteEvent) bool { return false }, // its pods go, and wake their fleets
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// nodeToFleets maps a node to the fleets with GPU workers on it, through the index of the cached
// pods by node: as many pods as the node runs.
func (r *Reconciler) nodeToFleets(ctx context.Context, o client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingFields{podNodeIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the pods on a node", "Node", o.GetName())
		return nil
	}
	seen := sets.New[client.ObjectKey]()
	var reqs []reconcile.Request
	for i := range pods.Items {
		p := &pods.Items[i]
		for _, req := range podToFleet(ctx, p) {
			if supervisor.RequestsGPU(p) && !seen.Has(req.NamespacedName) {
				seen.Insert(req.NamespacedName)
				reqs = append(reqs, req)
			}
		}
	}
	return reqs
}

// fleetsReferencing maps an object to the fleets in its namespace whose index holds its name.
func (r *Reconciler) fleetsReferencing(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		return listFleets(ctx, r, o.GetNamespace(), client.MatchingFields{index: o.GetName()})
	}
}

// configMapToFleets maps a prompt ConfigMap to the fleets that reference it, and the GPU price
// table to every fleet: the new prices apply from each fleet's next observation, so each is
// observed now rather than at its next change.
func (r *Reconciler) configMapToFleets(ctx context.Context, o client.Object) []reconcile.Request {
	if p, ok := r.Prices.(*ConfigMapPrices); ok && client.ObjectKeyFromObject(o) == p.Key {
		return listFleets(ctx, r, "")
	}
	return r.fleetsReferencing(promptIndex)(ctx, o)
}

// fleetsInNamespace maps a Namespace to the fleets in it.
func (r *Reconciler) fleetsInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	return listFleets(ctx, r, o.GetName())
}

// listFleets lists the cached fleets of a namespace that match opts, as requests: what every mapper
// from another object to its fleets comes down to.
func listFleets(ctx context.Context, c client.Reader, namespace string, opts ...client.ListOption) []reconcile.Request {
	var fleets v1alpha1.AgentFleetList
	if err := c.List(ctx, &fleets, append([]client.ListOption{client.InNamespace(namespace)}, opts...)...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the fleets an object maps to", "namespace", namespace)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(fleets.Items))
	for i := range fleets.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&fleets.Items[i])})
	}
	return reqs
}

// gpuPolicyChanged passes the Namespace events that can change a fleet's GPU policy.
func gpuPolicyChanged() predicate.Funcs {
	policy := func(o client.Object) string {
		return o.GetLabels()[v1alpha1.LabelGPUAllowed] + "/" + o.GetAnnotations()[v1alpha1.AnnotationMaxGPUs]
	}
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false }, // a new namespace has no fleets yet
		UpdateFunc:  func(e event.UpdateEvent) bool { return policy(e.ObjectOld) != policy(e.ObjectNew) },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
