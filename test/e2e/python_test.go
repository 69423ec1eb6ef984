package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

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
	pod := agentPods(t, key.Namespace, key.Name)[3].Name
	a.set(pod, "stall") // the Go agent of this pod stops; the Python one takes over
	dir, err := cluster.RepoPath("sdk/python")
	if err != nil {
		t.Fatal(err)
	}
	script := `
import sys, time
sys.path.insert(0, sys.argv[1])
from agentfleet_heartbeat import Heartbeat
hb = Heartbeat.from_env()
hb.start()
for i in range(3):
    hb.step("step %d" % i)
    time.sleep(0.3)
hb.idle()
for i in range(8):
    hb.step("search: the same query")
    time.sleep(1.1)
print("writes", hb.writes)
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", script, dir)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig, "AGENTFLEET_NAMESPACE="+key.Namespace, "AGENTFLEET_FLEET="+key.Name,
		"AGENTFLEET_POD_NAME="+pod, "AGENTFLEET_HEARTBEAT_INTERVAL=1")
	done := make(chan error, 1)
	var out []byte
	go func() {
		var err error
		out, err = cmd.CombinedOutput()
		done <- err
	}()
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
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Errorf("python agent: %v\n%s", err, out)
	}
}
