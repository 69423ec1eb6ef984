package fleet_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/rayspecs"
)

func TestCreatesRayClusterThatRoundTripsWithoutDrift(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(3).GPUs(1, "NVIDIA-H100-80GB-HBM3").Env("LOG_LEVEL", "info").Obj())
	e.reconcile("agents")

	rc := e.rayCluster("agents")
	if !metav1.IsControlledBy(rc, e.get("agents")) {
		t.Errorf("RayCluster not controlled by the fleet: %v", rc.OwnerReferences)
	}
	e.event("RayClusterCreated")
	// What the API server stored (defaulted) hashes to what was written: no spurious drift.
	if got, _ := rayspecs.TemplateHash(&rc.Spec); got != rc.Annotations[v1alpha1.AnnotationTemplateHash] {
		t.Fatalf("the stored RayCluster hashes to %s, its annotation says %s: every reconcile would see drift", got, rc.Annotations[v1alpha1.AnnotationTemplateHash])
	}
	e.reconcile("agents")
	if again := e.rayCluster("agents"); again.ResourceVersion != rc.ResourceVersion {
		t.Errorf("a reconcile with nothing changed wrote the RayCluster (resourceVersion %s -> %s)", rc.ResourceVersion, again.ResourceVersion)
	}
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonScaling, "0 of 3 agent workers ready")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonScaling, "")
	e.condition("agents", v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonScaling, "")
	f := e.get("agents")
	if f.Status.ObservedGeneration != f.Generation || f.Status.RayClusterName != "agents" || f.Status.GPUs.Requested != 3 || f.Status.Phase != v1alpha1.PhaseProgressing {
		t.Errorf("status = %+v", f.Status)
	}
}

func TestReadyOnlyWhenHeadAndEveryWorkerAreReadyOnTheCurrentTemplate(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	hash := rayspecs.WorkerHash(rc)

	e.workers(rc, 1, hash, true)
	_ = e.workers(rc, 1, "0ther0ldhash000", false)
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRolling, "1 of 2 agent workers updated")

	e2 := newEnv(t)
	e2.apply(e2.fleet("agents").Replicas(2).Obj())
	e2.reconcile("agents")
	rc2 := e2.rayCluster("agents")
	e2.workers(rc2, 2, rayspecs.WorkerHash(rc2), true)
	e2.reconcile("agents")
	e2.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonHeadNotReady, "head")
	e2.headReady(rc2)
	e2.reconcile("agents")
	e2.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2 agent workers ready")
	e2.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	e2.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	f := e2.get("agents")
	want := v1alpha1.AgentFleetStatus{
		Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2", Phase: v1alpha1.PhaseRunning,
		RayClusterName: "agents", DashboardURL: "http://agents-head-svc." + e2.ns + ".svc:8265",
		ModelVersion: "2025-09-29", Revision: rayspecs.WorkerHash(rc2),
	}
	got := f.Status
	got.Conditions, got.ObservedGeneration = nil, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if meta := f.Status.Conditions; len(meta) != 3 {
		t.Errorf("conditions %v: want Ready, Progressing, Degraded only (no Reconciling or Stalled when ready)", meta)
	}
}

func TestHandEditIsReverted(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	want := rc.Spec.DeepCopy()

	rc.Spec.WorkerGroupSpecs[0].Template.Spec.Containers[0].Image = "someone/else:latest"
	rc.Spec.WorkerGroupSpecs[0].Replicas = ptr.To(int32(7))
	if err := k8s.Update(e.ctx, rc); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	got := e.rayCluster("agents")
	if diff := cmp.Diff(*want, got.Spec); diff != "" {
		t.Errorf("RayCluster spec not restored (-want +got):\n%s", diff)
	}
	if ev := e.event("DriftReverted"); !strings.Contains(ev, "edited outside Git") {
		t.Errorf("event %q", ev)
	}
}

func TestSpecChangesUpdateTheRayCluster(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Obj())
	e.reconcile("agents")

	f := e.get("agents")
	f.Spec.Replicas = ptr.To(int32(5))
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	w := e.rayCluster("agents").Spec.WorkerGroupSpecs[0]
	if *w.Replicas != 5 || *w.MinReplicas != 5 || *w.MaxReplicas != 5 {
		t.Errorf("replicas %d/%d/%d, want 5/5/5", *w.Replicas, *w.MinReplicas, *w.MaxReplicas)
	}
	e.event("Scaled")

	f = e.get("agents")
	f.Spec.Model.Version = "2025-12-01"
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	if got := rc.Spec.WorkerGroupSpecs[0].Template.Labels[v1alpha1.LabelModelVersion]; got != "2025-12-01" {
		t.Errorf("worker template model version %q", got)
	}
	e.event("RayClusterUpdated")
}

