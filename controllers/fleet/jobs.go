package fleet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// maxJobMessage bounds status.jobs[].message; the whole message is on the RayJob it names.
const maxJobMessage = 1024

// reconcileJobs runs the fleet's jobs on its RayCluster once it is ready. A job without a schedule
// has one RayJob per version of its spec; a scheduled job gets a RayJob per due time (KubeRay's
// RayCronJob is alpha and off by default in v1.6.1, so the schedule is kept here), never two at once.
// Finished RayJobs beyond the history limit, and those of jobs no longer declared, are deleted.
func (r *Reconciler) reconcileJobs(ctx context.Context, s *scope) error {
	f := s.fleet
	var list rayv1.RayJobList
	if err := r.List(ctx, &list, client.InNamespace(f.Namespace), client.MatchingFields{fleetIndex: f.Name}); err != nil {
		return fmt.Errorf("listing RayJobs: %w", err)
	}
	runs := map[string][]*rayv1.RayJob{}
	for i := range list.Items {
		rj := &list.Items[i]
		if metav1.IsControlledBy(rj, f) {
			runs[rj.Labels[v1alpha1.LabelJob]] = append(runs[rj.Labels[v1alpha1.LabelJob]], rj)
		}
	}
	// Jobs are submitted through the head: its readiness is KubeRay's HeadPodReady condition (the
	// RayCluster's State is deprecated).
	clusterReady := s.cluster != nil && headReady(s.cluster)
	declared := map[string]bool{}
	s.jobs = nil
	for i := range f.Spec.Jobs {
		job := &f.Spec.Jobs[i]
		declared[job.Name] = true
		jobRuns := runs[job.Name]
		slices.SortFunc(jobRuns, func(a, b *rayv1.RayJob) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
		st := v1alpha1.JobStatus{Name: job.Name}
		paused := s.budget != nil && s.budget.Pause
		if !f.Spec.Suspend && !job.Suspend && clusterReady && !paused {
			created, err := r.runJob(ctx, s, job, jobRuns, &st)
			if err != nil {
				return err
			}
			if created != nil {
				jobRuns = append(jobRuns, created)
			}
		} else if job.Schedule != "" {
			st.LastScheduleTime = lastScheduled(jobRuns)
		}
		if paused {
			st.Message = "no run is started while the fleet is paused by its budget"
		}
		if n := len(jobRuns); n > 0 {
			latest := jobRuns[n-1]
			st.RayJobName = latest.Name
			st.JobStatus = string(latest.Status.JobStatus)
			st.DeploymentStatus = string(latest.Status.JobDeploymentStatus)
			if st.Message == "" {
				// KubeRay's message of a failed job carries up to 20,000 characters of its logs: 32
				// of them whole could pass etcd's limit on the fleet, and every status write fail.
				st.Message = truncate(latest.Status.Message, maxJobMessage)
			}
		}
		s.jobs = append(s.jobs, st)
		if err := r.prune(ctx, s, jobRuns, r.JobHistoryLimit); err != nil {
			return err
		}
	}
	for name, jobRuns := range runs {
		if !declared[name] {
			if err := r.prune(ctx, s, jobRuns, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// runJob creates the RayJob the job needs now, if any.
func (r *Reconciler) runJob(ctx context.Context, s *scope, job *v1alpha1.JobSpec, runs []*rayv1.RayJob, st *v1alpha1.JobStatus) (*rayv1.RayJob, error) {
	// Runs go to the active RayCluster (a blue-green switch moves the new ones to the new one).
	opts := rayspecs.JobOptions{ClusterName: s.cluster.Name}
	if job.Schedule == "" {
		hash, err := rayspecs.JobSpecHash(job)
		if err != nil {
			return nil, err
		}
		for _, rj := range runs {
			if rj.Annotations[v1alpha1.AnnotationJobSpecHash] == hash {
				return nil, nil // this version has run, or runs
			}
		}
	} else {
		sched, err := cron.ParseStandard(job.Schedule)
		if err != nil {
			st.Message = fmt.Sprintf("invalid schedule %q: %v", job.Schedule, err)
			r.event(s.fleet, corev1.EventTypeWarning, EventInvalidSchedule, "Job %s: %s", job.Name, st.Message)
			return nil, nil
		}
		last := lastScheduled(runs)
		st.LastScheduleTime = last
		since := s.fleet.CreationTimestamp.Time
		if last != nil {
			since = last.Time
		}
		due := mostRecentDue(sched, since, s.now)
		s.requeue(sched.Next(s.now).Sub(s.now))
		if due.IsZero() {
			return nil, nil
		}
		if n := len(runs); n > 0 && !finished(runs[n-1]) && runs[n-1].Spec.ClusterSelector[rayClusterLabel] == s.cluster.Name {
			// (A run on another RayCluster, the one a blue-green switch deleted, never finishes.)
			st.Message = fmt.Sprintf("run due at %s skipped: %s still running", due.UTC().Format(time.RFC3339), runs[n-1].Name)
			return nil, nil
		}
		opts.ScheduledTime = due
		st.LastScheduleTime = &metav1.Time{Time: due}
	}
	rj, err := rayspecs.RayJob(s.fleet, job.Name, opts)
	if err != nil {
		st.Message = err.Error()
		r.event(s.fleet, corev1.EventTypeWarning, EventInvalidSpec, "%v", err)
		return nil, nil
	}
	if err := r.Create(ctx, rj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, nil // the cache has not shown it yet
		}
		return nil, fmt.Errorf("creating RayJob %s: %w", klog.KObj(rj), err)
	}
	r.event(s.fleet, corev1.EventTypeNormal, EventRayJobCreated, "Created RayJob %s for job %s", rj.Name, job.Name)
	return rj, nil
}

// mostRecentDue is the latest time the schedule was due after since and at or before now; zero if
// none. Runs missed more than a week ago are not looked for (a schedule every minute would mean
// ten thousand steps).
func mostRecentDue(sched cron.Schedule, since, now time.Time) time.Time {
	if horizon := now.Add(-7 * 24 * time.Hour); since.Before(horizon) {
		since = horizon
	}
	var due time.Time
	for t := sched.Next(since); !t.After(now); t = sched.Next(t) {
		due = t
	}
	return due
}

func lastScheduled(runs []*rayv1.RayJob) *metav1.Time {
	var last *metav1.Time
	for _, rj := range runs {
		t, err := time.Parse(time.RFC3339, rj.Annotations[v1alpha1.AnnotationScheduledTime])
		if err == nil && (last == nil || t.After(last.Time)) {
			last = &metav1.Time{Time: t}
		}
	}
	return last
}

// rayClusterLabel is the label a RayJob's clusterSelector names its RayCluster by.
const rayClusterLabel = rayutils.RayClusterLabelKey

func finished(rj *rayv1.RayJob) bool {
	switch rj.Status.JobDeploymentStatus {
	case rayv1.JobDeploymentStatusComplete, rayv1.JobDeploymentStatusFailed:
		return true
	}
	return false
}

// prune deletes finished runs beyond keep, oldest first (runs is sorted oldest first); with keep 0,
// it deletes every run, finished or not (the job is no longer declared).
func (r *Reconciler) prune(ctx context.Context, s *scope, runs []*rayv1.RayJob, keep int) error {
	var candidates []*rayv1.RayJob
	for _, rj := range runs {
		if keep == 0 || finished(rj) {
			candidates = append(candidates, rj)
		}
	}
	for i := 0; i < len(candidates)-keep; i++ {
		rj := candidates[i]
		if err := r.Delete(ctx, rj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting RayJob %s: %w", klog.KObj(rj), err)
		}
		r.event(s.fleet, corev1.EventTypeNormal, EventRayJobDeleted, "Deleted RayJob %s of job %s", rj.Name, rj.Labels[v1alpha1.LabelJob])
	}
	return nil
}
