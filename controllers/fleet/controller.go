// Package fleet is the AgentFleet controller: it turns a fleet into its RayCluster and RayJobs, rolls
// agent workers when what they run changes, and reports status computed from what it observes.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/gpunode"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/internal/cost"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// Reconciler reconciles AgentFleets.
type Reconciler struct {
	client.Client
	// APIReader reads what is not cached in full (prompt ConfigMaps: only their metadata is watched).
	APIReader client.Reader
	Recorder  record.EventRecorder
	Clock     clock.PassiveClock
	// Specs are the operator's settings for the builders.
	Specs rayspecs.Options
	// JobHistoryLimit is how many finished RayJobs of each job are kept.
	JobHistoryLimit int
	// MaxConcurrentReconciles: fleets are independent, so several are reconciled at once.
	MaxConcurrentReconciles int
	// GPUFaultConditions are the node conditions that mean a GPU fault (gpunode).
	GPUFaultConditions []gpunode.FaultCondition
	// Prices is where the GPU price table comes from; nil means cost.DefaultPrices.
	Prices PriceSource
	// Checks runs canaries' Prometheus checks (--prometheus-url); nil: none can run.
	Checks CheckQuerier
	// usage is the ledger of the agents' reported tasks and tokens (usage.go).
	usage *usage.Ledger
	// priceErr is the price table's last error, logged once (logPriceTable).
	priceErrMu sync.Mutex
	priceErr   string

	deps      *dependencyWatches
	deletions *deletions
	// wake queues reconciles of fleets the usage ledger finds need one (usage.go); taskTimers wake
	// them when a task would pass its duration budget.
	wake       chan event.TypedGenericEvent[*v1alpha1.AgentFleet]
	taskTimers taskTimers
	// outcomes are the task outcomes by revision of the fleets with a canary (canaryrollout.go).
	outcomes revisionOutcomes
	// expectations are this process's status writes its cache has not shown yet (nil: the reads
	// are not cached, as in the envtests).
	expectations *statusExpectations
	// StatusWriteInterval paces the writes of a fleet's progress (statusWriteDelay); 0 writes every
	// change at once (the envtests' synchronous reconciles).
	StatusWriteInterval time.Duration
	// ForceDeleteStrandedWorkers: workers terminating on a node that is not Ready are force-deleted
	// once past their grace period (releaseStranded).
	ForceDeleteStrandedWorkers bool
	// PodComingUpBatch is how long an event of a worker pod coming up waits before it wakes the
	// fleet (podEvents); 0 wakes it at once.
	PodComingUpBatch time.Duration
	statusWrites     statusWrites
}

// scope is one reconcile's state: the fleet, what the phases observed and decided.
type scope struct {
	fleet *v1alpha1.AgentFleet
	now   time.Time

	// blocked, when set, stops the phases after the one that set it.
	blocked *blocker
	prompt  *string

	desired *rayv1.RayCluster       // what rayspecs built, laid out for a canary (reconcileCanary)
	built   v1alpha1.RevisionStatus // the worker revision rayspecs built, before any layout
	// active is the fleet's RayCluster that runs its agents, as listed (nil: none yet); cluster is it
	// as observed after this reconcile's writes.
	active  *rayv1.RayCluster
	cluster *rayv1.RayCluster
	// activeVersion is the active RayCluster's resourceVersion as listed; preview: a blue-green
	// preview RayCluster exists beside it (or is being created).
	activeVersion string
	preview       bool
	pods          []corev1.Pod                     // the agent worker pods
	pending       sets.Set[string]                 // workers handed to KubeRay for deletion that still exist
	leases        map[string]*coordinationv1.Lease // heartbeat Leases by worker, once listed (heartbeatLeases)
	jobs          []v1alpha1.JobStatus

	// What the rollout and the supervisor decided, for the handover phase to write.
	rollout rolloutPlan
	// replaced are the replacements recorded in this reconcile; inflight are workers recorded as
	// replaced by an earlier pass that never handed them over. budgetExhausted says why unhealthy
	// workers were not replaced.
	replaced        []supervisor.Replacement
	inflight        []string
	budgetExhausted string
	// gpuNodes is what the nodes of the GPU workers say about their GPUs.
	gpuNodes nodeGPUs
	// budget is the fleet budget's verdict (nil until decided); usage is status.usage to write.
	budget *usage.FleetVerdict
	usage  *v1alpha1.UsageStatus
	// rolloutStatus is status.rollout as decided (rolloutDecided: the canary phase ran).
	rolloutStatus  *v1alpha1.RolloutStatus
	rolloutDecided bool
	// needsBlueGreen is why the spec's change of the head is not applied (reconcileBlueGreen).
	needsBlueGreen string
	// afterStatus are the Events of what this reconcile decided that the status records (a budget
	// crossed, a canary's phase): sent once the status says so, so that a pass whose status is not
	// written (a conflict) does not tell it twice.
	afterStatus []func()
	// prices is the price table, read once per reconcile (scopePrices).
	prices     cost.Prices
	pricesErr  error
	pricesRead bool

	requeueAfter time.Duration
	// status is the status this pass computed (writeStatus), nil until then.
	status *v1alpha1.AgentFleetStatus
}