func TestMissingPromptThenPromptAppears(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Prompt("prompts", "system.md").Obj())
	e.reconcile("agents")
	e.noRayCluster("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, "prompt ConfigMap "+e.ns+"/prompts not found")
	e.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, "")
	if f := e.get("agents"); f.Status.Phase != v1alpha1.PhaseDegraded || f.Status.ObservedGeneration != f.Generation {
		t.Errorf("phase %s, observedGeneration %d", f.Status.Phase, f.Status.ObservedGeneration)
	}

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"other.md": "x"}}
	e.apply(cm)
	e.reconcile("agents")
	e.noRayCluster("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, `has no key "system.md" (it has: other.md)`)

	cm.Data["system.md"] = "You are helpful."
	if err := k8s.Update(e.ctx, cm); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	if got := rc.Spec.WorkerGroupSpecs[0].Template.Annotations[v1alpha1.AnnotationPromptHash]; got != rayspecs.PromptHash("You are helpful.") {
		t.Errorf("prompt hash %q", got)
	}
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	for _, c := range e.get("agents").Status.Conditions {
		if c.Type == v1alpha1.ConditionStalled {
			t.Errorf("still Stalled after recovering: %+v", c)
		}
	}
}

func TestMissingSecretHoldsTheFleet(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").SecretEnv("ANTHROPIC_API_KEY", "llm-keys", "anthropic").SecretEnv("GITHUB_TOKEN", "gh", "token").Obj())
	e.apply(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gh", Namespace: e.ns}, Data: map[string][]byte{"token": []byte("t")}})
	e.reconcile("agents")
	e.noRayCluster("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonSecretNotFound, "Secrets not found in "+e.ns+" (spec.secretEnv): llm-keys")
	e.apply(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "llm-keys", Namespace: e.ns}, Data: map[string][]byte{"anthropic": []byte("k")}})
	e.reconcile("agents")
	e.rayCluster("agents")
}

func TestDependencies(t *testing.T) {
	t.Run("unknown kind is Stalled", func(t *testing.T) {
		e := newEnv(t)
		e.apply(e.fleet("agents").DependsOn("vectors.example.com/v1", "Index", "docs").Obj())
		e.reconcile("agents")
		e.noRayCluster("agents")
		e.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonDependencyKindUnknown, "serves no kind Index in vectors.example.com/v1")
	})
	t.Run("missing then not ready then ready", func(t *testing.T) {
		e := newEnv(t)
		e.apply(e.fleet("agents").DependsOn("apps/v1", "Deployment", "vllm").DependsOn("apps/v1", "StatefulSet", "qdrant").Obj())
		e.reconcile("agents")
		e.noRayCluster("agents")
		e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonWaitingForDependencies,
			"waiting for Deployment vllm (not found); StatefulSet qdrant (not found)")

		labels := map[string]string{"app": "x"}
		tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
		deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "vllm", Namespace: e.ns},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
		sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "qdrant", Namespace: e.ns},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
		e.apply(deploy, sts)
		e.reconcile("agents")
		e.noRayCluster("agents")
		e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonWaitingForDependencies, "StatefulSet qdrant (InProgress")

		// What the Deployment and StatefulSet controllers write once their pods are ready.
		deploy.Status = appsv1.DeploymentStatus{ObservedGeneration: deploy.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}, {Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"}}}
		sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: 1, ReadyReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}
		for _, o := range []client.Object{deploy, sts} {
			if err := k8s.Status().Update(e.ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		e.reconcile("agents")
		e.rayCluster("agents")
	})
}

