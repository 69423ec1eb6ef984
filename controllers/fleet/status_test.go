package fleet

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// now is the injected clock of these tests: a fixed instant, unrelated to the time of day they run.
var now = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func testFleet(replicas int32) *v1alpha1.AgentFleet {
	return &v1alpha1.AgentFleet{
		ObjectMeta: metav1.ObjectMeta{Name: "agents", Namespace: "team", Generation: 3},
		Spec: v1alpha1.AgentFleetSpec{
			Replicas: ptr.To(replicas),
			Model:    v1alpha1.ModelSpec{Version: "m-7"},
			Worker:   v1alpha1.WorkerSpec{GPUs: 2, GPUProduct: "NVIDIA-H100-80GB-HBM3"},
		},
	}
}

// testCluster is a RayCluster on worker revision rev, with KubeRay's conditions as given.
func testCluster(rev string, conds ...metav1.Condition) *rayv1.RayCluster {
	rc := &rayv1.RayCluster{ObjectMeta: metav1.ObjectMeta{Name: "agents", Namespace: "team"}}
	rc.Spec.WorkerGroupSpecs = []rayv1.WorkerGroupSpec{{GroupName: v1alpha1.WorkerGroup}}
	rc.Spec.WorkerGroupSpecs[0].Template.Labels = map[string]string{v1alpha1.LabelWorkerHash: rev}
	rc.Status.Conditions = conds
	return rc
}

func rayCond(t rayv1.RayClusterConditionType, status metav1.ConditionStatus) metav1.Condition {
	return metav1.Condition{Type: string(t), Status: status, Reason: "Test", Message: "from KubeRay"}
}

var headUp = rayCond(rayv1.HeadPodReady, metav1.ConditionTrue)

