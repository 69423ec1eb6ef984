package fleet

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch

// reconcileGPUPolicy holds a fleet that asks for more GPUs than its namespace allows, by the same
// rules as the ValidatingAdmissionPolicy in config/policy (see gpuPolicyVerdict): admission refuses
// such a fleet before it is stored, and this makes the rule hold for a fleet stored before the
// policy was installed, or while it was unbound. No RayCluster is created or updated for it; one that
// already runs is left as it is, for a person to decide.
func (r *Reconciler) reconcileGPUPolicy(ctx context.Context, s *scope) error {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, client.ObjectKey{Name: s.fleet.Namespace}, ns); err != nil {
		return fmt.Errorf("reading namespace %s for its GPU policy: %w", s.fleet.Namespace, err)
	}
	if msg := gpuPolicyVerdict(ns.Name, ns.Labels, ns.Annotations, clusterGPUs(s.desired)); msg != "" {
		s.block(blocker{reason: v1alpha1.ReasonGPUNotAllowed, degraded: true, stalled: true, message: msg})
	}
	return nil
}

// gpuPolicyVerdict is why a fleet asking for gpus may not run in the namespace, or "" if it may.
// The messages are those of config/policy/gpu-policy.yaml.
func gpuPolicyVerdict(namespace string, labels, annotations map[string]string, gpus int64) string {
	if labels[v1alpha1.LabelGPUAllowed] == "false" && gpus > 0 {
		return fmt.Sprintf("namespace %s does not allow GPUs (label %s=false) and this fleet asks for %d: "+
			"set spec.worker.gpus to 0 (and no %s in a podTemplate), or deploy it to a namespace that allows GPUs",
			namespace, v1alpha1.LabelGPUAllowed, gpus, gpu.Resource)
	}
	limit, ok := annotations[v1alpha1.AnnotationMaxGPUs]
	if !ok {
		return ""
	}
	maxGPUs, err := strconv.ParseUint(limit, 10, 63)
	if err != nil {
		return fmt.Sprintf("namespace %s has an invalid %s annotation %s: it must be a whole number of GPUs",
			namespace, v1alpha1.AnnotationMaxGPUs, limit)
	}
	if gpus > int64(maxGPUs) {
		return fmt.Sprintf("namespace %s allows at most %d GPUs per fleet (annotation %s) and this fleet asks for %d "+
			"(replicas x worker GPUs + head GPUs): lower spec.replicas or spec.worker.gpus, or raise the annotation",
			namespace, maxGPUs, v1alpha1.AnnotationMaxGPUs, gpus)
	}
	return ""
}

// clusterGPUs is the number of GPUs a RayCluster asks for: its head and each worker group's
// replicas, each pod's GPUs the larger of its containers' nvidia.com/gpu limits and requests.
func clusterGPUs(rc *rayv1.RayCluster) int64 {
	if rc == nil {
		return 0
	}
	total := podGPUs(&rc.Spec.HeadGroupSpec.Template.Spec)
	for _, g := range rc.Spec.WorkerGroupSpecs {
		replicas := int64(1)
		if g.Replicas != nil {
			replicas = int64(*g.Replicas)
		}
		total += replicas * int64(max(g.NumOfHosts, 1)) * podGPUs(&g.Template.Spec)
	}
	return total
}

func podGPUs(spec *corev1.PodSpec) int64 {
	var n int64
	for _, c := range spec.Containers {
		limit := c.Resources.Limits[gpu.Resource]
		request := c.Resources.Requests[gpu.Resource]
		n += max(limit.Value(), request.Value())
	}
	return n
}