func TestRolloutReplacesAtMostMaxUnavailable(t *testing.T) {
	e := newEnv(t)
	e.apply(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"system.md": "v1"}})
	e.apply(e.fleet("agents").Replicas(8).Prompt("prompts", "system.md").MaxUnavailable(intstr.FromString("25%")).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	old := rayspecs.WorkerHash(rc)
	e.workers(rc, 8, old, true)
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonHeadNotReady, "")

	// A prompt change in Git.
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: "prompts"}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["system.md"] = "v2"
	if err := k8s.Update(e.ctx, cm); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents") // updates the template
	e.reconcile("agents") // hands the first batch to KubeRay
	rc = e.rayCluster("agents")
	if rayspecs.WorkerHash(rc) == old {
		t.Fatal("the worker template did not change with the prompt")
	}
	first := rc.Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete
	if len(first) != 2 {
		t.Fatalf("workersToDelete = %v, want 2 (25%% of 8)", first)
	}
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRolling, "0 of 8 agent workers updated")

	// Another reconcile before KubeRay acted must not hand over more.
	e.reconcile("agents")
	if got := e.rayCluster("agents").Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete; !slices.Equal(got, first) {
		t.Fatalf("workersToDelete grew to %v before the first batch was replaced", got)
	}

	// KubeRay deletes the batch and creates replacements, not yet Ready.
	for _, name := range first {
		if err := k8s.Delete(e.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns}}); err != nil {
			t.Fatal(err)
		}
	}
	rc = e.rayCluster("agents")
	e.workers(rc, 2, rayspecs.WorkerHash(rc), false)
	e.reconcile("agents")
	if got := e.rayCluster("agents").Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete; len(got) != 0 && !slices.Equal(got, first) {
		t.Fatalf("workersToDelete = %v while 2 replacements are not Ready: that would leave fewer than 6 Ready", got)
	}
}

func TestUnreadyOutdatedWorkersGoFirstAndAllAtOnce(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(4).MaxUnavailable(intstr.FromInt32(1)).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	unready := e.workers(rc, 2, "0ldhash0000000", false)
	_ = e.workers(rc, 2, "0ldhash0000000", true)
	e.reconcile("agents")
	got := e.rayCluster("agents").Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete
	// Two workers are already down: replacing them costs nothing; no Ready one may go (budget 1, 2 down).
	if diff := cmp.Diff(unready, got); diff != "" {
		t.Errorf("workersToDelete (-want +got):\n%s", diff)
	}
}

func TestSuspend(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.workers(rc, 2, rayspecs.WorkerHash(rc), true)

	f := e.get("agents")
	f.Spec.Suspend = true
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	if s := e.rayCluster("agents").Spec.Suspend; s == nil || !*s {
		t.Fatal("RayCluster not suspended")
	}
	e.event("Suspended")
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonSuspending, "2 agent workers left")

	// KubeRay deletes the pods and says Suspended.
	if err := k8s.DeleteAllOf(e.ctx, &corev1.Pod{}, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	rc = e.rayCluster("agents")
	rc.Status.Conditions = []metav1.Condition{{Type: string(rayv1.RayClusterSuspended), Status: metav1.ConditionTrue, Reason: "Suspended", LastTransitionTime: metav1.Now()}}
	if err := k8s.Status().Update(e.ctx, rc); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "suspended")
	if p := e.get("agents").Status.Phase; p != v1alpha1.PhaseSuspended {
		t.Errorf("phase %s", p)
	}

	f = e.get("agents")
	f.Spec.Suspend = false
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	if s := e.rayCluster("agents").Spec.Suspend; s == nil || *s {
		t.Error("RayCluster not resumed")
	}
	e.event("Resumed")
}

