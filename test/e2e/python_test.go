package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/test/cluster"
)

// python is Debian's interpreter, which python3-kubernetes installs into (`make python-deps`).
const python = "/usr/bin/python3"

// The Python SDK's unit tests.
func TestPythonSDKUnit(t *testing.T) {
	needCluster(t)
	dir, err := cluster.RepoPath("sdk/python")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-m", "unittest", "discover", "-s", dir, "-v").CombinedOutput()
	if err != nil {
		t.Fatalf("python unit tests: %v (python3-kubernetes is installed by `make python-deps`)\n%s", err, out)
	}
}

// A Python agent keeps its heartbeat with the SDK, then loops: the operator sees it and replaces it.
func TestPythonAgentHeartbeatAndLoopDetection(t *testing.T) {
	needCluster(t)
	_, key, a := healingFleet(t, "pyagents", 10)
	p := agentPods(t, key.Namespace, key.Name)[3]
	pod := p.Name
	// The Python agent runs as its pod would: as the fleet's worker ServiceAccount, with a token
	// bound to the pod, from a kubeconfig of its own.
	cfg, err := c.ServiceAccountConfig(context.Background(), key.Namespace, workerServiceAccount(key.Namespace, key.Name), &p)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := workerKubeconfig(t, cfg)
	expectPythonLeasesOnly(t, kubeconfig, key.Namespace, pod)
	a.set(pod, "stall") // the Go agent of this pod stops; the Python one takes over
	dir, err := cluster.RepoPath("sdk/python")
	if err != nil {
		t.Fatal(err)
	}
	// Once the operator has replaced the worker, its Lease is gone and the pod-bound token is
	// refused: the agent's last steps fail, and it goes on as a real agent would.
	script := `
import sys, time
sys.path.insert(0, sys.argv[1])
from kubernetes.client.rest import ApiException
from agentfleet_heartbeat import Heartbeat
hb = Heartbeat.from_env()
hb.start()
for i in range(3):
    hb.step("step %d" % i)
    time.sleep(0.3)
hb.tokens(500, 50)
hb.task_done(True)   # one task, its tokens and outcome: the operator's ledger must count them
for i in range(8):
    try:
        hb.step("search: the same query")
    except ApiException as e:
        print("step:", e.status)
    time.sleep(1.1)
print("writes", hb.writes)
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", script, dir)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, heartbeatapi.EnvNamespace+"="+key.Namespace, heartbeatapi.EnvFleet+"="+key.Name,
		heartbeatapi.EnvPodName+"="+pod, heartbeatapi.EnvHeartbeatInterval+"=1")
	exited := make(chan struct{})
	var out []byte
	var runErr error
	go func() {
		defer close(exited)
		out, runErr = cmd.CombinedOutput()
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("python agent (%v):\n%s", runErr, out)
		}
	})
	// The task the Python agent finished, in the operator's ledger (the Go agents of this fleet
	// report no task).
	eventually(t, 20*time.Second, "the Python agent's task in the ledger", func(ctx context.Context) (bool, string) {
		families, err := scrape(ctx, c.MetricsURL("agentfleet-operator"))
		if err != nil {
			return false, err.Error()
		}
		with := func(k, v string) map[string]string { return fleetLabels(key, k, v) }
		got := []float64{counterSum(families, "agentfleet_tasks_total", with("outcome", "succeeded")),
			counterSum(families, "agentfleet_tokens_total", with("direction", "in")), counterSum(families, "agentfleet_tokens_total", with("direction", "out"))}
		return cmp.Equal(got, []float64{1, 500, 50}), fmt.Sprintf("succeeded, tokens in, out: %v, want [1 500 50]", got)
	})
	waitReplaced(t, key, pod, 25*time.Second)
	f := getFleet(t, key)
	var evidence string
	for _, r := range f.Status.RecentRestarts {
		if r.Worker == pod {
			evidence = r.Reason + ": " + r.Evidence
		}
	}
	if !strings.HasPrefix(evidence, "Looping: ") {
		t.Errorf("replacement of %s: %q, want Looping", pod, evidence)
	}
	t.Logf("python agent replaced: %s", evidence)
	select {
	case <-exited: // it ended by itself, before this test stopped it: it must have ended well
		if runErr != nil {
			t.Errorf("python agent: %v", runErr)
		}
	default: // still stepping: the cleanup stops it
	}
}

// expectPythonLeasesOnly checks that the Python client, given kubeconfig, cannot list or delete
// Leases or list Pods in ns: the worker token is all it holds.
func expectPythonLeasesOnly(t *testing.T, kubeconfig, ns, pod string) {
	t.Helper()
	script := `
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config()
ns, pod = sys.argv[1], sys.argv[2]
for what, call in [
    ("list leases", lambda: client.CoordinationV1Api().list_namespaced_lease(ns)),
    ("delete a lease", lambda: client.CoordinationV1Api().delete_namespaced_lease(pod, ns)),
    ("list pods", lambda: client.CoreV1Api().list_namespaced_pod(ns)),
]:
    try:
        call()
        print(what + ": allowed")
    except ApiException as e:
        print(what + ": %d" % e.status)
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", script, ns, pod)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python least-privilege check: %v\n%s%s", err, out, stderr.String())
	}
	want := "list leases: 403\ndelete a lease: 403\nlist pods: 403\n"
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("the Python client with the worker token (-want +got):\n%s", diff)
	}
}
