//go:build chaos

package e2e

// The faults an operator that holds a rack of GPUs must survive (make test-chaos: these tests only,
// on their own local cluster; CI runs them after make test). Each test leaves the cluster as it found
// it: the shared operator, KubeRay, the nodes.

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
)

const (
	sharedOperator = "agentfleet-operator"
	leaderElection = "agentfleet-operator.agentfleet.dev"
	// client-go's leader election as controller-runtime sets it: a SIGKILLed leader's Lease expires
	// leaseDuration after its last renewal, which the others look for every retryPeriod.
	leaseDuration, retryPeriod = 15 * time.Second, 2 * time.Second
)

// The chaos suite's cluster notices a silent node in 20 s (not 50 s) and evicts its pods 5 s later
// (not 300 s), so that a NotReady node fits in a test.
func init() {
	tuneCluster = append(tuneCluster, func(o *cluster.Options) {
		o.NodeMonitorGracePeriod, o.UnreachableTolerationSeconds = 20*time.Second, 5
	})
}

// stopSharedOperator stops the tests' operator for the test, and starts it again after.
func stopSharedOperator(t *testing.T) {
	t.Helper()
	if err := c.StopPart(sharedOperator); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.RestartPart(context.Background(), sharedOperator); err != nil {
			t.Errorf("starting the shared operator again: %v", err)
		}
	})
}

// isLeader reads an operator's leader_election_master_status (-1: not reachable).
func isLeader(ctx context.Context, name string) float64 {
	families, err := scrape(ctx, c.MetricsURL(name))
	if err != nil {
		return -1
	}
	return gaugeOf(families, "leader_election_master_status", map[string]string{"name": leaderElection})
}

// writesAndReconciles are an operator's API writes (client-go's requests other than reads) and its
// reconciles so far, from its own metrics.
func writesAndReconciles(t *testing.T, name string) (writes, reconciles float64) {
	t.Helper()
	families, err := scrape(context.Background(), c.MetricsURL(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		writes += counterSum(families, "rest_client_requests_total", map[string]string{"method": method})
	}
	return writes, counterSum(families, "controller_runtime_reconcile_total", nil)
}

// Two replicas with leader election: only the leader reconciles and writes; the leader SIGKILLed,
// the other takes over once the dead leader's Lease expires (at most leaseDuration + retryPeriod
// after the kill) and converges a change made meanwhile.
func TestChaosLeaderFailover(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	stopSharedOperator(t)
	kubeconfig, err := operatorKubeconfig(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	replicas := []string{"replica-a", "replica-b"}
	for _, name := range replicas {
		if err := c.StartOperatorWith(ctx, name, filepath.Join(c.Dir, "manager"), cluster.OperatorOptions{Kubeconfig: kubeconfig},
			"--leader-elect", "--leader-election-namespace="+operatorNamespace); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if c.Running(name) {
				_ = c.StopPart(name)
			}
		})
	}
	var leader, standby string
	eventually(t, 60*time.Second, "one leader", func(ctx context.Context) (bool, string) {
		a, b := isLeader(ctx, replicas[0]), isLeader(ctx, replicas[1])
		switch {
		case a == 1 && b == 0:
			leader, standby = replicas[0], replicas[1]
		case b == 1 && a == 0:
			leader, standby = replicas[1], replicas[0]
		default:
			return false, fmt.Sprintf("leader_election_master_status: %s %v, %s %v", replicas[0], a, replicas[1], b)
		}
		return true, ""
	})

	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("failover", ns).Replicas(2))
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if writes, reconciles := writesAndReconciles(t, standby); writes != 0 || reconciles != 0 {
		t.Errorf("the standby %s wrote %v times and reconciled %v times: only the leader may", standby, writes, reconciles)
	}
	if writes, _ := writesAndReconciles(t, leader); writes == 0 {
		t.Errorf("the leader %s wrote nothing: is it the one that made the fleet?", leader)
	}

	killed := time.Now()
	if _, err := c.KillPart(leader, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	updateFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = ptr.To[int32](3) })
	eventually(t, leaseDuration+retryPeriod+15*time.Second, standby+" leading", func(ctx context.Context) (bool, string) {
		return isLeader(ctx, standby) == 1, "not yet"
	})
	takeover := time.Since(killed)
	t.Logf("takeover %s after the SIGKILL (lease duration %s, retry period %s)", takeover.Round(100*time.Millisecond), leaseDuration, retryPeriod)
	if takeover > leaseDuration+retryPeriod+2*time.Second {
		t.Errorf("takeover took %s, want within the lease duration and a retry period (%s)", takeover, leaseDuration+retryPeriod)
	}
	f := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if f.Status.ReadyReplicas != 3 {
		t.Errorf("after the takeover: %d ready workers, want the 3 declared meanwhile", f.Status.ReadyReplicas)
	}
	oneRayCluster(t, key)
}