func TestInvalidPodTemplateAndForeignRayCluster(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("typo").Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Worker.PodTemplate = &runtime.RawExtension{Raw: []byte(`{"spec":{"nodeSelecter":{"a":"b"}}}`)}
	}).Obj())
	e.reconcile("typo")
	e.noRayCluster("typo")
	e.condition("typo", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonInvalidSpec, `spec.worker.podTemplate: unknown field "spec.nodeSelecter"`)

	foreign, err := rayspecs.RayCluster(e.fleet("taken").Obj(), rayspecs.Inputs{}, rayspecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	foreign.OwnerReferences = nil
	e.apply(foreign)
	e.apply(e.fleet("taken").Obj())
	e.reconcile("taken")
	e.condition("taken", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonRayClusterNotOwned, "RayCluster taken exists and is not controlled by this fleet")
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	once := v1alpha1.JobSpec{Name: "backfill", Entrypoint: "python backfill.py"}
	nightly := v1alpha1.JobSpec{Name: "nightly", Entrypoint: "python eval.py", Schedule: "0 3 * * *"}
	e.apply(e.fleet("agents").Job(once).Job(nightly).Obj())
	// Time is the fleet's creation stamp, whatever the time of day: the nightly run is first due at
	// the next 03:00 UTC after it.
	created := e.clockFrom("agents")
	due := created.UTC().Truncate(24 * time.Hour).Add(3 * time.Hour)
	if !due.After(created) {
		due = due.Add(24 * time.Hour)
	}
	e.reconcile("agents")
	jobs := e.rayJobs()
	if len(jobs) != 0 {
		t.Fatalf("RayJobs %v before the RayCluster is ready", jobs)
	}
	e.headReady(e.rayCluster("agents"))

	res := e.reconcile("agents")
	jobs = e.rayJobs()
	if len(jobs) != 1 || jobs[0].Labels[v1alpha1.LabelJob] != "backfill" {
		t.Fatalf("RayJobs %v, want the one-off backfill only (the nightly run is not due)", names(jobs))
	}
	if want := due.Sub(created); res.RequeueAfter != want {
		t.Errorf("requeueAfter %s, want %s (the next nightly run, at %s)", res.RequeueAfter, want, due)
	}
	if want := jobs[0].Spec.ClusterSelector[rayutils.RayClusterLabelKey]; want != "agents" {
		t.Errorf("clusterSelector %v", jobs[0].Spec.ClusterSelector)
	}
	e.reconcile("agents")
	if again := e.rayJobs(); len(again) != 1 {
		t.Fatalf("a second reconcile made %v", names(again))
	}

	e.clock.SetTime(due.Add(time.Minute))
	e.reconcile("agents")
	jobs = e.rayJobs()
	var run *rayv1.RayJob
	for i := range jobs {
		if jobs[i].Labels[v1alpha1.LabelJob] == "nightly" {
			run = &jobs[i]
		}
	}
	if run == nil || run.Annotations[v1alpha1.AnnotationScheduledTime] != due.Format(time.RFC3339) {
		t.Fatalf("no nightly run for %s: %v", due, names(jobs))
	}

	// A changed one-off job runs again, as a new RayJob; finished ones beyond the history go.
	e.r.JobHistoryLimit = 1
	for i := range jobs {
		jobs[i].Status.JobDeploymentStatus = rayv1.JobDeploymentStatusComplete
		jobs[i].Status.JobStatus = rayv1.JobStatusSucceeded
		if err := k8s.Status().Update(e.ctx, &jobs[i]); err != nil {
			t.Fatal(err)
		}
	}
	f := e.get("agents")
	f.Spec.Jobs[0].Entrypoint = "python backfill.py --since 2026-01-01"
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	var backfills []string
	for _, j := range e.rayJobs() {
		if j.Labels[v1alpha1.LabelJob] == "backfill" && j.DeletionTimestamp.IsZero() {
			backfills = append(backfills, j.Name)
		}
	}
	if len(backfills) != 2 {
		t.Errorf("backfill RayJobs %v, want the finished one kept (limit 1) and the new one", backfills)
	}
	st := e.get("agents").Status.Jobs
	if len(st) != 2 || st[1].Name != "nightly" || st[1].JobStatus != "SUCCEEDED" || st[1].LastScheduleTime == nil {
		t.Errorf("status.jobs = %+v", st)
	}

	// A job removed from Git is gone.
	f = e.get("agents")
	f.Spec.Jobs = f.Spec.Jobs[:1]
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	for _, j := range e.rayJobs() {
		if j.Labels[v1alpha1.LabelJob] == "nightly" && j.DeletionTimestamp.IsZero() {
			t.Errorf("RayJob %s of a job no longer declared still there", j.Name)
		}
	}
}

func (e *env) rayJobs() []rayv1.RayJob {
	e.t.Helper()
	var list rayv1.RayJobList
	if err := k8s.List(e.ctx, &list, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	return list.Items
}

func names(jobs []rayv1.RayJob) []string {
	var n []string
	for _, j := range jobs {
		n = append(n, j.Name)
	}
	return n
}

func TestDeletedFleetIsIgnored(t *testing.T) {
	e := newEnv(t)
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: e.ns, Name: "gone"}})
	if err != nil || res.RequeueAfter != 0 {
		t.Errorf("reconcile of a missing fleet: %v, %v", res, err)
	}
}

// Concurrent reconciles of one fleet (two operator replicas without leader election, or a restart
// racing the old process) make one RayCluster: its name is the fleet's, and a second create fails.
func TestConcurrentReconcilesMakeOneRayCluster(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Obj())
	errs := make(chan error, 8)
	for range 8 {
		r := fleet.NewDirectReconciler(k8s, k8s)
		r.Clock = e.clock
		go func() {
			_, err := r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: e.ns, Name: "agents"}})
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Errorf("reconcile: %v", err)
		}
	}
	var list rayv1.RayClusterList
	if err := k8s.List(e.ctx, &list, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("%d RayClusters, want 1", len(list.Items))
	}
}