// blocker is why a fleet cannot go further: a condition reason and a message for people.
type blocker struct {
	reason, message string
	// degraded: the fleet is broken (Degraded=True); otherwise it is waiting (Progressing=True).
	degraded bool
	// stalled: it will not recover without a change by a person (kstatus Stalled).
	stalled bool
}

func (s *scope) block(b blocker) { s.blocked = &b }

func (s *scope) requeue(after time.Duration) {
	if after > 0 && (s.requeueAfter == 0 || after < s.requeueAfter) {
		s.requeueAfter = after
	}
}

type phase func(context.Context, *scope) error

// conflictRequeue is how soon a reconcile that lost an optimistic-lock race runs again. The event of
// the newer object usually brings it back sooner; this makes sure nothing waits for one.
const conflictRequeue = 200 * time.Millisecond

// Reconcile runs the phases in order, stops at the first that blocks or fails, then writes the
// status computed from what was observed, once. Conflicts (our cache behind the server) are
// requeued, never dropped.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	fleet := &v1alpha1.AgentFleet{}
	if err := r.Get(ctx, req.NamespacedName, fleet); err != nil {
		if apierrors.IsNotFound(err) {
			r.deletions.forget(req.NamespacedName)
			r.expectations.forget(req.NamespacedName)
			r.statusWrites.forget(req.NamespacedName)
			forgetFleetGauges(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !fleet.DeletionTimestamp.IsZero() {
		r.deletions.forget(req.NamespacedName)
		r.expectations.forget(req.NamespacedName)
		r.statusWrites.forget(req.NamespacedName)
		forgetFleetGauges(req.NamespacedName)
		return ctrl.Result{}, nil // the garbage collector deletes the children by owner reference
	}
	if r.expectations.behind(req.NamespacedName, fleet.ResourceVersion, r.Clock.Now()) {
		// The cache is behind this process's last status write: decide once it caught up.
		return ctrl.Result{RequeueAfter: conflictRequeue}, nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("AgentFleet", klog.KObj(fleet))
	ctx = ctrl.LoggerInto(ctx, log)

	s := &scope{fleet: fleet, now: r.Clock.Now(), pending: sets.New[string]()}
	var err error
	for _, p := range []phase{
		r.decideBudget, r.reconcileDependencies, r.reconcileInputs, r.reconcileHeartbeatAccess, r.buildRayCluster, r.reconcileGPUPolicy,
		r.reconcileBlueGreen, r.reconcileCanary, r.reconcileRayCluster,
		// The supervisor decides before the rollout, so that the rollout's budget counts this pass's
		// replacements as unavailable.
		r.observeWorkers, r.reconcileHealth, r.reconcileRollout, r.reconcileHandover,
		r.reconcileLeases, r.removeHeartbeatServiceAccount, r.reconcileJobs,
	} {
		if err = p(ctx, s); err != nil || s.blocked != nil {
			break
		}
	}
	if s.cluster == nil && s.blocked != nil && err == nil {
		// Held before the RayCluster phase (an input gone, a dependency, the GPU policy): the
		// RayCluster that runs is left as it is, and the status still reports it and its workers.
		s.cluster, err = r.observeActiveCluster(ctx, s.fleet)
	}
	if s.cluster != nil && s.pods == nil && err == nil {
		// The pods are observed even when a phase blocked, so that status stays truthful.
		s.pods, err = r.workerPods(ctx, s.cluster)
	}
	if !apierrors.IsConflict(err) {
		err = errors.Join(err, r.reconcileLeaseDirectives(ctx, s), r.releaseStranded(ctx, s))
	}
	if s.cluster != nil && s.activeVersion != "" && s.activeVersion == s.cluster.ResourceVersion {
		// KubeRay behind a RayCluster this pass did not write (a write's own event brings the next
		// pass): look again when the fleet should say so, if KubeRay is still behind then.
		if lag, behind := kubeRayLag(s.cluster, s.now); behind && lag < kubeRayGrace {
			s.requeue(kubeRayGrace - lag)
		}
	}
	r.observeUsage(ctx, s)
	if apierrors.IsConflict(err) {
		// Our cache is behind the server: this pass's observations are stale, so they are not
		// written; the next pass reads the newer objects.
		log.V(1).Info("Conflict with a newer object; requeueing", "error", err.Error())
		return ctrl.Result{RequeueAfter: conflictRequeue}, nil
	}
	statusErr := r.writeStatus(ctx, s, err)
	if statusErr == nil {
		for _, send := range s.afterStatus {
			send()
		}
	}
	observed := s.fleet
	if s.status != nil {
		// The metrics follow what this pass computed, written or waiting (statusWriteDelay).
		shallow := *s.fleet
		shallow.Status = *s.status
		observed = &shallow
	}
	recordFleetMetrics(observed, r.meterGPUs(ctx, s))
	prices, _ := r.scopePrices(ctx, s)
	declareUsageSeries(s.fleet, prices)
	if statusErr != nil {
		if apierrors.IsConflict(statusErr) && err == nil {
			log.V(1).Info("Conflict writing the status; requeueing")
			return ctrl.Result{RequeueAfter: conflictRequeue}, nil
		}
		err = errors.Join(err, statusErr)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}, nil
}

// writeStatus computes the status from the scope and patches it if it changed, with an optimistic
// lock so that a stale read never overwrites a newer status.
func (r *Reconciler) writeStatus(ctx context.Context, s *scope, reconcileErr error) error {
	o := statusObservation{
		Now: s.now, Fleet: s.fleet, Cluster: s.cluster, Pods: s.pods, Jobs: s.jobs,
		Blocked: s.blocked, BudgetExhausted: s.budgetExhausted, Err: reconcileErr, GPUNodes: s.gpuNodes,
		Budget: s.budget, Usage: s.usage, Rollout: s.rolloutStatus, RolloutDecided: s.rolloutDecided, NeedsBlueGreen: s.needsBlueGreen,
	}
	o.PromptHash, o.DesiredRevision = s.built.PromptHash, s.built.Revision
	status := computeStatus(o)
	s.status = &status
	key := client.ObjectKeyFromObject(s.fleet)
	if equality.Semantic.DeepEqual(s.fleet.Status, status) {
		r.statusWrites.settled(key)
		return nil
	}
	waitingSince := r.statusWrites.progressWaiting(key)
	if wait := statusWriteDelay(&s.fleet.Status, &status, r.statusWrites.last(key), waitingSince, s.now, r.StatusWriteInterval); wait > 0 && len(s.afterStatus) == 0 && reconcileErr == nil {
		// Progress alone: written with the next change, or once it waited the interval. Not when
		// the pass failed: its requeue is the rate limiter's then, which may be minutes.
		r.statusWrites.heldBack(key, s.now)
		s.requeue(wait)
		return nil
	}
	patch := client.MergeFromWithOptions(s.fleet.DeepCopy(), client.MergeFromWithOptimisticLock{})
	s.fleet.Status = status
	if err := r.Status().Patch(ctx, s.fleet, patch); err != nil {
		return fmt.Errorf("writing the status of %s: %w", klog.KObj(s.fleet), err)
	}
	r.statusWritten(s, key)
	return nil
}

// statusWritten records a status write of this process (writeStatus', the restart ledger's): the
// next pass waits for the cache to show it (expectations.go), and the pacing counts from it.
func (r *Reconciler) statusWritten(s *scope, key client.ObjectKey) {
	r.expectations.expect(key, s.fleet.ResourceVersion, r.Clock.Now())
	r.statusWrites.wrote(key, s.now, s.fleet.ResourceVersion)
}

// eventAfterStatus sends an Event once the reconcile's status is written (scope.afterStatus).
func (r *Reconciler) eventAfterStatus(s *scope, eventType, reason, format string, args ...any) {
	f := s.fleet
	s.afterStatus = append(s.afterStatus, func() { r.event(f, eventType, reason, format, args...) })
}

func (r *Reconciler) event(f *v1alpha1.AgentFleet, eventType, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(f, eventType, reason, format, args...)
	}
}

// observeActiveCluster reads the RayCluster the fleet's status names as its active one, nil if the
// status names none (the fleet never ran), it is gone, or the fleet does not control it.
func (r *Reconciler) observeActiveCluster(ctx context.Context, f *v1alpha1.AgentFleet) (*rayv1.RayCluster, error) {
	name := f.Status.RayClusterName
	if name == "" {
		return nil, nil
	}
	rc := &rayv1.RayCluster{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: name}, rc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading RayCluster %s/%s: %w", f.Namespace, name, err)
	}
	if !metav1.IsControlledBy(rc, f) || !rc.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return rc, nil
}