// oneRayCluster fails the test unless the fleet has exactly one RayCluster (no duplicate made by a
// restarted or new operator).
func oneRayCluster(t *testing.T, key client.ObjectKey) {
	t.Helper()
	var list rayv1.RayClusterList
	if err := k8s.List(context.Background(), &list, client.InNamespace(key.Namespace), client.MatchingLabels{v1alpha1.LabelFleet: key.Name}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("fleet %s has %d RayClusters, want 1", key.Name, len(list.Items))
	}
}

// KubeRay down: a new fleet says it waits for KubeRay (Progressing, WaitingForKubeRay), a running
// fleet keeps its RayCluster and workers (nothing is deleted), and both converge once KubeRay is back.
func TestChaosKubeRayDown(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	_, running := newFleet(t, builder.MakeAgentFleet("before", ns).Replicas(2))
	waitCondition(t, running, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	before := podUIDs(t, running)

	if err := c.StopPart("kuberay-operator"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.Running("kuberay-operator") {
			_ = c.RestartPart(context.Background(), "kuberay-operator")
		}
	})
	_, fresh := newFleet(t, builder.MakeAgentFleet("during", ns).Replicas(2))
	f := waitCondition(t, fresh, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonWaitingForKubeRay, 100*time.Second)
	t.Logf("while KubeRay is down: %s", conditionText(f, v1alpha1.ConditionProgressing))
	updateFleet(t, running, func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = ptr.To[int32](3) })
	waitCondition(t, running, v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonWaitingForKubeRay, 100*time.Second)
	if n := survivors(t, running, before); n != 2 {
		t.Errorf("%d of the 2 workers of the running fleet are there while KubeRay is down, want 2: nothing is deleted", n)
	}

	if err := c.RestartPart(ctx, "kuberay-operator"); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, fresh, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 90*time.Second)
	waitCondition(t, running, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 90*time.Second)
	if n := survivors(t, running, before); n != 2 {
		t.Errorf("%d of the 2 workers survived KubeRay's absence, want 2", n)
	}
	oneRayCluster(t, fresh)
	oneRayCluster(t, running)
}

