package rayspecs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// maxRayJobName is KubeRay's limit on RayJob names: a RayJob's name is the prefix of the names of
// what KubeRay makes for it.
const maxRayJobName = rayutils.MaxRayJobNameLength

// clusterSelectorKey is the label KubeRay's RayJob clusterSelector matches a RayCluster by name with.
const clusterSelectorKey = rayutils.RayClusterLabelKey

// JobOptions say which run of a job to build.
type JobOptions struct {
	// ScheduledTime is when a run of a scheduled job was due; it names the run. Zero for a job
	// without a schedule, which has one RayJob per version of its spec.
	ScheduledTime time.Time
	// ClusterName is the RayCluster the run is submitted to: the fleet's active one ("" for
	// ClusterName(f), its first).
	ClusterName string
}

// RayJob builds the RayJob of one of the fleet's jobs, submitted to the fleet's RayCluster through
// clusterSelector by a Kubernetes Job (K8sJobMode). Its name is deterministic: fleet, job, the hash
// of the job's spec and, for a scheduled run, the run's time; a changed spec gives a new RayJob.
//
// Suspending a job is the caller's business (it stops making runs): KubeRay refuses spec.suspend on
// a RayJob that uses clusterSelector.
func RayJob(f *v1alpha1.AgentFleet, jobName string, o JobOptions) (*rayv1.RayJob, error) {
	var job *v1alpha1.JobSpec
	for i := range f.Spec.Jobs {
		if f.Spec.Jobs[i].Name == jobName {
			job = &f.Spec.Jobs[i]
		}
	}
	if job == nil {
		return nil, fmt.Errorf("building RayJob for %s/%s: no job %q in spec.jobs", f.Namespace, f.Name, jobName)
	}
	var runtimeEnv map[string]any
	if err := yaml.Unmarshal([]byte(job.RuntimeEnvYAML), &runtimeEnv); err != nil {
		return nil, fmt.Errorf("building RayJob for %s/%s: spec.jobs[%s].runtimeEnvYAML is not a YAML mapping: %w", f.Namespace, f.Name, jobName, err)
	}
	hash, err := JobSpecHash(job)
	if err != nil {
		return nil, fmt.Errorf("building RayJob for %s/%s: %w", f.Namespace, f.Name, err)
	}
	labels := fleetLabels(f, "ray-job")
	labels[v1alpha1.LabelJob] = job.Name
	annotations := map[string]string{v1alpha1.AnnotationJobSpecHash: hash}
	if !o.ScheduledTime.IsZero() {
		annotations[v1alpha1.AnnotationScheduledTime] = o.ScheduledTime.UTC().Format(time.RFC3339)
	}
	cluster := o.ClusterName
	if cluster == "" {
		cluster = ClusterName(f)
	}
	return &rayv1.RayJob{
		TypeMeta: metav1.TypeMeta{APIVersion: rayv1.GroupVersion.String(), Kind: "RayJob"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            RayJobName(f.Name, job.Name, hash, o.ScheduledTime),
			Namespace:       f.Namespace,
			Labels:          labels,
			Annotations:     annotations,
			OwnerReferences: []metav1.OwnerReference{ownerRef(f)},
		},
		Spec: rayv1.RayJobSpec{
			Entrypoint:               job.Entrypoint,
			RuntimeEnvYAML:           job.RuntimeEnvYAML,
			ActiveDeadlineSeconds:    job.ActiveDeadlineSeconds,
			ClusterSelector:          map[string]string{clusterSelectorKey: cluster},
			SubmissionMode:           rayv1.K8sJobMode,
			ShutdownAfterJobFinishes: false,
		},
	}, nil
}

// JobSpecHash hashes what a job runs; suspend and schedule are left out (they decide when runs
// are made, not what a run is).
func JobSpecHash(job *v1alpha1.JobSpec) (string, error) {
	j := job.DeepCopy()
	j.Suspend, j.Schedule = false, ""
	return hashJSON(j)
}

// RayJobName is <fleet>-<job>-<spec hash, 8 hex digits>[-<run, minutes since the epoch in base 36>],
// the fleet and job part shortened to keep within KubeRay's 47 characters. It is a DNS-1035 label
// because fleet names are.
func RayJobName(fleet, job, specHash string, scheduled time.Time) string {
	suffix := "-" + specHash[:8]
	if !scheduled.IsZero() {
		suffix += "-" + strconv.FormatInt(scheduled.Unix()/60, 36)
	}
	prefix := fleet + "-" + job
	if len(prefix)+len(suffix) > maxRayJobName {
		prefix = strings.TrimRight(prefix[:maxRayJobName-len(suffix)], "-")
	}
	return prefix + suffix
}
