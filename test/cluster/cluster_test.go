package cluster_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/test/cluster"
)

// One cluster for the package: two 8-GPU H100 nodes, one A100 node and one CPU node.
var testCluster *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipping the local cluster's e2e tests in -short mode")
		return m.Run()
	}
	ctx := context.Background()
	nodes := append(cluster.GPUNodes("h100", 2, 8, "NVIDIA-H100-80GB-HBM3"),
		cluster.Node{Name: "a100-0", GPUs: 4, GPUProduct: "NVIDIA-A100-SXM4-80GB"},
		cluster.Node{Name: "cpu-0"})
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: nodes, Progress: os.Stdout, AuditUsers: []string{auditedUser}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("local cluster up in %s (%s)\n", time.Since(start).Round(time.Millisecond), c.Dir)
	testCluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

func needCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	if testCluster == nil {
		t.Skip("needs the local cluster (not started in -short mode)")
	}
	return testCluster
}

func gpuTolerations() []corev1.Toleration {
	return []corev1.Toleration{{Key: cluster.GPUTaintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
}

func newPod(ns, name string, gpus int64, tolerate bool) *corev1.Pod {
	ctr := corev1.Container{Name: "agent", Image: "agent:dev"}
	if gpus > 0 {
		q := *resource.NewQuantity(gpus, resource.DecimalSI)
		ctr.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{cluster.GPUResource: q}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{ctr}},
	}
	if tolerate {
		pod.Spec.Tolerations = gpuTolerations()
	}
	return pod
}

func newNamespace(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := c.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// waitPod polls the pod until done says so, failing the test with the pod's last status.
func waitPod(t *testing.T, c *cluster.Cluster, key client.ObjectKey, what string, done func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, key, pod); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return done(pod), nil
	})
	if err != nil {
		t.Fatalf("pod %s not %s: %v; status: %+v", key, what, err, pod.Status)
	}
	return pod
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestNodesCarryGPUCapacityLabelsAndTaint(t *testing.T) {
	c := needCluster(t)
	node := &corev1.Node{}
	if err := c.Client.Get(context.Background(), client.ObjectKey{Name: "h100-1"}, node); err != nil {
		t.Fatal(err)
	}
	if !cluster.Schedulable(node) {
		t.Errorf("node h100-1 not schedulable: taints %v, conditions %v", node.Spec.Taints, node.Status.Conditions)
	}
	if got := node.Status.Allocatable[cluster.GPUResource]; got.Value() != 8 {
		t.Errorf("allocatable %s = %s, want 8", cluster.GPUResource, got.String())
	}
	if got := node.Labels[cluster.GPUProductLabel]; got != "NVIDIA-H100-80GB-HBM3" {
		t.Errorf("label %s = %q", cluster.GPUProductLabel, got)
	}
	if got := node.Labels[cluster.GPUMemoryLabel]; got != "81559" {
		t.Errorf("label %s = %q", cluster.GPUMemoryLabel, got)
	}
	if len(node.Spec.Taints) != 1 || node.Spec.Taints[0].Key != cluster.GPUTaintKey || node.Spec.Taints[0].Effect != corev1.TaintEffectNoSchedule {
		t.Errorf("taints = %v, want only %s:NoSchedule", node.Spec.Taints, cluster.GPUTaintKey)
	}
}

func TestGPUPodRunsOnGPUNodeAndCPUPodStaysOffIt(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	ns := newNamespace(t, c)
	start := time.Now()
	if err := c.Client.Create(ctx, newPod(ns, "gpu", 2, true)); err != nil {
		t.Fatal(err)
	}
	gpu := waitPod(t, c, client.ObjectKey{Namespace: ns, Name: "gpu"}, "Running and Ready", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && podReady(p)
	})
	t.Logf("2-GPU pod Running and Ready on %s after %s", gpu.Spec.NodeName, time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(gpu.Spec.NodeName, "h100-") && gpu.Spec.NodeName != "a100-0" {
		t.Errorf("GPU pod on node %q, want a GPU node", gpu.Spec.NodeName)
	}
	if gpu.Status.PodIP == "" {
		t.Error("GPU pod has no pod IP")
	}

	if err := c.Client.Create(ctx, newPod(ns, "cpu", 0, false)); err != nil {
		t.Fatal(err)
	}
	cpu := waitPod(t, c, client.ObjectKey{Namespace: ns, Name: "cpu"}, "Running", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning
	})
	if cpu.Spec.NodeName != "cpu-0" {
		t.Errorf("pod without toleration on node %q, want cpu-0 (the GPU taint keeps it off the others)", cpu.Spec.NodeName)
	}
}

