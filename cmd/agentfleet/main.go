// Command agentfleet shows what the agent fleets of a cluster are doing and what they cost. Installed
// as kubectl-agentfleet on the PATH, it is the kubectl plugin `kubectl agentfleet`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentfleet/agentfleet/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{Out: os.Stdout, Err: os.Stderr, ErrIsTerminal: cli.IsTerminal(os.Stderr)})
	stop()
	os.Exit(code)
}
