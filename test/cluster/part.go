package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// StartProcess runs bin with args (and env added to this process's environment) as one more part of
// the cluster, its output in <Dir>/<name>.log, and waits until readyURL answers 200 OK, or not at all
// when it is empty. Stop stops it, with the other parts; StopPart stops it earlier. For a process
// that is not an operator with controller-runtime's flags (those StartOperator runs), such as a
// node agent.
func (c *Cluster) StartProcess(ctx context.Context, name, bin string, args, env []string, readyURL string) error {
	ready := func(context.Context) bool { return true }
	if readyURL != "" {
		ready = httpOK(readyURL)
	}
	return c.startBinary(ctx, name, bin, args, env, ready)
}

// FreePort returns a free loopback TCP port, for a process a test starts.
func FreePort() (int, error) { return freePort() }

// BuildOperator builds the operator (cmd/manager) into the cluster's folder, for tests and benches
// that run it as a process, and returns the binary's path.
func (c *Cluster) BuildOperator(ctx context.Context) (string, error) {
	bin := filepath.Join(c.Dir, "manager")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/agentfleet/agentfleet/cmd/manager").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building the operator: %w\n%s", err, out)
	}
	return bin, nil
}

// Finish stops the cluster at the end of a test binary's run. When the tests failed (code is not
// 0), the working folder stays, for the parts' logs, and its path is printed.
func (c *Cluster) Finish(code int) {
	if code != 0 {
		fmt.Printf("cluster logs kept in %s\n", c.Dir)
		if err := c.StopKeepingLogs(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		return
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}