func conditionText(f *v1alpha1.AgentFleet, condType string) string {
	for _, cond := range f.Status.Conditions {
		if cond.Type == condType {
			return fmt.Sprintf("%s=%s %s: %s", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
	}
	return condType + " absent"
}

// A node with workers deleted: its pods go (the pod garbage collector), KubeRay makes new ones on the
// other node, the fleet is back at its declared count, and the supervisor replaced none of them
// itself (KubeRay already did).
func TestChaosNodeDeleted(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	pool := map[string]string{"agentfleet.dev/e2e-pool": "chaos"}
	ns, key := fleetOnNodes(t, "nodeloss", pool, cluster.Node{Name: "chaos-0", CPU: "64", Memory: "256Gi", Labels: pool},
		cluster.Node{Name: "chaos-1", CPU: "64", Memory: "256Gi", Labels: pool})
	byNode := map[string]int{}
	for _, p := range agentPods(t, ns, key.Name) {
		byNode[p.Spec.NodeName]++
	}
	victim := "chaos-0"
	if byNode["chaos-1"] > byNode["chaos-0"] {
		victim = "chaos-1"
	}
	lost := byNode[victim]
	if lost == 0 {
		t.Fatalf("no worker on either chaos node: %v", byNode)
	}
	if err := c.DeleteNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted node %s with %d of the 4 workers", victim, lost)
	eventually(t, 180*time.Second, "4 Ready workers, none on the deleted node", func(ctx context.Context) (bool, string) {
		ready, onVictim := 0, 0
		pods := agentPods(t, ns, key.Name)
		for i := range pods {
			if pods[i].Spec.NodeName == victim {
				onVictim++
			}
			if podReady(&pods[i]) && pods[i].DeletionTimestamp == nil {
				ready++
			}
		}
		return ready == 4 && onVictim == 0 && len(pods) == 4, fmt.Sprintf("%d pods, %d Ready, %d on %s", len(pods), ready, onVictim, victim)
	})
	f := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if n := restartsTotal(f.Status.Restarts); n != 0 {
		t.Errorf("the supervisor replaced %d workers (%+v) that KubeRay had already replaced", n, f.Status.Restarts)
	}
	oneRayCluster(t, key)
}

// A node goes silent (its kubelet gone, its network cut) with workers on it: the node lifecycle
// controller marks it NotReady and the taint manager deletes its pods, which stay Terminating with
// no kubelet to finish them, and which KubeRay counts as its workers. The operator force-deletes them
// once past their grace period; KubeRay replaces them on the other node, the fleet is back at its
// declared count, never over it, and no restart is counted: the node failed, not the agents. The
// node's return changes nothing.
func TestChaosNodeNotReady(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	pool := map[string]string{"agentfleet.dev/e2e-pool": "silent"}
	var nodes []string
	var own []cluster.Node
	for i := range 2 {
		n := cluster.Node{Name: fmt.Sprintf("silent-%d", i), CPU: "64", Memory: "256Gi", Labels: pool, OwnKwok: true}
		nodes, own = append(nodes, n.Name), append(own, n)
	}
	ns, key := fleetOnNodes(t, "silent", pool, own...)
	// The victim: the pool node with the most workers and not the head (whose loss is another story).
	var head corev1.PodList
	if err := k8s.List(ctx, &head, client.InNamespace(ns), client.MatchingLabels{"ray.io/node-type": "head"}); err != nil || len(head.Items) != 1 {
		t.Fatalf("the head pod: %v, %d found", err, len(head.Items))
	}
	byNode := map[string][]string{}
	for _, p := range agentPods(t, ns, key.Name) {
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p.Name)
	}
	victim := ""
	for _, n := range nodes {
		if n != head.Items[0].Spec.NodeName && len(byNode[n]) > len(byNode[victim]) {
			victim = n
		}
	}
	if victim == "" {
		t.Fatalf("no pool node holds workers without the head (workers by node %v, head on %s)", byNode, head.Items[0].Spec.NodeName)
	}
	lost := byNode[victim]
	if err := c.SilenceNode(victim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.Running(cluster.NodeKwok(victim)) {
			_ = c.RestoreNode(context.Background(), victim)
		}
	})
	silenced := time.Now()
	t.Logf("silenced node %s with workers %v", victim, lost)

	most := 0
	eventually(t, 4*time.Minute, "4 Ready workers, none on the silent node, the stranded ones gone", func(ctx context.Context) (bool, string) {
		pods := agentPods(t, ns, key.Name)
		ready, live, onVictim := 0, 0, 0
		for i := range pods {
			if pods[i].Spec.NodeName == victim {
				onVictim++
			}
			if pods[i].DeletionTimestamp == nil {
				live++
			}
			if podReady(&pods[i]) {
				ready++
			}
		}
		most = max(most, live)
		return ready == 4 && onVictim == 0 && len(pods) == 4, fmt.Sprintf("%d pods, %d not being deleted, %d Ready, %d on %s", len(pods), live, ready, onVictim, victim)
	})
	t.Logf("back at 4 Ready workers %s after the node went silent", time.Since(silenced).Round(time.Second))
	if most > 4 {
		t.Errorf("%d workers not being deleted at once: more than the 4 declared", most)
	}
	node := &corev1.Node{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: victim}, node); err != nil {
		t.Fatal(err)
	}
	if cluster.Schedulable(node) {
		t.Errorf("node %s is Ready: the test did not silence it", victim)
	}
	if n, err := countEvents(ctx, key, "StrandedWorkerDeleted"); err != nil || n != len(lost) {
		t.Errorf("%d StrandedWorkerDeleted Events (%v), want one per worker on %s: %v", n, err, victim, lost)
	}
	f := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	if n := restartsTotal(f.Status.Restarts); n != 0 {
		t.Errorf("%d restarts counted (%+v): a node's failure is not the agents'", n, f.Status.Restarts)
	}
	oneRayCluster(t, key)

	// The node returns: nothing of the fleet changes.
	if err := c.RestoreNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForNodes(ctx, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	before := map[string]bool{}
	for _, p := range agentPods(t, ns, key.Name) {
		before[string(p.UID)] = true
	}
	time.Sleep(5 * time.Second)
	after := agentPods(t, ns, key.Name)
	for _, p := range after {
		if !before[string(p.UID)] || p.DeletionTimestamp != nil {
			t.Errorf("after the node's return, worker %s changed (new or being deleted)", p.Name)
		}
	}
	if len(after) != 4 {
		t.Errorf("%d workers after the node's return, want 4", len(after))
	}
}

