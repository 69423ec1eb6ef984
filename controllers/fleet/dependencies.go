package fleet

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

const (
	// dependencyRecheck is how often a fleet held by a dependency it may not read, or whose kind is
	// not served, looks again: granting RBAC or installing a CRD sends the fleet no event.
	dependencyRecheck = 5 * time.Minute

	// maxDependencyKinds caps the informers started for dependency kinds: each one caches every
	// object of its kind in the cluster. Kinds beyond the cap are not watched; their fleets poll
	// them every dependencyPoll instead, which costs a GET per dependency and poll.
	maxDependencyKinds = 32

	// rbacHint points people at the README section that says how to grant the operator more kinds.
	rbacHint = `see README "Dependencies and RBAC"`
)

// reconcileDependencies holds the fleet until every dependsOn object is Current by kstatus (the
// readiness rules Flux and cli-utils use for any kind). Until then no RayCluster exists. A dependency
// the operator may not read, or whose kind the API server does not serve, stalls the fleet with a
// message that says what to install or grant; it is looked at again every dependencyRecheck, and is
// never a reconcile error, which would retry it in a hot loop.
func (r *Reconciler) reconcileDependencies(ctx context.Context, s *scope) error {
	var stalled []blocker
	var waiting, failed []string
	poll := false // a dependency kind is not watched: read it again soon
	for i, d := range s.fleet.Spec.DependsOn {
		ref := fmt.Sprintf("spec.dependsOn[%d] %s/%s (%s)", i, d.Kind, d.Name, d.APIVersion)
		gv, err := schema.ParseGroupVersion(d.APIVersion)
		if err != nil {
			stalled = append(stalled, blocker{reason: v1alpha1.ReasonDependencyKindUnknown,
				message: fmt.Sprintf("%s: apiVersion: %v", ref, err)})
			continue
		}
		gvk := gv.WithKind(d.Kind)
		// On a miss controller-runtime's dynamic RESTMapper asks discovery for the group version
		// again, so a CRD installed later is found at the next recheck.
		mapping, err := r.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			if meta.IsNoMatchError(err) {
				stalled = append(stalled, blocker{reason: v1alpha1.ReasonDependencyKindUnknown,
					message: fmt.Sprintf("%s: the API server serves no kind %s in %s: install its CRD or fix apiVersion", ref, d.Kind, d.APIVersion)})
				continue
			}
			return fmt.Errorf("mapping %s: %w", gvk, err)
		}
		gr := mapping.Resource.GroupResource()
		// Watched (or polled) before it is read: a dependency that does not exist yet must wake the
		// fleet when it appears.
		if !r.deps.watch(ctx, gvk, gr, s.now) {
			poll = true
		}

		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		name := d.Kind + " " + d.Name
		if err := r.Get(ctx, client.ObjectKey{Namespace: s.fleet.Namespace, Name: d.Name}, u); err != nil {
			switch {
			case apierrors.IsNotFound(err):
				waiting = append(waiting, name+" (not found)")
			case apierrors.IsForbidden(err):
				where := ""
				if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
					where = " in namespace " + s.fleet.Namespace
				}
				stalled = append(stalled, blocker{reason: v1alpha1.ReasonDependencyForbidden,
					message: fmt.Sprintf("%s: the operator may not get %s %q%s: grant get, list, watch on %s (%s)", ref, gr, d.Name, where, gr, rbacHint)})
			default:
				return fmt.Errorf("reading dependency %s: %w", name, err)
			}
			continue
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
	case len(stalled) > 0:
		// The first reason names the condition; every message is kept, so that one read of the
		// status lists all the permissions and CRDs missing.
		messages := make([]string, 0, len(stalled))
		for _, b := range stalled {
			messages = append(messages, b.message)
		}
		s.block(blocker{reason: stalled[0].reason, degraded: true, stalled: true, message: strings.Join(messages, "; ")})
		s.requeue(dependencyRecheck) // not polled: only RBAC or a CRD can change this
		return nil
	case len(failed) > 0:
		s.block(blocker{reason: v1alpha1.ReasonDependencyFailed, degraded: true,
			message: "dependencies failed: " + strings.Join(failed, "; ")})
	case len(waiting) > 0:
		s.block(blocker{reason: v1alpha1.ReasonWaitingForDependencies,
			message: "waiting for " + strings.Join(waiting, "; ")})
	}
	if poll {
		s.requeue(dependencyPoll)
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

// watchStarter starts a watch on a running controller (controller.Controller is one).
type watchStarter interface {
	Watch(src source.Source) error
}

// dependencyWatches adds a watch for each kind fleets depend on, the first time one is seen, so that
// a dependency turning healthy wakes its fleets; dependsOn names any kind, so these cannot be
// declared up front. One informer per kind, shared by all fleets, at most maxDependencyKinds.
//
// A watch is started only for a kind the operator may list and watch cluster-wide (asked with a
// SelfSubjectAccessReview): controller-runtime's source.Kind for a kind it may not list adds an
// informer to the shared cache whose reflector retries the list forever, logging each failure, and
// a goroutine that waits for that informer to sync until the operator stops. Such a kind is polled
// instead and its access asked again after dependencyRecheck, so that a grant starts its watch.
//
// Nil (in synchronous tests, without a manager) watches nothing and polls nothing.
type dependencyWatches struct {
	mu      sync.Mutex
	watched map[schema.GroupVersionKind]bool
	// denied holds when the kinds the operator may not list and watch were last asked about.
	denied    map[schema.GroupVersionKind]time.Time
	capLogged bool

	ctrl   watchStarter
	cache  cache.Cache
	client client.Client
}

// watchPlan is what to do about the watch of one dependency kind.
type watchPlan string

const (
	watchExisting   watchPlan = "Existing"   // an informer is running
	watchStart      watchPlan = "Start"      // ask whether the operator may list and watch, then start one
	watchPollCap    watchPlan = "PollCap"    // maxDependencyKinds are watched already: poll
	watchPollDenied watchPlan = "PollDenied" // denied less than dependencyRecheck ago: poll
)

// planWatch decides about the watch of a kind from whether it is watched, how many kinds are,
// and when the operator was last denied it (zero: never).
func planWatch(watched bool, nWatched int, deniedAt, now time.Time) watchPlan {
	switch {
	case watched:
		return watchExisting
	case nWatched >= maxDependencyKinds:
		return watchPollCap
	case !deniedAt.IsZero() && now.Sub(deniedAt) < dependencyRecheck:
		return watchPollDenied
	default:
		return watchStart
	}
}

// watch makes sure the kind gvk (resource gr) is watched if it may be, and reports whether it is;
// if not, the caller polls.
func (w *dependencyWatches) watch(ctx context.Context, gvk schema.GroupVersionKind, gr schema.GroupResource, now time.Time) bool {
	if w == nil {
		return true
	}
	w.mu.Lock()
	plan := w.planLocked(ctx, gvk, now)
	w.mu.Unlock()
	if plan != watchStart {
		return plan == watchExisting
	}

	// Asked without the lock: reconciles of other fleets need not wait for the API server.
	log := ctrl.LoggerFrom(ctx).WithValues("kind", gvk.String())
	missing, err := w.missingVerbs(ctx, gr)
	if err != nil {
		log.Error(err, "Cannot ask whether the operator may watch a dependency kind; polling it")
		return false
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if len(missing) > 0 {
		if _, seen := w.denied[gvk]; !seen {
			log.Info("The operator may not watch a dependency kind; polling it", "resource", gr.String(),
				"missingVerbs", missing, "hint", rbacHint)
		}
		w.denied[gvk] = now
		return false
	}
	delete(w.denied, gvk)
	// Planned again: another reconcile may have started the watch, or filled the cap, meanwhile.
	if plan := w.planLocked(ctx, gvk, now); plan != watchStart {
		return plan == watchExisting
	}
	// Metadata only: the event is all the watch is for (the dependency itself is read from the API
	// server, unstructured objects are not cached), and a dependsOn on a Secret or a Pod must not
	// cache every Secret's contents or every Pod of the cluster. A status change changes the
	// resourceVersion, so metadata events still come for it.
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	if err := w.ctrl.Watch(source.Kind[client.Object](w.cache, m, handler.EnqueueRequestsFromMapFunc(w.fleetsDependingOn(gvk)))); err != nil {
		log.Error(err, "Cannot watch a dependency kind; polling it")
		return false
	}
	w.watched[gvk] = true
	log.V(1).Info("Watching a dependency kind", "watchedKinds", len(w.watched))
	return true
}

// planLocked plans the watch of gvk, and says once when kinds start being polled for the cap.
func (w *dependencyWatches) planLocked(ctx context.Context, gvk schema.GroupVersionKind, now time.Time) watchPlan {
	if w.watched == nil {
		w.watched = map[schema.GroupVersionKind]bool{}
	}
	if w.denied == nil {
		w.denied = map[schema.GroupVersionKind]time.Time{}
	}
	plan := planWatch(w.watched[gvk], len(w.watched), w.denied[gvk], now)
	if plan == watchPollCap && !w.capLogged {
		w.capLogged = true
		ctrl.LoggerFrom(ctx).Info("Dependency kinds beyond the cap are polled, not watched",
			"maxDependencyKinds", maxDependencyKinds, "kind", gvk.String())
	}
	return plan
}

// missingVerbs are the verbs of list and watch, cluster-wide, that the operator may not use on gr:
// what its informers need.
func (w *dependencyWatches) missingVerbs(ctx context.Context, gr schema.GroupResource) ([]string, error) {
	var missing []string
	for _, verb := range []string{"list", "watch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: gr.Group, Resource: gr.Resource},
		}}
		if err := w.client.Create(ctx, review); err != nil {
			return nil, fmt.Errorf("asking whether the operator may %s %s: %w", verb, gr, err)
		}
		if !review.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	return missing, nil
}

// fleetsDependingOn maps an object of kind gvk to the fleets in its namespace that depend on it.
func (w *dependencyWatches) fleetsDependingOn(gvk schema.GroupVersionKind) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		return listFleets(ctx, w.client, o.GetNamespace(), client.MatchingFields{dependencyIndex: dependencyKey(gvk.Group, gvk.Kind, o.GetName())})
	}
}