// With --status-write-interval, workers turning Ready one after another are written together once
// the first of them waited the interval, however long ago the last write was; the fleet turning
// Ready is written at once, with them.
func TestProgressIsWrittenPacedAndReadyAtOnce(t *testing.T) {
	e := newEnv(t)
	e.r.StatusWriteInterval = 2 * time.Second
	e.apply(e.fleet("agents").Replicas(3).Obj())
	e.clockFrom("agents")
	e.reconcile("agents")
	e.workersStatus("agents", 0, 3, "", "")
	rc := e.rayCluster("agents")
	hash := rayspecs.WorkerHash(rc)
	e.headReady(rc)

	e.clock.Step(10 * time.Second) // long after the first write: the progress still waits
	e.workers(rc, 1, hash, true)
	if res := e.reconcile("agents"); res.RequeueAfter != 2*time.Second {
		t.Errorf("requeued after %s, want 2s (the interval, from now)", res.RequeueAfter)
	}
	e.workersStatus("agents", 0, 3, "", "")

	e.clock.Step(500 * time.Millisecond)
	e.workers(rc, 1, hash, true)
	if res := e.reconcile("agents"); res.RequeueAfter != 1500*time.Millisecond {
		t.Errorf("requeued after %s, want 1.5s (the rest of the interval from the first held back)", res.RequeueAfter)
	}
	e.workersStatus("agents", 0, 3, "", "") // the progress waits

	e.clock.Step(1500 * time.Millisecond)
	e.reconcile("agents")
	e.workersStatus("agents", 2, 3, "", "") // the revision is told once every worker runs it
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonScaling, "2 of 3")

	e.clock.Step(100 * time.Millisecond)
	e.workers(rc, 1, hash, true)
	e.reconcile("agents")
	e.workersStatus("agents", 3, 3, hash, "")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "3 of 3")
}

// A pass that fails writes its status at once, whatever progress waits: its requeue is the rate
// limiter's (up to minutes), so a status held back by it could stay stale that long, and the error
// is what a person needs to see.
func TestFailedPassWritesItsStatusAtOnce(t *testing.T) {
	e := newEnv(t)
	e.r.StatusWriteInterval = 2 * time.Second
	e.apply(e.fleet("agents").Replicas(3).Obj())
	e.clockFrom("agents")
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	hash := rayspecs.WorkerHash(rc)
	e.headReady(rc)
	e.clock.Step(10 * time.Second)
	e.workers(rc, 1, hash, true)
	e.reconcile("agents")
	e.clock.Step(2 * time.Second)
	e.reconcile("agents")
	e.workersStatus("agents", 1, 3, "", "")

	e.clock.Step(10 * time.Second)
	e.workers(rc, 1, hash, true)
	if res := e.reconcile("agents"); res.RequeueAfter != 2*time.Second {
		t.Fatalf("requeued after %s, want 2s: the progress is held back", res.RequeueAfter)
	}
	e.workersStatus("agents", 1, 3, "", "")

	// The next pass fails before it sees the workers. Only the reason and message of Reconciling
	// (True while the fleet comes up) change, which alone would be progress, and wait.
	ok := e.r.Client
	e.r.Client = failingPodList{ok}
	e.clock.Step(500 * time.Millisecond)
	if _, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: e.ns, Name: "agents"}}); err == nil {
		t.Fatal("the pass did not fail")
	}
	e.condition("agents", v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonReconcileError, "listing the workers")
	e.workersStatus("agents", 1, 3, "", "") // what it did not see stays as written, not 0

	// Its end is progress again: it waits the interval, as any.
	e.r.Client = ok
	e.clock.Step(100 * time.Millisecond)
	if res := e.reconcile("agents"); res.RequeueAfter != 2*time.Second {
		t.Errorf("requeued after %s, want 2s", res.RequeueAfter)
	}
	e.clock.Step(2 * time.Second)
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonScaling, "2 of 3")
	e.workersStatus("agents", 2, 3, "", "")
}

// failingPodList is a client whose Lists of pods fail, as they do while the API server is away.
type failingPodList struct{ client.Client }

func (c failingPodList) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*corev1.PodList); ok {
		return apierrors.NewServiceUnavailable("the pods cannot be listed")
	}
	return c.Client.List(ctx, list, opts...)
}
