// Package e2e tests the operator, as a process, on the local cluster with the real KubeRay operator.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/cluster"
)

var (
	c   *cluster.Cluster
	k8s client.Client
)

// tuneCluster change the local cluster's options before it starts (the chaos suite's node timings).
var tuneCluster []func(*cluster.Options)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	crds, err := cluster.RepoPath("config/crd/bases")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := cluster.Options{
		CRDDirectoryPaths: []string{crds},
		// Room for every test's fleets at once: the tests leave theirs for the logs.
		Nodes: append(cluster.GPUNodes("h100", 2, 8, "NVIDIA-H100-80GB-HBM3"),
			cluster.Node{Name: "cpu-0", CPU: "512", Memory: "4Ti"}, cluster.Node{Name: "cpu-1", CPU: "512", Memory: "4Ti"}),
		Progress: os.Stdout,
		// What the operator does with its role, for checkOperatorGrantsUsed.
		AuditUsers: []string{operatorUser},
	}
	for _, tune := range tuneCluster {
		tune(&opts)
	}
	c, err = cluster.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := 1
	defer func() { c.Finish(code) }()
	scheme := cluster.Scheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if k8s, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	manager, err := c.BuildOperator(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	operatorConfig, err := operatorKubeconfig(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := c.StartOperatorWith(ctx, "agentfleet-operator", manager, cluster.OperatorOptions{Kubeconfig: operatorConfig}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code = m.Run()
	// Only the whole suite uses all the operator needs: a narrowed run would report false unused verbs.
	if fullSuite() {
		if err := checkOperatorGrantsUsed(c.AuditLogPath(), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	return code
}

func needCluster(t *testing.T) {
	t.Helper()
	if c == nil {
		t.Skip("needs the local cluster (not started in -short mode)")
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// eventually polls cond every 100 ms for up to timeout, failing with what it last said.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, msg := cond(ctx)
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not after %s; last: %s (operator log: %s)", what, timeout, last, c.LogPath("agentfleet-operator"))
	}
}

func fleetCondition(ctx context.Context, key client.ObjectKey, condType string) (*metav1.Condition, *v1alpha1.AgentFleet) {
	f := &v1alpha1.AgentFleet{}
	if err := k8s.Get(ctx, key, f); err != nil {
		return nil, nil
	}
	cond := meta.FindStatusCondition(f.Status.Conditions, condType)
	if cond == nil || cond.ObservedGeneration != f.Generation || f.Status.ObservedGeneration != f.Generation {
		return nil, f
	}
	return cond, f
}

func waitCondition(t *testing.T, key client.ObjectKey, condType string, status metav1.ConditionStatus, reason string, timeout time.Duration) *v1alpha1.AgentFleet {
	t.Helper()
	var fleet *v1alpha1.AgentFleet
	eventually(t, timeout, fmt.Sprintf("fleet %s %s=%s/%s", key, condType, status, reason), func(ctx context.Context) (bool, string) {
		cond, f := fleetCondition(ctx, key, condType)
		fleet = f
		if cond == nil {
			if f == nil {
				return false, "no fleet"
			}
			return false, fmt.Sprintf("status %+v", f.Status)
		}
		return cond.Status == status && (reason == "" || cond.Reason == reason), fmt.Sprintf("%s=%s/%s: %s", condType, cond.Status, cond.Reason, cond.Message)
	})
	return fleet
}

func TestSamplesBecomeReady(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	for _, dir := range []string{"config/dev", "config/samples"} {
		path, err := cluster.RepoPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ApplyFiles(ctx, path); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"researchers", "coders", "support"} {
		f := waitCondition(t, client.ObjectKey{Namespace: "default", Name: name}, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
		if f.Status.Phase != v1alpha1.PhaseRunning || f.Status.ReadyReplicas != *f.Spec.Replicas {
			t.Errorf("fleet %s: phase %s, %d ready of %d", name, f.Status.Phase, f.Status.ReadyReplicas, *f.Spec.Replicas)
		}
	}
	liveFixture(t, "agentfleet-ready", "Healthy", &v1alpha1.AgentFleet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "coders"}})
	// KubeRay's own counts can trail the pods the fleet's status is computed from: the RayCluster is
	// a Healthy fixture once KubeRay reports every worker ready.
	eventually(t, 20*time.Second, "KubeRay reports every worker of coders ready", func(ctx context.Context) (bool, string) {
		rc := &rayv1.RayCluster{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "coders"}, rc); err != nil {
			return false, err.Error()
		}
		return rc.Status.ReadyWorkerReplicas == rc.Status.DesiredWorkerReplicas && rc.Status.DesiredWorkerReplicas > 0,
			fmt.Sprintf("%d/%d workers ready", rc.Status.ReadyWorkerReplicas, rc.Status.DesiredWorkerReplicas)
	})
	liveFixture(t, "raycluster-ready", "Healthy", &rayv1.RayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "coders"}})
	// kubectl wait, as a pipeline would use it.
	kubectl := exec.Command(kubectlPath(t), "--kubeconfig", c.Kubeconfig, "wait", "--for=condition=Ready", "--timeout=10s", "agentfleet/coders", "-n", "default")
	if out, err := kubectl.CombinedOutput(); err != nil {
		t.Errorf("kubectl wait --for=condition=Ready: %v\n%s", err, out)
	}
	// GPU workers are on GPU nodes of the product asked for.
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{v1alpha1.LabelFleet: "coders", rayutils.RayNodeGroupLabelKey: v1alpha1.WorkerGroup}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Spec.NodeName, "h100-") {
			t.Errorf("GPU worker %s on node %q", p.Name, p.Spec.NodeName)
		}
	}
	// The operator's metrics say the same: its workers Ready, its GPUs held, Ready=True.
	coders := getFleet(t, client.ObjectKey{Namespace: "default", Name: "coders"})
	eventually(t, 10*time.Second, "the fleet metrics of coders", func(ctx context.Context) (bool, string) {
		families, err := scrape(ctx, c.MetricsURL("agentfleet-operator"))
		if err != nil {
			return false, err.Error()
		}
		ready := gaugeOf(families, "agentfleet_workers", map[string]string{"namespace": "default", "fleet": "coders", "state": "ready"})
		gpus := gaugeOf(families, "agentfleet_gpus_allocated", map[string]string{"namespace": "default", "fleet": "coders"})
		cond := gaugeOf(families, "agentfleet_fleet_condition", map[string]string{"namespace": "default", "fleet": "coders", "type": "Ready", "status": "True"})
		return ready == float64(coders.Status.ReadyReplicas) && gpus == float64(coders.Status.GPUs.Allocated) && gpus > 0 && cond == 1,
			fmt.Sprintf("ready %g, GPUs %g, Ready=True %g; status: %d ready, %d GPUs allocated", ready, gpus, cond, coders.Status.ReadyReplicas, coders.Status.GPUs.Allocated)
	})
}

func kubectlPath(t *testing.T) string {
	t.Helper()
	p, err := cluster.RepoPath("bin/kubectl")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
