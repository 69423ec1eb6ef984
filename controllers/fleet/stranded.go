package fleet

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/controllers/supervisor"
)

// releaseStranded force-deletes the agent workers that Kubernetes is deleting and cannot finish
// deleting, their node's kubelet silent or the node gone (supervisor.FindStranded): KubeRay counts a
// terminating pod as a worker of its group, so a node that goes silent and is never deleted would
// leave the fleet short of its declared workers for good. The fleet's workers are stateless (the Ray
// head drops a worker it cannot reach) and a ReplicaSet would already have replaced them; the pod
// garbage collector does the same for a node with the out-of-service taint.
// --force-delete-stranded-workers=false turns it off. Not recorded as a restart: the worker did not
// fail, its node did, and the restart budget is the agents'. It runs on the workers the status
// observes, whichever phase held the fleet; a blue-green preview's workers are not its (they are
// not healed before the switch).
func (r *Reconciler) releaseStranded(ctx context.Context, s *scope) error {
	if !r.ForceDeleteStrandedWorkers || s.cluster == nil {
		return nil
	}
	nodes := map[string]*corev1.Node{}
	for _, p := range s.pods {
		if p.DeletionTimestamp.IsZero() || p.Spec.NodeName == "" {
			continue
		}
		if _, seen := nodes[p.Spec.NodeName]; seen {
			continue
		}
		n := &corev1.Node{}
		switch err := r.Get(ctx, client.ObjectKey{Name: p.Spec.NodeName}, n); {
		case apierrors.IsNotFound(err):
			nodes[p.Spec.NodeName] = nil
		case err != nil:
			return fmt.Errorf("reading node %s of worker %s: %w", p.Spec.NodeName, p.Name, err)
		default:
			nodes[p.Spec.NodeName] = n
		}
	}
	stranded, recheck := supervisor.FindStranded(s.now, s.pods, nodes)
	s.requeue(recheck)
	if len(stranded) == 0 {
		return nil
	}
	// The cache screened; the API server confirms the nodes before anything irreversible: a watch
	// behind can still show a node that just came back as silent.
	byName := make(map[string]*corev1.Pod, len(s.pods))
	for i := range s.pods {
		byName[s.pods[i].Name] = &s.pods[i]
	}
	confirmed := map[string]*corev1.Node{}
	candidates := make([]corev1.Pod, 0, len(stranded))
	for _, st := range stranded {
		candidates = append(candidates, *byName[st.Worker])
		if _, seen := confirmed[st.Node]; seen {
			continue
		}
		var list corev1.NodeList
		if err := r.APIReader.List(ctx, &list, client.MatchingFields{"metadata.name": st.Node}); err != nil {
			return fmt.Errorf("reading node %s of stranded worker %s: %w", st.Node, st.Worker, err)
		}
		confirmed[st.Node] = nil
		if len(list.Items) == 1 {
			confirmed[st.Node] = &list.Items[0]
		}
	}
	stranded, _ = supervisor.FindStranded(s.now, candidates, confirmed)
	var errs []error
	for _, st := range stranded {
		pod := byName[st.Worker]
		err := r.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: ptr.To(pod.UID)})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			continue // gone already, or another pod of the name
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("force-deleting the stranded worker %s: %w", klog.KObj(pod), err))
			continue
		}
		ctrl.LoggerFrom(ctx).Info("Force-deleted a stranded agent worker", "pod", klog.KObj(pod), "evidence", st.Evidence)
		r.event(s.fleet, corev1.EventTypeWarning, EventStrandedWorkerDeleted, "Force-deleted agent worker %s for KubeRay to replace: %s", st.Worker, st.Evidence)
	}
	return errors.Join(errs...)
}
