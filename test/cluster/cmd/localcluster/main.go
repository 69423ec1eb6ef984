// Command localcluster runs the local development cluster of `make dev` until interrupted: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kwok with fake GPU nodes, the real KubeRay
// operator, our CRDs and, when given, the AgentFleet operator and the samples.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/agentfleet/agentfleet/test/cluster"
)

type options struct {
	binDir, dir, crds, samples, operator string
	gpuNodes, gpusPerNode, cpuNodes      int
	gpuProduct                           string
}

func main() {
	var o options
	flag.StringVar(&o.binDir, "bin-dir", "bin", "folder of the cluster's binaries (make bins)")
	flag.StringVar(&o.dir, "dir", ".cluster", "folder for logs, certificates and the kubeconfig; emptied at start")
	flag.StringVar(&o.crds, "crds", "config/crd/bases", "folder of our CRDs to install (skipped when absent)")
	flag.StringVar(&o.samples, "samples", "", "comma-separated folders of YAML objects to apply, in order, once the cluster is up")
	flag.StringVar(&o.operator, "operator", "", "operator binary to run against the cluster (given --kubeconfig)")
	flag.IntVar(&o.gpuNodes, "gpu-nodes", 2, "number of fake GPU nodes")
	flag.IntVar(&o.gpusPerNode, "gpus-per-node", 8, "nvidia.com/gpu per GPU node")
	flag.StringVar(&o.gpuProduct, "gpu-product", "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.product of the GPU nodes")
	flag.IntVar(&o.cpuNodes, "cpu-nodes", 1, "number of fake CPU-only nodes")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("emptying %s: %w", dir, err)
	}
	binDir, err := filepath.Abs(o.binDir)
	if err != nil {
		return err
	}
	var crds []string
	if _, err := os.Stat(o.crds); err == nil {
		crds = append(crds, o.crds)
	}
	nodes := cluster.GPUNodes("gpu", o.gpuNodes, o.gpusPerNode, o.gpuProduct)
	for i := range o.cpuNodes {
		nodes = append(nodes, cluster.Node{Name: fmt.Sprintf("cpu-%d", i)})
	}

	fmt.Printf("Starting the local cluster in %s\n", dir)
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{BinDir: binDir, Dir: dir, CRDDirectoryPaths: crds, Nodes: nodes, Progress: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("Stopping the local cluster")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	fmt.Printf("Cluster up in %s: %d GPU nodes (%d x %s), %d CPU nodes, KubeRay running\n",
		time.Since(start).Round(time.Second), o.gpuNodes, o.gpusPerNode, o.gpuProduct, o.cpuNodes)

	if o.operator != "" {
		if err := c.StartOperator(ctx, "agentfleet-operator", o.operator); err != nil {
			return err
		}
	}
	for _, dir := range strings.Split(o.samples, ",") {
		if dir == "" {
			continue
		}
		applied, err := c.ApplyFiles(ctx, dir)
		for _, a := range applied {
			fmt.Printf("Applied %s\n", a)
		}
		if err != nil {
			return fmt.Errorf("applying %s: %w", dir, err)
		}
	}

	kubectl := filepath.Join(binDir, "kubectl")
	fmt.Printf(`
The cluster runs until Ctrl-C. In another shell:

  export KUBECONFIG=%s
  %s get nodes -L nvidia.com/gpu.product
  %s get agentfleets,rayclusters,pods -A

Logs, one per part: %s/*.log
`, c.Kubeconfig, kubectl, kubectl, dir)
	if len(crds) == 0 {
		fmt.Println("(No AgentFleet CRD yet: config/crd/bases is absent.)")
	}
	<-ctx.Done()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