func TestGPUPodWithoutTolerationIsUnschedulable(t *testing.T) {
	c := needCluster(t)
	ns := newNamespace(t, c)
	if err := c.Client.Create(context.Background(), newPod(ns, "untolerated", 1, false)); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, c, client.ObjectKey{Namespace: ns, Name: "untolerated"}, "marked unschedulable", func(p *corev1.Pod) bool {
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Reason == corev1.PodReasonUnschedulable {
				return true
			}
		}
		return false
	})
	if pod.Spec.NodeName != "" {
		t.Errorf("pod bound to %s", pod.Spec.NodeName)
	}
}

func TestRealKubeRayRunsGPURayCluster(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	ns := newNamespace(t, c)
	gpus := resource.MustParse("1")
	worker := corev1.PodSpec{
		Tolerations: gpuTolerations(),
		Containers: []corev1.Container{{Name: "ray-worker", Image: "rayproject/ray:2.52.0-gpu", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{cluster.GPUResource: gpus, corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi")},
		}}},
	}
	rc := &rayv1.RayCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agents"},
		Spec: rayv1.RayClusterSpec{
			RayVersion: "2.52.0",
			HeadGroupSpec: rayv1.HeadGroupSpec{
				RayStartParams: map[string]string{},
				Template:       corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "ray-head", Image: "rayproject/ray:2.52.0"}}}},
			},
			WorkerGroupSpecs: []rayv1.WorkerGroupSpec{{
				GroupName: "agents", Replicas: ptr(int32(3)), MinReplicas: ptr(int32(3)), MaxReplicas: ptr(int32(3)),
				RayStartParams: map[string]string{},
				Template:       corev1.PodTemplateSpec{Spec: worker},
			}},
		},
	}
	start := time.Now()
	if err := c.Client.Create(ctx, rc); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(rc), rc); err != nil {
			return false, err
		}
		return rc.Status.State == rayv1.Ready && rc.Status.ReadyWorkerReplicas == 3, nil //nolint:staticcheck // State is what KubeRay v1.6 still reports
	})
	if err != nil {
		t.Fatalf("RayCluster not ready: %v; status %+v (KubeRay log: %s)", err, rc.Status, c.LogPath("kuberay-operator"))
	}
	t.Logf("RayCluster with 3 GPU workers Ready after %s", time.Since(start).Round(time.Millisecond))

	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{rayutils.RayNodeGroupLabelKey: "agents"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 3 {
		t.Fatalf("%d worker pods, want 3", len(pods.Items))
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Spec.NodeName, "h100-") && p.Spec.NodeName != "a100-0" {
			t.Errorf("worker %s on %q, want a GPU node", p.Name, p.Spec.NodeName)
		}
	}
}

