package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// observeWorkers lists the agent worker pods and works out which are already handed to KubeRay.
// Every later phase reads s.pods and s.pending.
func (r *Reconciler) observeWorkers(ctx context.Context, s *scope) error {
	if s.cluster == nil {
		return nil
	}
	pods, err := r.workerPods(ctx, s.cluster)
	if err != nil {
		return err
	}
	s.pods = pods
	s.pending = r.pendingDeletes(s.fleet, s.cluster, pods)
	return nil
}

// rayGroupLabel is KubeRay's label of a pod's worker group.
const rayGroupLabel = rayutils.RayNodeGroupLabelKey

// agentGroups selects the pods of the agent worker groups: the stable one and a canary's.
var agentGroups = func() labels.Requirement {
	req, err := labels.NewRequirement(rayGroupLabel, selection.In, []string{v1alpha1.WorkerGroup, v1alpha1.CanaryGroup})
	if err != nil {
		panic(err)
	}
	return *req
}()

// workerPods lists the agent worker pods of a RayCluster (both groups during a canary), sorted by
// name.
func (r *Reconciler) workerPods(ctx context.Context, rc *rayv1.RayCluster) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(rc.Namespace), client.MatchingFields{podClusterIndex: rc.Name},
		client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(agentGroups)}); err != nil {
		return nil, fmt.Errorf("listing the workers of RayCluster %s: %w", klog.KObj(rc), err)
	}
	items := pods.Items
	if items == nil {
		items = []corev1.Pod{} // observed, and none: nil is a pass that did not see them (computeStatus)
	}
	slices.SortFunc(items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return items, nil
}

// reconcileRollout plans the replacement of workers that run an outdated template (planRollout);
// the handover phase gives them to KubeRay through scaleStrategy.workersToDelete: KubeRay deletes
// them and, the replica count unchanged, creates replacements from the current template. KubeRay
// has no rolling update of its own.
func (r *Reconciler) reconcileRollout(_ context.Context, s *scope) error {
	if s.cluster == nil || s.fleet.Spec.Suspend {
		return nil
	}
	// Workers the supervisor replaces in this pass, or whose recorded replacement is handed over
	// again, are as good as gone: unavailable, and not the rollout's to hand over.
	pending := s.pending.Clone().Insert(s.inflight...)
	for _, rep := range s.replaced {
		pending.Insert(rep.Worker)
	}
	plan, err := planRollout(rolloutObservation{
		Pods: s.pods, Revision: rayspecs.WorkerHash(s.cluster), CanaryRevision: rayspecs.GroupHash(s.cluster, v1alpha1.CanaryGroup),
		Replicas:       s.fleet.WorkerReplicas(),
		MaxUnavailable: s.fleet.Spec.Rollout.MaxUnavailable, Pending: pending,
	})
	if err != nil {
		return err
	}
	s.rollout = plan
	return nil
}
