package fleet

import (
	"context"
	"fmt"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// reconcileDependencies holds the fleet until every dependsOn object is Current by kstatus (the
// readiness rules Flux and cli-utils use for any kind). Until then no RayCluster exists.
func (r *Reconciler) reconcileDependencies(ctx context.Context, s *scope) error {
	var waiting, failed []string
	for i, d := range s.fleet.Spec.DependsOn {
		gv, err := schema.ParseGroupVersion(d.APIVersion)
		if err != nil {
			s.block(blocker{reason: v1alpha1.ReasonUnknownDependencyKind, degraded: true, stalled: true,
				message: fmt.Sprintf("spec.dependsOn[%d]: apiVersion %q: %v", i, d.APIVersion, err)})
			return nil
		}
		gvk := gv.WithKind(d.Kind)
		if _, err := r.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			if meta.IsNoMatchError(err) {
				s.block(blocker{reason: v1alpha1.ReasonUnknownDependencyKind, degraded: true, stalled: true,
					message: fmt.Sprintf("spec.dependsOn[%d]: the API server serves no kind %s in %s", i, d.Kind, d.APIVersion)})
				return nil
			}
			return fmt.Errorf("mapping %s: %w", gvk, err)
		}
		if err := r.deps.watch(ctx, gvk); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Cannot watch a dependency kind; falling back to polling", "kind", gvk.String())
			s.requeue(dependencyPoll)
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		name := d.Kind + " " + d.Name
		if err := r.Get(ctx, client.ObjectKey{Namespace: s.fleet.Namespace, Name: d.Name}, u); err != nil {
			if apierrors.IsNotFound(err) {
				waiting = append(waiting, name+" (not found)")
				continue
			}
			return fmt.Errorf("reading dependency %s: %w", name, err)
		}
		res, err := status.Compute(u)
		if err != nil {
			return fmt.Errorf("computing the status of dependency %s: %w", name, err)
		}
		switch res.Status {
		case status.CurrentStatus:
		case status.FailedStatus:
			failed = append(failed, fmt.Sprintf("%s (%s)", name, res.Message))
		default:
			waiting = append(waiting, fmt.Sprintf("%s (%s: %s)", name, res.Status, res.Message))
		}
	}
	switch {
	case len(failed) > 0:
		s.block(blocker{reason: v1alpha1.ReasonDependencyFailed, degraded: true,
			message: "dependencies failed: " + strings.Join(failed, "; ")})
	case len(waiting) > 0:
		s.block(blocker{reason: v1alpha1.ReasonWaitingForDependencies,
			message: "waiting for " + strings.Join(waiting, "; ")})
	}
	return nil
}

// dependencyIndex indexes fleets by "<group>/<kind>/<name>" of each dependsOn entry.
const dependencyIndex = "agentfleet.dev/depends-on"

func dependencyKey(group, kind, name string) string { return group + "/" + kind + "/" + name }

func indexDependencies(o client.Object) []string {
	f := o.(*v1alpha1.AgentFleet)
	keys := make([]string, 0, len(f.Spec.DependsOn))
	for _, d := range f.Spec.DependsOn {
		gv, err := schema.ParseGroupVersion(d.APIVersion)
		if err != nil {
			continue
		}
		keys = append(keys, dependencyKey(gv.Group, d.Kind, d.Name))
	}
	return keys
}

// dependencyWatches adds a watch for each kind fleets depend on, the first time one is seen, so that
// a dependency turning healthy wakes its fleets; dependsOn names any kind, so these cannot be
// declared up front. Nil (in synchronous tests, without a manager) watches nothing.
type dependencyWatches struct {
	mu      sync.Mutex
	watched map[schema.GroupVersionKind]bool
	ctrl    controller.Controller
	cache   cache.Cache
	client  client.Client
}

func (w *dependencyWatches) watch(_ context.Context, gvk schema.GroupVersionKind) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.watched[gvk] {
		return nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	mapToFleets := func(ctx context.Context, o client.Object) []reconcile.Request {
		var fleets v1alpha1.AgentFleetList
		if err := w.client.List(ctx, &fleets, client.InNamespace(o.GetNamespace()),
			client.MatchingFields{dependencyIndex: dependencyKey(gvk.Group, gvk.Kind, o.GetName())}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing the fleets that depend on an object")
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(fleets.Items))
		for _, f := range fleets.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&f)})
		}
		return reqs
	}
	if err := w.ctrl.Watch(source.Kind[client.Object](w.cache, u, handler.EnqueueRequestsFromMapFunc(mapToFleets))); err != nil {
		return fmt.Errorf("watching %s: %w", gvk, err)
	}
	w.watched[gvk] = true
	return nil
}