func TestFaultInjection(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	ns := newNamespace(t, c)

	t.Run("FailContainer", func(t *testing.T) {
		pod := newPod(ns, "fails", 0, false)
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
		if err := c.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		key := client.ObjectKeyFromObject(pod)
		waitPod(t, c, key, "Ready", podReady)
		if err := c.FailContainer(ctx, key, "agent", 137); err != nil {
			t.Fatal(err)
		}
		// Read it back after a moment: kwok must not write over the injected status.
		time.Sleep(time.Second)
		got := waitPod(t, c, key, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		term := got.Status.ContainerStatuses[0].State.Terminated
		if term == nil || term.ExitCode != 137 {
			t.Errorf("container state = %+v, want terminated with exit code 137", got.Status.ContainerStatuses[0].State)
		}
		if podReady(got) {
			t.Error("pod still Ready")
		}
	})

	t.Run("CrashLoop", func(t *testing.T) {
		pod := newPod(ns, "loops", 0, false)
		if err := c.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		key := client.ObjectKeyFromObject(pod)
		waitPod(t, c, key, "Ready", podReady)
		if err := c.CrashLoop(ctx, key, "agent", 5); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		got := waitPod(t, c, key, "in CrashLoopBackOff", func(p *corev1.Pod) bool {
			w := p.Status.ContainerStatuses[0].State.Waiting
			return w != nil && w.Reason == "CrashLoopBackOff"
		})
		if cs := got.Status.ContainerStatuses[0]; cs.RestartCount != 5 || cs.LastTerminationState.Terminated == nil {
			t.Errorf("restartCount %d, lastState %+v; want 5 and a terminated last state", cs.RestartCount, cs.LastTerminationState)
		}
		if got.Status.Phase != corev1.PodRunning || podReady(got) {
			t.Errorf("phase %s, ready %v; want Running and not Ready", got.Status.Phase, podReady(got))
		}
	})

	t.Run("FailContainerNamesMissingContainer", func(t *testing.T) {
		err := c.FailContainer(ctx, client.ObjectKey{Namespace: ns, Name: "loops"}, "sidecar", 1)
		if err == nil || !strings.Contains(err.Error(), `"sidecar"`) {
			t.Errorf("err = %v, want one naming the container", err)
		}
	})

	t.Run("CordonAndDeleteNode", func(t *testing.T) {
		if err := c.AddNode(ctx, cluster.Node{Name: "doomed", GPUs: 1, GPUProduct: "NVIDIA-L4"}); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitForNodes(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.CordonNode(ctx, "doomed"); err != nil {
			t.Fatal(err)
		}
		// The pod selects a label given after the cordon: a scheduler whose cache shows the label
		// shows the cordon too (a node's updates arrive in order), however loaded the machine is.
		if err := c.Client.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}},
			client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"test.agentfleet.dev/after-cordon":"true"}}}`))); err != nil {
			t.Fatal(err)
		}
		pod := newPod(ns, "wants-l4", 1, true)
		pod.Spec.NodeSelector = map[string]string{cluster.GPUProductLabel: "NVIDIA-L4", "test.agentfleet.dev/after-cordon": "true"}
		if err := c.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		waitPod(t, c, client.ObjectKeyFromObject(pod), "unschedulable on the cordoned node", func(p *corev1.Pod) bool {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled && cond.Reason == corev1.PodReasonUnschedulable {
					return true
				}
			}
			return false
		})
		if err := c.DeleteNode(ctx, "doomed"); err != nil {
			t.Fatal(err)
		}
		err := c.Client.Get(ctx, client.ObjectKey{Name: "doomed"}, &corev1.Node{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("node still there after delete: %v", err)
		}
	})
}

// A part that fails to start is named with its log, and nothing started before it is left running.
func TestStartFailureNamesPartAndLeavesNothingBehind(t *testing.T) {
	real := needCluster(t)
	_ = real
	binDir := t.TempDir()
	realBins, err := defaultBins()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range cluster.Binaries {
		if err := os.Symlink(filepath.Join(realBins, b), filepath.Join(binDir, b)); err != nil {
			t.Fatal(err)
		}
	}
	// kwok starts after kube-apiserver, etcd, kube-controller-manager and kube-scheduler.
	if err := os.Remove(filepath.Join(binDir, "kwok")); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'kwok: cannot reach the moon' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(binDir, "kwok"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	_, err = cluster.Start(context.Background(), cluster.Options{BinDir: binDir, Dir: dir, WithoutKubeRay: true})
	var pe *cluster.PartError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *cluster.PartError", err)
	}
	if pe.Part != "kwok" || pe.Log != filepath.Join(dir, "kwok.log") {
		t.Errorf("part %q, log %q; want kwok and %s", pe.Part, pe.Log, filepath.Join(dir, "kwok.log"))
	}
	if !strings.Contains(err.Error(), "cannot reach the moon") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("error does not show the log's end and the exit status:\n%v", err)
	}
	if left := processesRunning(t, binDir); len(left) > 0 {
		t.Errorf("processes left running after the failed start: %v", left)
	}
}

func TestStartNamesMissingBinaries(t *testing.T) {
	_, err := cluster.Start(context.Background(), cluster.Options{BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "kube-apiserver") || !strings.Contains(err.Error(), "make bins") {
		t.Errorf("err = %v, want one naming the missing binaries and `make bins`", err)
	}
}

// processesRunning lists the command lines of live processes whose program lies in dir.
func processesRunning(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if fields := strings.Fields(string(stat)); len(fields) > 2 && fields[2] == "Z" {
			continue // a zombie has exited
		}
		argv := strings.Split(string(cmdline), "\x00")
		if strings.HasPrefix(argv[0], dir+"/") {
			found = append(found, strings.Join(argv, " "))
		}
	}
	return found
}

func defaultBins() (string, error) {
	if d := os.Getenv("AGENTFLEET_BIN_DIR"); d != "" {
		return d, nil
	}
	return filepath.Abs("../../bin")
}

func ptr[T any](v T) *T { return &v }