func TestAssess(t *testing.T) {
	rev := "r1"
	if got := rayspecs.WorkerHash(testCluster(rev)); got != rev {
		t.Fatalf("test cluster revision %q, want %q", got, rev)
	}
	suspended := testFleet(2)
	suspended.Spec.Suspend = true
	for name, tc := range map[string]struct {
		o    statusObservation
		want assessment
	}{
		"ready": {
			o:    statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, headUp), Pods: workers(0, 2, rev, true)},
			want: assessment{state: stateReady, reason: v1alpha1.ReasonReady, message: "2 of 2 agent workers ready on revision r1"},
		},
		"a degrading blocker wins over everything": {
			o: statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, headUp), Pods: workers(0, 2, rev, true),
				Blocked: &blocker{reason: v1alpha1.ReasonInvalidSpec, message: "bad", degraded: true, stalled: true}},
			want: assessment{state: stateDegraded, reason: v1alpha1.ReasonInvalidSpec, message: "bad", stalled: true},
		},
		"a waiting blocker is progress": {
			o:    statusObservation{Fleet: testFleet(2), Blocked: &blocker{reason: v1alpha1.ReasonWaitingForDependencies, message: "waiting for db"}},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonWaitingForDependencies, message: "waiting for db"},
		},
		"suspending while workers are left": {
			o:    statusObservation{Fleet: suspended, Cluster: testCluster(rev), Pods: workers(0, 1, rev, true)},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonSuspending, message: "suspending: 1 agent workers left"},
		},
		"suspending until KubeRay says suspended": {
			o:    statusObservation{Fleet: suspended, Cluster: testCluster(rev)},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonSuspending, message: "suspending: 0 agent workers left"},
		},
		"suspended": {
			o:    statusObservation{Fleet: suspended, Cluster: testCluster(rev, rayCond(rayv1.RayClusterSuspended, metav1.ConditionTrue))},
			want: assessment{state: stateSuspended, reason: v1alpha1.ReasonSuspended, message: "the fleet is suspended"},
		},
		"no RayCluster yet": {
			o:    statusObservation{Fleet: testFleet(2)},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonCreating, message: "creating the RayCluster"},
		},
		"KubeRay's ReplicaFailure degrades": {
			o: statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, headUp, rayCond(rayv1.RayClusterReplicaFailure, metav1.ConditionTrue)),
				Pods: workers(0, 2, rev, true)},
			want: assessment{state: stateDegraded, reason: v1alpha1.ReasonRayClusterFailure, message: "KubeRay reports Test on RayCluster agents: from KubeRay"},
		},
		"restart budget spent degrades": {
			o:    statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, headUp), Pods: workers(0, 2, rev, true), BudgetExhausted: "spent"},
			want: assessment{state: stateDegraded, reason: v1alpha1.ReasonRestartBudgetExhausted, message: "spent"},
		},
		"rolling": {
			o:    statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, headUp), Pods: concat(workers(0, 1, rev, true), workers(1, 1, "r0", true))},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonRolling, message: "1 of 2 agent workers updated to revision r1, 2 ready"},
		},
		"scaling: a worker not Ready": {
			o:    statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, headUp), Pods: concat(workers(0, 1, rev, true), workers(1, 1, rev, false))},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonScaling, message: "1 of 2 agent workers ready"},
		},
		"scaling: one worker too many": {
			o:    statusObservation{Fleet: testFleet(1), Cluster: testCluster(rev, headUp), Pods: workers(0, 2, rev, true)},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonScaling, message: "2 of 1 agent workers ready"},
		},
		"head not ready": {
			o:    statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev, rayCond(rayv1.HeadPodReady, metav1.ConditionFalse)), Pods: workers(0, 2, rev, true)},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonHeadNotReady, message: "waiting for the Ray head to be ready"},
		},
		"no HeadPodReady condition is not ready (State is deprecated)": {
			o:    statusObservation{Fleet: testFleet(2), Cluster: testCluster(rev), Pods: workers(0, 2, rev, true)},
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonHeadNotReady, message: "waiting for the Ray head to be ready"},
		},
		"KubeRay without status conditions: not ready, and says which feature gate": {
			o: func() statusObservation {
				rc := testCluster(rev)
				rc.Status.State = rayv1.Ready //nolint:staticcheck // what a KubeRay without status conditions writes
				return statusObservation{Fleet: testFleet(2), Cluster: rc, Pods: workers(0, 2, rev, true)}
			}(),
			want: assessment{state: stateProgressing, reason: v1alpha1.ReasonHeadNotReady,
				message: "waiting for the Ray head to be ready (KubeRay reports a state but no HeadPodReady condition: turn its RayClusterStatusConditions feature gate on)"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := assess(&tc.o, countWorkers(&tc.o))
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(assessment{})); diff != "" {
				t.Errorf("assessment (-want +got):\n%s", diff)
			}
		})
	}
}

func cond(t string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg}
}

var (
	aReady       = assessment{state: stateReady, reason: v1alpha1.ReasonReady, message: "2 of 2"}
	aProgressing = assessment{state: stateProgressing, reason: v1alpha1.ReasonRolling, message: "rolling"}
	aDegraded    = assessment{state: stateDegraded, reason: v1alpha1.ReasonInvalidSpec, message: "bad", stalled: true}
	aSuspended   = assessment{state: stateSuspended, reason: v1alpha1.ReasonSuspended, message: "the fleet is suspended"}
)