// fleetOnNodes adds nodes (deleted after the test) and a fleet of 4 workers held to them by the
// pool label, and waits until it is Ready.
func fleetOnNodes(t *testing.T, name string, pool map[string]string, nodes ...cluster.Node) (string, client.ObjectKey) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		if err := c.AddNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.DeleteNode(context.Background(), n.Name) })
	}
	if err := c.WaitForNodes(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet(name, ns).Replicas(4).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Worker.NodeSelector = pool
	}))
	waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	return ns, key
}

func restartsTotal(r v1alpha1.RestartCounts) int32 {
	return r.Crashed + r.Stalled + r.Looping + r.GPUUnhealthy + r.OverBudget
}

// etcd paused for a few seconds (a stalled disk): the operator does not crash, loses no status, and
// converges a change made around it.
func TestChaosEtcdPaused(t *testing.T) {
	needCluster(t)
	ns := namespace(t)
	_, key := newFleet(t, builder.MakeAgentFleet("etcdpause", ns).Replicas(2))
	before := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 60*time.Second)
	updateFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = ptr.To[int32](3) })
	if err := c.PauseEtcd(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !c.Running(sharedOperator) {
		t.Fatalf("the operator exited while etcd was paused (log: %s)", c.LogPath(sharedOperator))
	}
	f := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 90*time.Second)
	if f.Status.ReadyReplicas != 3 || f.Status.RayClusterName != before.Status.RayClusterName || f.Status.ObservedGeneration != f.Generation {
		t.Errorf("after etcd's pause: status %+v", f.Status)
	}
	oneRayCluster(t, key)
	if !c.Running(sharedOperator) {
		t.Errorf("the operator exited after etcd's pause (log: %s)", c.LogPath(sharedOperator))
	}
}

// The API server restarted under load, etcd's data kept: the operator recovers without help, its
// fleets converge a change made after, and no child is duplicated.
func TestChaosAPIServerRestart(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t)
	var keys []client.ObjectKey
	for i := range 5 {
		_, key := newFleet(t, builder.MakeAgentFleet(fmt.Sprintf("restart-%d", i), ns).Replicas(2).Job(v1alpha1.JobSpec{Name: "eval", Entrypoint: "python eval.py"}))
		keys = append(keys, key)
	}
	// Under load: the fleets are still being made when the API server goes.
	if err := c.RestartAPIServer(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		updateFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = ptr.To[int32](3) })
	}
	for _, key := range keys {
		f := waitCondition(t, key, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, 120*time.Second)
		if f.Status.ReadyReplicas != 3 {
			t.Errorf("%s: %d ready workers, want 3", key.Name, f.Status.ReadyReplicas)
		}
		oneRayCluster(t, key)
		var jobs rayv1.RayJobList
		if err := k8s.List(ctx, &jobs, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelFleet: key.Name}); err != nil {
			t.Fatal(err)
		}
		if len(jobs.Items) != 1 {
			t.Errorf("%s has %d RayJobs, want 1", key.Name, len(jobs.Items))
		}
	}
	if !c.Running(sharedOperator) {
		t.Errorf("the operator exited across the API server's restart (log: %s)", c.LogPath(sharedOperator))
	}
}
