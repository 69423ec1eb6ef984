package fleet_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// readyFleet creates a fleet of two workers on Ray 2.9.0 under the given strategy and makes its
// RayCluster "agents" Ready, as KubeRay and the kubelets would.
func readyFleet(t *testing.T, strategy v1alpha1.RolloutStrategy, mutate ...func(*v1alpha1.AgentFleet)) (*env, *rayv1.RayCluster) {
	t.Helper()
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).RayVersion("2.9.0").Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Rollout.Strategy = strategy
		for _, m := range mutate {
			m(f)
		}
	}).Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.workers(rc, 2, rayspecs.WorkerHash(rc), true)
	e.clusterReady(rc, 2)
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2")
	return e, e.rayCluster("agents")
}

// clusterReady writes what KubeRay writes of a RayCluster whose head and readyWorkers are Ready.
func (e *env) clusterReady(rc *rayv1.RayCluster, readyWorkers int32) {
	e.t.Helper()
	e.headReady(rc)
	rc = e.rayCluster(rc.Name)
	rc.Status.ReadyWorkerReplicas = readyWorkers
	if err := k8s.Status().Update(e.ctx, rc); err != nil {
		e.t.Fatal(err)
	}
}

// update changes the fleet's spec.
func (e *env) update(name string, change func(*v1alpha1.AgentFleet)) {
	e.t.Helper()
	f := e.get(name)
	change(f)
	if err := k8s.Update(e.ctx, f); err != nil {
		e.t.Fatal(err)
	}
}

// gone asserts that a RayCluster is being deleted, in the foreground (it stays until its pods are
// gone), and then collects it as the garbage collector would once they are (envtest runs none).
func (e *env) gone(name string) {
	e.t.Helper()
	rc := &rayv1.RayCluster{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, rc); err != nil {
		e.t.Fatalf("RayCluster %s: %v, want it being deleted in the foreground", name, err)
	}
	if rc.DeletionTimestamp.IsZero() || !slices.Contains(rc.Finalizers, metav1.FinalizerDeleteDependents) {
		e.t.Fatalf("RayCluster %s: deletionTimestamp %v, finalizers %v: want it being deleted in the foreground", name, rc.DeletionTimestamp, rc.Finalizers)
	}
	rc.Finalizers = nil
	if err := k8s.Update(e.ctx, rc); err != nil {
		e.t.Fatal(err)
	}
}

func TestHeadChangeUnderRollingIsHeldNotHalfApplied(t *testing.T) {
	e, before := readyFleet(t, v1alpha1.RolloutRolling)
	// Ray 2.10.0 and a new env: neither is applied, the workers are not rolled.
	e.update("agents", func(f *v1alpha1.AgentFleet) {
		f.Spec.RayVersion = "2.10.0"
		f.Spec.Env = append(f.Spec.Env, v1alpha1.EnvVar{Name: "NEW", Value: "1"})
	})
	e.reconcile("agents")
	after := e.rayCluster("agents")
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the RayCluster was written (rayVersion %s, worker hash %s → %s): a head change under Rolling must leave it as it is",
			after.Spec.RayVersion, rayspecs.WorkerHash(before), rayspecs.WorkerHash(after))
	}
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonNeedsBlueGreen, "rayVersion 2.9.0 → 2.10.0")
	e.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonNeedsBlueGreen, "set spec.rollout.strategy to BlueGreen")
	e.event(v1alpha1.ReasonNeedsBlueGreen)
	if f := e.get("agents"); f.Status.Revision != rayspecs.WorkerHash(before) {
		t.Errorf("status.revision = %s, want the revision the workers run, %s", f.Status.Revision, rayspecs.WorkerHash(before))
	}

	// Replicas still follow the spec while held, on the running templates.
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = ptr.To[int32](3) })
	e.reconcile("agents")
	scaled := e.rayCluster("agents")
	if got := *scaled.Spec.WorkerGroupSpecs[0].Replicas; got != 3 || scaled.Spec.RayVersion != "2.9.0" || rayspecs.WorkerHash(scaled) != rayspecs.WorkerHash(before) {
		t.Errorf("held RayCluster: replicas %d rayVersion %s worker hash %s, want 3, 2.9.0, %s", got, scaled.Spec.RayVersion, rayspecs.WorkerHash(scaled), rayspecs.WorkerHash(before))
	}

	// Reverting the head change applies the rest as under Rolling.
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.9.0" })
	e.reconcile("agents")
	rolled := e.rayCluster("agents")
	if rayspecs.WorkerHash(rolled) == rayspecs.WorkerHash(before) || rolled.Spec.RayVersion != "2.9.0" {
		t.Errorf("after the revert: worker hash %s (was %s), rayVersion %s: want the env change rolled", rayspecs.WorkerHash(rolled), rayspecs.WorkerHash(before), rolled.Spec.RayVersion)
	}
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
}

