// Package cli is the agentfleet command (also installed as the kubectl plugin kubectl-agentfleet):
// `agentfleet status` and `agentfleet cost`.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// IO is where a command reads its environment and writes.
type IO struct {
	Out, Err io.Writer
	// ErrIsTerminal: progress is shown on Err only when a person watches it.
	ErrIsTerminal bool
}

const usage = `agentfleet: what the agent fleets of a cluster are doing, and what they cost.

Usage:
  agentfleet status [FLEET] [-n NAMESPACE | -A] [-o wide|json|yaml]
  agentfleet cost --prometheus URL [--since 7d] [--until RFC3339] [--by namespace|fleet|cost_center] [--format table|csv|json|html]
                  [--price-source auto|table|opencost] [--recorded]
  agentfleet cost [-n NAMESPACE | -A] [--prices NAMESPACE/NAME] [--format table|json]   (the burn rate now, from the cluster)
  agentfleet promote FLEET [-n NAMESPACE]   (a canary that passed and waits for a person: rollout.canary.autoPromote false)

Cluster access follows kubectl: --kubeconfig, --context, KUBECONFIG. Run "agentfleet COMMAND -h" for a command's flags.
`

// errUsage marks an error of the command line: exit code 2.
var errUsage = errors.New("usage")

// Main runs the command line args and returns the exit code: 0, 1 on failure, 2 on a bad command line.
func Main(ctx context.Context, args []string, io IO) int {
	err := run(ctx, args, io)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(io.Err, "agentfleet: %v\n", err)
		return 2
	}
	fmt.Fprintf(io.Err, "agentfleet: %v\n", err)
	return 1
}

func run(ctx context.Context, args []string, io IO) error {
	if len(args) == 0 {
		fmt.Fprint(io.Err, usage)
		return fmt.Errorf("%w: name a command: status, cost or promote", errUsage)
	}
	switch args[0] {
	case "status":
		return runStatus(ctx, args[1:], io)
	case "cost":
		return runCost(ctx, args[1:], io)
	case "promote":
		return runPromote(ctx, args[1:], io)
	case "-h", "--help", "help":
		fmt.Fprint(io.Out, usage)
		return nil
	}
	fmt.Fprint(io.Err, usage)
	return fmt.Errorf("%w: unknown command %q: status, cost or promote", errUsage, args[0])
}

// kubeFlags are kubectl's flags for reaching a cluster, and the namespace scope.
type kubeFlags struct {
	kubeconfig, context, namespace string
	allNamespaces                  bool
}

func (k *kubeFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "the kubeconfig file (default: KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "the kubeconfig context")
	fs.StringVar(&k.namespace, "n", "", "the namespace (default: the context's)")
	fs.StringVar(&k.namespace, "namespace", "", "the namespace (default: the context's)")
	fs.BoolVar(&k.allNamespaces, "A", false, "all namespaces")
	fs.BoolVar(&k.allNamespaces, "all-namespaces", false, "all namespaces")
}

// client returns a client of the cluster and the namespace to read ("" for all namespaces).
func (k *kubeFlags) client() (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cfg := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
	rest, err := cfg.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	namespace := ""
	if !k.allNamespaces {
		namespace = k.namespace
		if namespace == "" {
			if namespace, _, err = cfg.Namespace(); err != nil {
				return nil, "", fmt.Errorf("reading the kubeconfig's namespace: %w", err)
			}
		}
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, "", err
		}
	}
	c, err := client.New(rest, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("connecting to the cluster: %w", err)
	}
	return c, namespace, nil
}

// parse parses a command's flags, allowing them after the positional arguments too (kubectl's
// habit: agentfleet status coders -n team-a), and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, io IO) *flag.FlagSet {
	fs := flag.NewFlagSet("agentfleet "+name, flag.ContinueOnError)
	fs.SetOutput(io.Err)
	return fs
}

// oneOf checks a flag's value against the accepted ones.
func oneOf(flagName, value string, accepted []string) error {
	for _, a := range accepted {
		if value == a {
			return nil
		}
	}
	return fmt.Errorf("%w: --%s %q: one of %s", errUsage, flagName, value, strings.Join(accepted, ", "))
}

// IsTerminal says whether f is a terminal (a character device).
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
