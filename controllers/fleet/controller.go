// Package fleet is the AgentFleet controller: it turns a fleet into its RayCluster and RayJobs, rolls
// agent workers when what they run changes, and reports status computed from what it observes.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
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

	deps      *dependencyWatches
	deletions *deletions
}

// scope is one reconcile's state: the fleet, what the phases observed and decided.
type scope struct {
	fleet *v1alpha1.AgentFleet
	now   time.Time

	// blocked, when set, stops the phases after the one that set it.
	blocked *blocker
	prompt  *string

	desired *rayv1.RayCluster // what rayspecs built
	cluster *rayv1.RayCluster // as observed, after this reconcile's writes
	pods    []corev1.Pod      // the agent worker pods
	jobs    []v1alpha1.JobStatus

	// restarts are the replacements made in this reconcile; budgetExhausted says why others were not.
	restarts        []v1alpha1.RestartRecord
	budgetExhausted string

	requeueAfter time.Duration
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

// Reconcile runs the phases in order, stops at the first that blocks or fails, then writes the
// status computed from what was observed, once.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	fleet := &v1alpha1.AgentFleet{}
	if err := r.Get(ctx, req.NamespacedName, fleet); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !fleet.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the garbage collector deletes the children by owner reference
	}
	log := ctrl.LoggerFrom(ctx).WithValues("AgentFleet", klog.KObj(fleet))
	ctx = ctrl.LoggerInto(ctx, log)

	s := &scope{fleet: fleet, now: r.Clock.Now()}
	var err error
	for _, p := range []phase{
		r.reconcileDependencies, r.reconcileInputs, r.reconcileHeartbeatAccess, r.reconcileRayCluster,
		r.reconcileRollout, r.reconcileHealth, r.reconcileJobs,
	} {
		if err = p(ctx, s); err != nil || s.blocked != nil {
			break
		}
	}
	if s.cluster != nil && err == nil {
		// The pods are observed even when a phase blocked, so that status stays truthful.
		if s.pods == nil {
			s.pods, err = r.workerPods(ctx, s.cluster)
		}
	}
	if apierrors.IsConflict(err) {
		// Our cache is behind the server: the event of the newer object brings us back, and this
		// pass's observations are stale, so they are not written.
		log.V(1).Info("Conflict with a newer object; waiting for its event", "error", err.Error())
		return ctrl.Result{}, nil
	}
	if statusErr := r.writeStatus(ctx, s, err); statusErr != nil {
		if apierrors.IsConflict(statusErr) && err == nil {
			log.V(1).Info("Conflict writing the status; waiting for the newer fleet's event")
			return ctrl.Result{}, nil
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
	status := computeStatus(s, reconcileErr)
	if equality.Semantic.DeepEqual(s.fleet.Status, status) {
		return nil
	}
	patch := client.MergeFromWithOptions(s.fleet.DeepCopy(), client.MergeFromWithOptimisticLock{})
	s.fleet.Status = status
	if err := r.Status().Patch(ctx, s.fleet, patch); err != nil {
		return fmt.Errorf("writing the status of %s: %w", klog.KObj(s.fleet), err)
	}
	return nil
}

func (r *Reconciler) event(f *v1alpha1.AgentFleet, eventType, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(f, eventType, reason, format, args...)
	}
}

// isReady reports whether a pod is Ready and not being deleted.
func isReady(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// clusterCondition is the status of one of KubeRay's RayCluster conditions.
func clusterCondition(rc *rayv1.RayCluster, t rayv1.RayClusterConditionType) *metaCondition {
	c := meta.FindStatusCondition(rc.Status.Conditions, string(t))
	if c == nil {
		return nil
	}
	return &metaCondition{true: c.Status == "True", reason: c.Reason, message: c.Message}
}

type metaCondition struct {
	true            bool
	reason, message string
}