func TestBlueGreenSwitchesToTheNewRayClusterWhenItIsReady(t *testing.T) {
	job := v1alpha1.JobSpec{Name: "eval", Entrypoint: "python eval.py"}
	e, blue := readyFleet(t, v1alpha1.RolloutBlueGreen, func(f *v1alpha1.AgentFleet) { f.Spec.Jobs = []v1alpha1.JobSpec{job} })
	if f := e.get("agents"); f.Status.Rollout == nil || f.Status.Rollout.Phase != v1alpha1.RolloutPhaseStable || f.Status.Rollout.Stable.RayCluster != "agents" {
		t.Fatalf("status.rollout = %+v, want Stable on RayCluster agents", f.Status.Rollout)
	}
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.10.0" })
	e.reconcile("agents")

	green := e.rayCluster("agents-bg")
	if green.Spec.RayVersion != "2.10.0" || green.Annotations[v1alpha1.AnnotationPreview] != "true" || !metav1.IsControlledBy(green, e.get("agents")) {
		t.Fatalf("preview RayCluster: rayVersion %s, annotations %v, owners %v", green.Spec.RayVersion, green.Annotations, green.OwnerReferences)
	}
	if got := e.rayCluster("agents"); got.ResourceVersion != blue.ResourceVersion {
		t.Errorf("the active RayCluster was written during the preview (rayVersion %s)", got.Spec.RayVersion)
	}
	e.event(fleet.EventBlueGreenStarted)
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonBlueGreen, "RayCluster agents-bg")
	f := e.get("agents")
	if ro := f.Status.Rollout; ro.Phase != v1alpha1.RolloutPhasePreview || ro.Canary.RayCluster != "agents-bg" || ro.Canary.RayVersion != "2.10.0" || ro.Stable.RayVersion != "2.9.0" || f.Status.RayClusterName != "agents" {
		t.Errorf("during the preview: rollout %+v, rayClusterName %s", ro, f.Status.RayClusterName)
	}

	// The head alone is not enough; all workers Ready is.
	e.clusterReady(green, 1)
	e.reconcile("agents")
	e.rayCluster("agents")
	e.clusterReady(green, 2)
	e.reconcile("agents")
	e.gone("agents")
	e.event(fleet.EventBlueGreenPromoted)
	green = e.rayCluster("agents-bg")
	if _, marked := green.Annotations[v1alpha1.AnnotationPreview]; marked {
		t.Errorf("the RayCluster switched to is still marked as a preview")
	}
	f = e.get("agents")
	if f.Status.RayClusterName != "agents-bg" || f.Status.Rollout.Phase != v1alpha1.RolloutPhasePromoted || f.Status.Rollout.Stable.RayCluster != "agents-bg" {
		t.Errorf("after the switch: rayClusterName %s, rollout %+v", f.Status.RayClusterName, f.Status.Rollout)
	}

	// New runs of the jobs go to the new RayCluster.
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.Jobs[0].Entrypoint = "python eval.py --v2" })
	e.reconcile("agents")
	var latest *rayv1.RayJob
	for _, rj := range e.rayJobs() {
		if rj.Spec.Entrypoint == "python eval.py --v2" {
			latest = &rj
		}
	}
	if latest == nil || latest.Spec.ClusterSelector["ray.io/cluster"] != "agents-bg" {
		t.Errorf("the new run after the switch: %+v, want it on RayCluster agents-bg", latest)
	}

	// The next change takes the other name again.
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.11.0" })
	e.reconcile("agents")
	if next := e.rayCluster("agents"); next.Spec.RayVersion != "2.11.0" || next.Annotations[v1alpha1.AnnotationPreview] != "true" {
		t.Errorf("the next preview: RayCluster agents rayVersion %s annotations %v", next.Spec.RayVersion, next.Annotations)
	}
}