func TestReadyCondition(t *testing.T) {
	for name, tc := range map[string]struct {
		a    assessment
		want metav1.Condition
	}{
		"ready":       {aReady, cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2")},
		"progressing": {aProgressing, cond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRolling, "rolling")},
		"degraded":    {aDegraded, cond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, "bad")},
		"suspended":   {aSuspended, cond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "the fleet is suspended")},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, readyCondition(tc.a)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestProgressingCondition(t *testing.T) {
	for name, tc := range map[string]struct {
		a    assessment
		want metav1.Condition
	}{
		"ready: as expected": {aReady, cond(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "2 of 2")},
		"progressing":        {aProgressing, cond(v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRolling, "rolling")},
		"degraded: stuck":    {aDegraded, cond(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, "bad")},
		"suspended":          {aSuspended, cond(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "the fleet is suspended")},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, progressingCondition(tc.a)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDegradedCondition(t *testing.T) {
	for name, tc := range map[string]struct {
		a    assessment
		want metav1.Condition
	}{
		"ready":       {aReady, cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")},
		"progressing": {aProgressing, cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")},
		"degraded":    {aDegraded, cond(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonInvalidSpec, "bad")},
		"suspended":   {aSuspended, cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonSuspended, "")},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, degradedCondition(tc.a)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestReconcilingCondition(t *testing.T) {
	progressing := cond(v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonRolling, "rolling")
	for name, tc := range map[string]struct {
		a    assessment
		want *metav1.Condition
	}{
		"ready: absent":       {aReady, nil},
		"progressing: mirror": {aProgressing, &progressing},
		"degraded: absent":    {aDegraded, nil},
		"suspended: absent":   {aSuspended, nil},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, reconcilingCondition(tc.a)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestStalledCondition(t *testing.T) {
	stalled := cond(v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonInvalidSpec, "bad")
	degradedNotStalled := aDegraded
	degradedNotStalled.stalled = false
	for name, tc := range map[string]struct {
		a    assessment
		want *metav1.Condition
	}{
		"ready: absent":                       {aReady, nil},
		"progressing: absent":                 {aProgressing, nil},
		"needs a person":                      {aDegraded, &stalled},
		"degraded but recovers alone: absent": {degradedNotStalled, nil},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, stalledCondition(tc.a)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// gpuWorker is a worker pod holding n GPUs in the given phase.
func gpuWorker(name string, n int64, phase corev1.PodPhase) corev1.Pod {
	p := worker(name, "r1", phase == corev1.PodRunning)
	p.Status.Phase = phase
	p.Spec.Containers = []corev1.Container{{Name: "ray-worker", Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{gpu.Resource: *resource.NewQuantity(n, resource.DecimalSI)}}}}
	return p
}

func TestComputeStatus(t *testing.T) {
	earlier := metav1.NewTime(now.Add(-time.Hour))
	ready := func(f *v1alpha1.AgentFleet) statusObservation {
		rc := testCluster("r1", headUp)
		rc.Status.Head.ServiceName = "agents-head-svc"
		return statusObservation{Now: now, Fleet: f, Cluster: rc, PromptHash: "p1", DesiredRevision: "r1", Pods: []corev1.Pod{
			gpuWorker("w-00", 2, corev1.PodRunning), gpuWorker("w-01", 2, corev1.PodRunning)}}
	}
	at := func(c metav1.Condition, t metav1.Time) metav1.Condition {
		c.ObservedGeneration, c.LastTransitionTime = 3, t
		return c
	}
	for name, tc := range map[string]struct {
		o    func() statusObservation
		want v1alpha1.AgentFleetStatus
	}{
		"ready: every field from the observation, condition times from the clock": {
			o: func() statusObservation { return ready(testFleet(2)) },
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2",
				RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
				PromptHash: "p1", ModelVersion: "m-7", Revision: "r1",
				GPUs: v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2 agent workers ready on revision r1"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "2 of 2 agent workers ready on revision r1"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, ""), metav1.NewTime(now)),
				},
			},
		},
		"an unchanged condition keeps its transition time; Reconciling goes": {
			o: func() statusObservation {
				f := testFleet(2)
				f.Status.Conditions = []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "old message"), earlier),
					at(cond(v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonScaling, ""), earlier),
				}
				return ready(f)
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2",
				RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
				PromptHash: "p1", ModelVersion: "m-7", Revision: "r1",
				GPUs: v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2 agent workers ready on revision r1"), earlier),
					at(cond(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "2 of 2 agent workers ready on revision r1"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, ""), metav1.NewTime(now)),
				},
			},
		},
		"mid-roll: the revision and prompt stay those all workers ran; GPUs held only by Running pods": {
			o: func() statusObservation {
				f := testFleet(3)
				f.Status.Revision, f.Status.PromptHash, f.Status.ModelVersion = "r0", "p0", "m-6"
				o := ready(f)
				pending := gpuWorker("w-02", 2, corev1.PodPending)
				pending.Labels[v1alpha1.LabelWorkerHash] = "r0"
				o.Pods = append(o.Pods, pending)
				o.Cluster.Status.Head.ServiceName = "" // KubeRay has not reported the head Service yet
				return o
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseProgressing,
				Replicas: 3, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/3",
				RayClusterName: "agents", PromptHash: "p0", ModelVersion: "m-6", Revision: "r0",
				GPUs: v1alpha1.GPUStatus{Requested: 6, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRolling, "2 of 3 agent workers updated to revision r1, 2 ready"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonRolling, "2 of 3 agent workers updated to revision r1, 2 ready"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, ""), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonRolling, "2 of 3 agent workers updated to revision r1, 2 ready"), metav1.NewTime(now)),
				},
			},
		},
		"workers on failing and degraded GPUs are listed, with the evidence": {
			o: func() statusObservation {
				o := ready(testFleet(2))
				o.Pods[0].Spec.NodeName = "gpu-a"
				o.Pods[0].Status.Conditions = append(o.Pods[0].Status.Conditions, corev1.PodCondition{Type: gpu.PodConditionGPUHealthy,
					Status: corev1.ConditionFalse, Reason: "XidCriticalError", Message: "GPU-5d1c (index 2): XID 79"})
				o.Pods[1].Spec.NodeName = "gpu-b"
				o.Pods[1].Status.Conditions = append(o.Pods[1].Status.Conditions, corev1.PodCondition{Type: gpu.PodConditionGPUHealthy,
					Status: corev1.ConditionTrue, Reason: gpu.ReasonGPUDegraded, Message: "GPU-77aa (index 0): thermal throttling"})
				return o
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2",
				RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
				PromptHash: "p1", ModelVersion: "m-7", Revision: "r1",
				GPUs: v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				GPUFaults: []v1alpha1.GPUFault{
					{Worker: "w-00", Node: "gpu-a", Reason: "XidCriticalError", Message: "GPU-5d1c (index 2): XID 79"},
					{Worker: "w-01", Node: "gpu-b", Reason: gpu.ReasonGPUDegraded, Message: "GPU-77aa (index 0): thermal throttling"},
				},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2 agent workers ready on revision r1"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "2 of 2 agent workers ready on revision r1"), metav1.NewTime(now)),
					at(cond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, ""), metav1.NewTime(now)),
				},
			},
		},
		"a transient error keeps observedGeneration and says Reconciling": {
			o: func() statusObservation {
				f := testFleet(2)
				f.Generation = 4
				f.Status.ObservedGeneration, f.Status.Phase = 3, v1alpha1.PhaseRunning
				f.Status.Conditions = []metav1.Condition{at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier)}
				o := ready(f)
				o.Err = errors.New("listing pods: connection refused")
				return o
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2",
				RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
				PromptHash: "p1", ModelVersion: "m-7", Revision: "r1",
				GPUs: v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier),
					{Type: v1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReconcileError,
						Message: "listing pods: connection refused", ObservedGeneration: 4, LastTransitionTime: metav1.NewTime(now)},
				},
			},
		},
		"a pass that failed before it saw the workers keeps what the status said of them": {
			o: func() statusObservation {
				f := testFleet(3) // scaled from 2 since the status was written
				f.Status = v1alpha1.AgentFleetStatus{
					ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
					Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2",
					RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
					PromptHash: "p1", ModelVersion: "m-7", Revision: "r1",
					GPUs:       v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
					GPUFaults:  []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-a", Reason: "XidCriticalError", Message: "XID 79"}},
					Usage:      &v1alpha1.UsageStatus{Currency: "USD", Unpriced: []string{"GPU NVIDIA-H100-80GB-HBM3"}, UpdatedAt: earlier},
					Conditions: []metav1.Condition{at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier)},
				}
				o := ready(f)
				o.Pods, o.Err = nil, errors.New("listing the workers: the server is currently unable to handle the request")
				// The usage computed without the workers has lost their GPU product.
				o.Budget, o.Usage = &usage.FleetVerdict{}, &v1alpha1.UsageStatus{Currency: "USD", UpdatedAt: metav1.NewTime(now)}
				return o
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/3",
				RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
				PromptHash: "p1", ModelVersion: "m-7", Revision: "r1",
				GPUs:      v1alpha1.GPUStatus{Requested: 6, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				GPUFaults: []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-a", Reason: "XidCriticalError", Message: "XID 79"}},
				Usage:     &v1alpha1.UsageStatus{Currency: "USD", Unpriced: []string{"GPU NVIDIA-H100-80GB-HBM3"}, UpdatedAt: earlier},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier),
					{Type: v1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReconcileError,
						Message: "listing the workers: the server is currently unable to handle the request", ObservedGeneration: 3, LastTransitionTime: metav1.NewTime(now)},
				},
			},
		},
		"a pass that failed before it saw the RayCluster keeps the same": {
			o: func() statusObservation {
				f := testFleet(2)
				f.Status = v1alpha1.AgentFleetStatus{ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
					Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2", RayClusterName: "agents",
					GPUs:       v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
					Conditions: []metav1.Condition{at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier)}}
				o := ready(f)
				o.Cluster, o.Pods, o.Err = nil, nil, errors.New("reading prompt ConfigMap team/prompts: the server is currently unable to handle the request")
				return o
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2", RayClusterName: "agents",
				GPUs: v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier),
					{Type: v1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReconcileError,
						Message: "reading prompt ConfigMap team/prompts: the server is currently unable to handle the request", ObservedGeneration: 3, LastTransitionTime: metav1.NewTime(now)},
				},
			},
		},
		"a failed pass that saw no workers says so; the GPU faults stay until a pass sees the nodes too": {
			o: func() statusObservation {
				f := testFleet(2)
				f.Status = v1alpha1.AgentFleetStatus{ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
					Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, Workers: "2/2", RayClusterName: "agents",
					GPUs:       v1alpha1.GPUStatus{Requested: 4, Allocated: 4, Product: "NVIDIA-H100-80GB-HBM3"},
					GPUFaults:  []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-a", Reason: "XidCriticalError", Message: "XID 79"}},
					Conditions: []metav1.Condition{at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier)}}
				o := ready(f)
				o.Pods, o.Err = []corev1.Pod{}, errors.New("reading the nodes of the GPU workers: the server is currently unable to handle the request")
				return o
			},
			want: v1alpha1.AgentFleetStatus{
				ObservedGeneration: 3, Phase: v1alpha1.PhaseRunning,
				Workers: "0/2", RayClusterName: "agents", DashboardURL: "http://agents-head-svc.team.svc:8265",
				GPUs:      v1alpha1.GPUStatus{Requested: 4, Product: "NVIDIA-H100-80GB-HBM3"},
				GPUFaults: []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-a", Reason: "XidCriticalError", Message: "XID 79"}},
				Conditions: []metav1.Condition{
					at(cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "ok"), earlier),
					{Type: v1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReconcileError,
						Message: "reading the nodes of the GPU workers: the server is currently unable to handle the request", ObservedGeneration: 3, LastTransitionTime: metav1.NewTime(now)},
				},
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := tc.o()
			before := o.Fleet.DeepCopy()
			got := computeStatus(o)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, o.Fleet); diff != "" {
				t.Errorf("computeStatus changed the fleet it was given (-before +after):\n%s", diff)
			}
		})
	}
}

