package cluster

import (
	"context"
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