func TestBlueGreenAbortsAPreviewNotReadyInTime(t *testing.T) {
	e, blue := readyFleet(t, v1alpha1.RolloutBlueGreen, func(f *v1alpha1.AgentFleet) {
		f.Spec.Rollout.BlueGreen = &v1alpha1.BlueGreenSpec{ReadyTimeoutSeconds: 60}
	})
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.10.0" })
	e.reconcile("agents")
	green := e.rayCluster("agents-bg")
	e.clusterReady(green, 1)
	if res := e.reconcile("agents"); res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Errorf("a preview waiting for Ready is rechecked after %s, want by its deadline (1m)", res.RequeueAfter)
	}

	e.clock.Step(61 * time.Second)
	e.reconcile("agents")
	e.gone("agents-bg")
	if got := e.event(fleet.EventBlueGreenAborted); !strings.Contains(got, "1 of 2 agent workers ready") {
		t.Errorf("the abort's event %q does not say how far the preview got", got)
	}
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonBlueGreenAborted, "RayCluster agents runs revision")
	if got := e.rayCluster("agents"); got.ResourceVersion != blue.ResourceVersion {
		t.Errorf("the active RayCluster was written by the abort (rayVersion %s)", got.Spec.RayVersion)
	}
	// Aborted holds: no new preview for the same change.
	e.reconcile("agents")
	e.noRayCluster("agents-bg")

	// A revert clears it, without touching the active RayCluster.
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.9.0" })
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2")
	e.event(fleet.EventBlueGreenAbandoned)
	if got := e.rayCluster("agents"); got.ResourceVersion != blue.ResourceVersion {
		t.Errorf("the revert wrote the active RayCluster")
	}
	if ro := e.get("agents").Status.Rollout; ro.Phase != v1alpha1.RolloutPhaseStable {
		t.Errorf("after the revert: rollout phase %s, want Stable", ro.Phase)
	}
}

func TestBlueGreenSwitchCutMidWayIsFinished(t *testing.T) {
	e, blue := readyFleet(t, v1alpha1.RolloutBlueGreen)
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.RayVersion = "2.10.0" })
	e.reconcile("agents")
	// The operator deleted the old RayCluster and died before unmarking the preview.
	if err := k8s.Delete(e.ctx, blue); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	green := e.rayCluster("agents-bg")
	if _, marked := green.Annotations[v1alpha1.AnnotationPreview]; marked {
		t.Errorf("the preview left alone was not made the active RayCluster")
	}
	e.noRayCluster("agents")
	if f := e.get("agents"); f.Status.RayClusterName != "agents-bg" || f.Status.Rollout.Phase != v1alpha1.RolloutPhasePromoted {
		t.Errorf("rayClusterName %s, rollout %+v: want agents-bg, Promoted", f.Status.RayClusterName, f.Status.Rollout)
	}
	e.event(fleet.EventBlueGreenPromoted)
}

func TestStrategyLeavesBlueGreenMidPreview(t *testing.T) {
	e, _ := readyFleet(t, v1alpha1.RolloutBlueGreen)
	e.update("agents", func(f *v1alpha1.AgentFleet) {
		f.Spec.Env = append(f.Spec.Env, v1alpha1.EnvVar{Name: "NEW", Value: "1"})
	})
	e.reconcile("agents")
	e.rayCluster("agents-bg")
	// Back to Rolling: the preview goes, the change rolls on the active RayCluster.
	e.update("agents", func(f *v1alpha1.AgentFleet) { f.Spec.Rollout.Strategy = v1alpha1.RolloutRolling })
	e.reconcile("agents")
	e.gone("agents-bg")
	if f := e.get("agents"); f.Status.Rollout != nil {
		t.Errorf("status.rollout under Rolling = %+v, want none", f.Status.Rollout)
	}
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRolling, "")
}