func TestPhaseOf(t *testing.T) {
	c := func(t string, s metav1.ConditionStatus) metav1.Condition { return metav1.Condition{Type: t, Status: s} }
	for name, tc := range map[string]struct {
		conds   []metav1.Condition
		suspend bool
		want    v1alpha1.Phase
	}{
		"nothing yet": {nil, false, v1alpha1.PhasePending},
		"degraded wins": {[]metav1.Condition{c(v1alpha1.ConditionDegraded, metav1.ConditionTrue), c(v1alpha1.ConditionReady, metav1.ConditionTrue)},
			false, v1alpha1.PhaseDegraded},
		"suspended":  {[]metav1.Condition{c(v1alpha1.ConditionProgressing, metav1.ConditionFalse)}, true, v1alpha1.PhaseSuspended},
		"suspending": {[]metav1.Condition{c(v1alpha1.ConditionProgressing, metav1.ConditionTrue)}, true, v1alpha1.PhaseProgressing},
		"running":    {[]metav1.Condition{c(v1alpha1.ConditionReady, metav1.ConditionTrue)}, false, v1alpha1.PhaseRunning},
	} {
		t.Run(name, func(t *testing.T) {
			if got := phaseOf(tc.conds, tc.suspend); got != tc.want {
				t.Errorf("phase %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAppendRestarts(t *testing.T) {
	rec := func(i int, reason string) v1alpha1.RestartRecord {
		return v1alpha1.RestartRecord{Time: metav1.NewTime(now.Add(time.Duration(i) * time.Second)), Worker: fmt.Sprintf("w-%02d", i), Reason: reason}
	}
	var recent []v1alpha1.RestartRecord
	for i := range 49 {
		recent = append(recent, rec(i, supervisor.Crashed))
	}
	counts, got := appendRestarts(v1alpha1.RestartCounts{Crashed: 49}, recent,
		[]v1alpha1.RestartRecord{rec(49, supervisor.Stalled), rec(50, supervisor.Looping), rec(51, supervisor.GPUUnhealthy)})
	if diff := cmp.Diff(v1alpha1.RestartCounts{Crashed: 49, Stalled: 1, Looping: 1, GPUUnhealthy: 1}, counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if len(got) != maxRecentRestarts || got[0].Worker != "w-02" || got[len(got)-1].Worker != "w-51" {
		t.Errorf("recent = %d records from %s to %s, want the latest %d (w-02 to w-51)", len(got), got[0].Worker, got[len(got)-1].Worker, maxRecentRestarts)
	}
	if len(recent) != 49 || recent[0].Worker != "w-00" {
		t.Error("appendRestarts changed the slice it was given")
	}
}

func TestDeletionsAreForgotten(t *testing.T) {
	d := newDeletions()
	a, b := types.NamespacedName{Namespace: "team", Name: "a"}, types.NamespacedName{Namespace: "team", Name: "b"}
	d.expect(a, "uid-1", []string{"w-00", "w-01"})
	d.expect(b, "uid-2", []string{"w-09"})

	if diff := cmp.Diff(sets.New("w-01"), d.pending(a, "uid-1", sets.New("w-01", "w-05"))); diff != "" {
		t.Errorf("pending: the deleted w-00 is forgotten, w-01 still expected (-want +got):\n%s", diff)
	}
	if got := d.pending(a, "uid-3", sets.New("w-01")); got.Len() != 0 {
		t.Errorf("pending for a new RayCluster of the fleet = %v, want none (those of the old one are dropped)", sets.List(got))
	}
	d.forget(b)
	if n := d.len(); n != 0 {
		t.Errorf("%d fleets still have expectations after they were forgotten or their cluster changed", n)
	}
}

func TestGPUFaults(t *testing.T) {
	on := func(p corev1.Pod, node string, mutate ...func(*corev1.Pod)) corev1.Pod {
		p.Spec.NodeName = node
		for _, m := range mutate {
			m(&p)
		}
		return p
	}
	gpuCond := func(status corev1.ConditionStatus, reason, msg string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: gpu.PodConditionGPUHealthy, Status: status, Reason: reason, Message: msg})
		}
	}
	failing := gpuCond(corev1.ConditionFalse, "UncorrectableECC", "GPU-1: 2 uncorrectable ECC errors")
	degraded := gpuCond(corev1.ConditionTrue, gpu.ReasonGPUDegraded, "GPU-2: thermal throttling")
	recovered := gpuCond(corev1.ConditionTrue, "GPUsHealthy", "")
	deleting := func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(now)) }
	nodes := nodeGPUs{faulty: map[string]string{"gpu-a": "XidCriticalError=True (XID 79)"}}
	var many []corev1.Pod
	for i := range 40 {
		many = append(many, on(gpuWorker(fmt.Sprintf("w-%02d", i), 1, corev1.PodRunning), "gpu-a"))
	}
	for name, tc := range map[string]struct {
		pods  []corev1.Pod
		nodes nodeGPUs
		want  []v1alpha1.GPUFault
	}{
		"healthy": {pods: []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-c")}, nodes: nodes},
		"the pod's condition, without node observations (the health phase did not run)": {
			pods: []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-c", failing)},
			want: []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-c", Reason: "UncorrectableECC", Message: "GPU-1: 2 uncorrectable ECC errors"}},
		},
		"a faulty node: its GPU workers; CPU workers are not on a GPU": {
			pods:  []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-a"), on(worker("cpu", "r1", true), "gpu-a")},
			nodes: nodes,
			want:  []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-a", Reason: supervisor.NodeGPUFault, Message: "XidCriticalError=True (XID 79)"}},
		},
		"a degraded GPU: the worker holding it, not the others on its node": {
			pods:  []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-b", degraded), on(gpuWorker("w-01", 1, corev1.PodRunning), "gpu-b")},
			nodes: nodes,
			want:  []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-b", Reason: gpu.ReasonGPUDegraded, Message: "GPU-2: thermal throttling"}},
		},
		"recovered GPUs: not listed": {
			pods: []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-b", recovered)},
		},
		"a degraded GPU on a faulty node is failing": {
			pods:  []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-a", degraded)},
			nodes: nodes,
			want:  []v1alpha1.GPUFault{{Worker: "w-00", Node: "gpu-a", Reason: supervisor.NodeGPUFault, Message: "XidCriticalError=True (XID 79)"}},
		},
		"a worker being deleted is gone": {pods: []corev1.Pod{on(gpuWorker("w-00", 1, corev1.PodRunning), "gpu-a", deleting, failing)}, nodes: nodes},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, gpuFaults(tc.pods, tc.nodes)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if got := gpuFaults(many, nodes); len(got) != maxGPUFaults || got[maxGPUFaults-1].Worker != "w-31" {
		t.Errorf("%d faults listed, the last %+v; want the first %d (w-00 to w-31)", len(got), got[len(got)-1], maxGPUFaults)
	}
}

// A canary in progress is Progressing, an aborted one Degraded; a promoted or stable rollout says
// nothing; a canary's workers are updated on their own group's template; after an abort the status
// says what the workers run, the stable revision, not the spec's.
func TestCanaryStatus(t *testing.T) {
	canaryRev := &v1alpha1.RevisionStatus{Revision: "r2", PromptHash: "p2"}
	rollout := func(phase v1alpha1.RolloutPhase, msg string) *v1alpha1.RolloutStatus {
		return &v1alpha1.RolloutStatus{Phase: phase, Stable: v1alpha1.RevisionStatus{Revision: "r1"}, Canary: canaryRev, Message: msg}
	}
	withCanary := func() *rayv1.RayCluster {
		rc := testCluster("r1", headUp)
		rc.Spec.WorkerGroupSpecs = append(rc.Spec.WorkerGroupSpecs, rayv1.WorkerGroupSpec{GroupName: v1alpha1.CanaryGroup})
		rc.Spec.WorkerGroupSpecs[1].Template.Labels = map[string]string{v1alpha1.LabelWorkerHash: "r2"}
		return rc
	}
	canaryPod := worker("w-c", "r2", true)
	canaryPod.Labels[rayGroupLabel] = v1alpha1.CanaryGroup
	for name, tc := range map[string]struct {
		o    statusObservation
		want assessment
	}{
		"canary": {statusObservation{Fleet: testFleet(2), Cluster: withCanary(), Pods: []corev1.Pod{worker("w-0", "r1", true), canaryPod},
			RolloutDecided: true, Rollout: rollout(v1alpha1.RolloutPhaseCanary, "3 of minTasks 20 tasks")},
			assessment{state: stateProgressing, reason: v1alpha1.ReasonCanary, message: "canary of revision r2 (stable r1): 3 of minTasks 20 tasks"}},
		"waiting for a person": {statusObservation{Fleet: testFleet(2), Cluster: withCanary(), Pods: []corev1.Pod{worker("w-0", "r1", true), canaryPod},
			RolloutDecided: true, Rollout: rollout(v1alpha1.RolloutPhaseWaitingForPromotion, "")},
			assessment{state: stateProgressing, reason: v1alpha1.ReasonWaitingForPromotion, message: "canary of revision r2 passed; `agentfleet promote` to roll it out"}},
		"aborted": {statusObservation{Fleet: testFleet(2), Cluster: testCluster("r1", headUp), Pods: []corev1.Pod{worker("w-0", "r1", true), worker("w-1", "r1", true)},
			RolloutDecided: true, Rollout: rollout(v1alpha1.RolloutPhaseAborted, "canary failure rate 80%")},
			assessment{state: stateDegraded, reason: v1alpha1.ReasonCanaryAborted, message: "canary of revision r2 aborted; the workers run revision r1 until the spec changes: canary failure rate 80%"}},
		"not decided this time: the status' rollout stands": {func() statusObservation {
			f := testFleet(2)
			f.Status.Rollout = rollout(v1alpha1.RolloutPhaseAborted, "")
			return statusObservation{Fleet: f, Cluster: testCluster("r1", headUp), Pods: []corev1.Pod{worker("w-0", "r1", true), worker("w-1", "r1", true)}}
		}(), assessment{state: stateDegraded, reason: v1alpha1.ReasonCanaryAborted, message: "canary of revision r2 aborted; the workers run revision r1 until the spec changes"}},
		"promoted: ready": {statusObservation{Fleet: testFleet(2), Cluster: testCluster("r2", headUp), Pods: []corev1.Pod{worker("w-0", "r2", true), worker("w-1", "r2", true)},
			RolloutDecided: true, Rollout: rollout(v1alpha1.RolloutPhasePromoted, "")},
			assessment{state: stateReady, reason: v1alpha1.ReasonReady, message: "2 of 2 agent workers ready on revision r2"}},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, assess(&tc.o, countWorkers(&tc.o)), cmp.AllowUnexported(assessment{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if c := countWorkers(&statusObservation{Fleet: testFleet(2), Cluster: withCanary(), Pods: []corev1.Pod{worker("w-0", "r1", true), canaryPod}}); c.updated != 2 {
		t.Errorf("%d workers updated, want 2: a canary's worker is current on its group's template", c.updated)
	}
	// After an abort the stable group runs r1 while the spec asks for r2: the status says r1's prompt.
	rc := testCluster("r1", headUp)
	rc.Spec.WorkerGroupSpecs[0].Template.Annotations = map[string]string{v1alpha1.AnnotationPromptHash: "p1"}
	rc.Spec.WorkerGroupSpecs[0].Template.Labels[v1alpha1.LabelModelVersion] = "m-6"
	st := computeStatus(statusObservation{Now: now, Fleet: testFleet(2), Cluster: rc, PromptHash: "p2", DesiredRevision: "r2",
		Pods: []corev1.Pod{worker("w-0", "r1", true), worker("w-1", "r1", true)}, RolloutDecided: true, Rollout: rollout(v1alpha1.RolloutPhaseAborted, "")})
	if st.Revision != "r1" || st.PromptHash != "p1" || st.ModelVersion != "m-6" {
		t.Errorf("after an abort: revision %s, prompt %s, model %s; want what the workers run: r1, p1, m-6", st.Revision, st.PromptHash, st.ModelVersion)
	}
}
