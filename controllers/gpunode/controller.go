package gpunode

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/agentfleet/agentfleet/gpu"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=list;watch;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Event reasons, on the Node.
const (
	EventGPUFaultLabelled = "GPUFaultLabelled"
	EventGPUFaultCleared  = "GPUFaultCleared"
)

// conflictRequeue is how soon a node whose label write lost a race (with the agent, or a person) is
// looked at again.
const conflictRequeue = 200 * time.Millisecond

// Reconciler labels GPU nodes without the GPU health agent agentfleet.dev/gpu-health=unhealthy
// while they have a GPU fault condition, and removes the label it set once the condition clears.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// FaultConditions are the node conditions that mean a GPU fault.
	FaultConditions []FaultCondition
	// LabelFaultyNodes: label faulty nodes. Off, the labels this operator set are removed.
	LabelFaultyNodes bool
}

// NewReconciler returns a Reconciler with the default fault conditions, labelling on.
func NewReconciler(c client.Client) *Reconciler {
	return &Reconciler{Client: c, FaultConditions: DefaultFaultConditionList(), LabelFaultyNodes: true}
}

// Reconcile reads the node, plans the change to its label (planLabel) and writes it.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	n := &corev1.Node{}
	if err := r.Get(ctx, req.NamespacedName, n); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	change := planLabel(n, r.FaultConditions, r.LabelFaultyNodes)
	if change == labelKeep {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("Node", klog.KObj(n))
	_, evidence := Fault(n, r.FaultConditions)
	updated := n.DeepCopy()
	switch change {
	case labelSet:
		if updated.Labels == nil {
			updated.Labels = map[string]string{}
		}
		if updated.Annotations == nil {
			updated.Annotations = map[string]string{}
		}
		updated.Labels[gpu.HealthLabel] = gpu.HealthUnhealthy
		updated.Annotations[gpu.HealthSetByAnnotation] = gpu.HealthSetByOperator
	case labelRemove:
		delete(updated.Labels, gpu.HealthLabel)
		delete(updated.Annotations, gpu.HealthSetByAnnotation)
	case labelDisown:
		delete(updated.Annotations, gpu.HealthSetByAnnotation)
	}
	// The optimistic lock: the agent or a person may write the label at the same moment, and a label
	// is removed only if it is still the one this operator set.
	if err := r.Patch(ctx, updated, client.MergeFromWithOptions(n, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			log.V(1).Info("Conflict writing the GPU health label; requeueing")
			return ctrl.Result{RequeueAfter: conflictRequeue}, nil
		}
		return ctrl.Result{}, fmt.Errorf("writing the GPU health label of node %s: %w", n.Name, err)
	}
	switch change {
	case labelSet:
		log.Info("Labelled a node with a GPU fault", "label", gpu.HealthLabel+"="+gpu.HealthUnhealthy, "evidence", evidence)
		r.event(updated, corev1.EventTypeWarning, EventGPUFaultLabelled, "GPU fault: %s; labelled %s=%s so that new agent workers avoid the node",
			evidence, gpu.HealthLabel, gpu.HealthUnhealthy)
	case labelRemove:
		log.Info("Removed the GPU health label: the fault cleared", "label", gpu.HealthLabel)
		r.event(updated, corev1.EventTypeNormal, EventGPUFaultCleared, "GPU fault cleared; removed the label %s", gpu.HealthLabel)
	case labelDisown:
		log.Info("The GPU health label is no longer this operator's", "label", gpu.HealthLabel, "value", updated.Labels[gpu.HealthLabel])
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) event(n *corev1.Node, eventType, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(n, eventType, reason, format, args...)
	}
}

// SetupWithManager registers the controller. Nodes update their status every few seconds; only a
// change of what planLabel reads wakes it.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("agentfleet-gpunode")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Node{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				old, cur := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
				return old == nil || cur == nil || r.state(old) != r.state(cur)
			},
			DeleteFunc: func(event.DeleteEvent) bool { return false },
		})).
		Named("gpunode").
		Complete(r)
}

// state is what of a node planLabel reads.
func (r *Reconciler) state(n *corev1.Node) string {
	_, evidence := Fault(n, r.FaultConditions)
	return fmt.Sprint(IsGPUNode(n), HasAgent(n), evidence, n.Labels[gpu.HealthLabel], labelledByOperator(n))
}
