// Command manager runs the AgentFleet operator.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/controllers/gpunode"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// slimNode drops from a cached Node what the operator never reads and what makes nodes large: the
// images they hold, their managed fields.
func slimNode(o any) (any, error) {
	if n, ok := o.(*corev1.Node); ok {
		n.ManagedFields = nil
		n.Status.Images = nil
	}
	return o, nil
}

func main() {
	var (
		metricsAddr, probeAddr, workerServiceAccount, gpuFaultConditions string
		leaderElectionNamespace, gpuPrices                               string
		dashboard                                                        rayspecs.DashboardOptions
		leaderElect, labelFaultyGPUNodes                                 bool
		jobHistory, concurrency                                          int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address the Prometheus metrics endpoint binds to; 0 disables it")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address the health probes bind to")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader, so that only one replica of the operator reconciles")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (empty: the operator's own, read in its pod)")
	flag.StringVar(&workerServiceAccount, "worker-service-account", "", "ServiceAccount the agent workers run as (empty: the namespace's default)")
	flag.IntVar(&jobHistory, "job-history-limit", 3, "finished RayJobs kept per job")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "fleets reconciled at once")
	var statusWriteInterval time.Duration
	var forceDeleteStranded bool
	flag.BoolVar(&forceDeleteStranded, "force-delete-stranded-workers", true,
		"force-delete agent workers that Kubernetes is deleting on a node that is silent (Ready=Unknown for 30 s) or out of service, 30 s past their grace period, so that KubeRay replaces them (it counts terminating pods as workers); false leaves them Terminating until the node returns or is deleted")
	flag.DurationVar(&statusWriteInterval, "status-write-interval", fleet.DefaultStatusWriteInterval,
		"how long a change of a fleet's progress alone (worker counts, messages, what the workers are seen to run, reasons while not Degraded) waits, from when it was first seen, to be written (with the next change written at once, if sooner); conditions' status, observedGeneration, restarts and rollouts are written at once; 0 writes every change at once")
	flag.StringVar(&gpuFaultConditions, "gpu-fault-conditions", gpunode.DefaultFaultConditions,
		"node conditions that mean a GPU fault, as comma-separated Type=Status pairs; empty: none")
	flag.BoolVar(&labelFaultyGPUNodes, "label-faulty-gpu-nodes", true,
		"label GPU nodes without the GPU health agent "+gpu.HealthLabel+"="+gpu.HealthUnhealthy+" while they have a GPU fault condition, so that new agent workers avoid them")
	var prometheusURL, pprofAddr string
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "address Go's pprof endpoints (/debug/pprof/) bind to, for profiling the operator; 0 disables them (they are off by default: a profile shows what the operator holds)")
	flag.StringVar(&prometheusURL, "prometheus-url", "", "the Prometheus that canaries' checks (spec.rollout.canary.analysis.checks) query; empty: a canary with checks waits for them until its maxDurationSeconds")
	opts := zap.Options{}
	flag.StringVar(&gpuPrices, "gpu-prices", "",
		"the GPU price table's ConfigMap, as namespace/name (its key prices.yaml); empty: the built-in default table (README, \"GPU cost\")")
	flag.StringVar(&dashboard.GrafanaHost, "ray-grafana-host", "", "RAY_GRAFANA_HOST for the fleets' Ray heads: Grafana as the head reaches it, for the Ray dashboard's metrics panels")
	flag.StringVar(&dashboard.GrafanaIframeHost, "ray-grafana-iframe-host", "", "RAY_GRAFANA_IFRAME_HOST for the fleets' Ray heads: Grafana as the user's browser reaches it")
	flag.StringVar(&dashboard.PrometheusHost, "ray-prometheus-host", "", "RAY_PROMETHEUS_HOST for the fleets' Ray heads: the Prometheus that scrapes Ray's metrics")
	flag.StringVar(&dashboard.PrometheusName, "ray-prometheus-name", "", "RAY_PROMETHEUS_NAME for the fleets' Ray heads: that Prometheus' data source name in Grafana")
	opts.BindFlags(flag.CommandLine)
	flag.Parse() // --kubeconfig is registered by controller-runtime
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	faultConditions, err := gpunode.ParseFaultConditions(gpuFaultConditions)
	if err != nil {
		log.Error(err, "Reading --gpu-fault-conditions")
		os.Exit(1)
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, rayv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			log.Error(err, "Building the scheme")
			os.Exit(1)
		}
	}
	// Only the pods and Leases of fleets are cached, not every pod of the cluster; of the pods, not
	// the heads: no pass reads one (a head's readiness is KubeRay's HeadPodReady condition), and
	// each of a head's events woke its fleet for nothing, a sixth of the passes while fleets came up.
	fleetPods, err := labels.NewRequirement(v1alpha1.LabelFleet, selection.Exists, nil)
	if err != nil {
		log.Error(err, "Building the pod selector")
		os.Exit(1)
	}
	notHeads, err := labels.NewRequirement(v1alpha1.LabelRole, selection.NotEquals, []string{v1alpha1.RoleHead})
	if err != nil {
		log.Error(err, "Building the pod selector")
		os.Exit(1)
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "agentfleet-operator.agentfleet.dev",
		LeaderElectionNamespace: leaderElectionNamespace,
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.NewSelector().Add(*fleetPods, *notHeads)},
			// Only heartbeat Leases, never the cluster's node Leases.
			&coordinationv1.Lease{}: {Label: labels.NewSelector().Add(*fleetPods)},
			// Every node, for its GPU health, without what is large and never read.
			&corev1.Node{}: {Transform: slimNode},
		}},
	})
	if err != nil {
		log.Error(err, "Creating the manager")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	r := fleet.NewReconciler(mgr.GetClient(), mgr.GetAPIReader())
	r.Specs.WorkerServiceAccount = workerServiceAccount
	r.Specs.Dashboard = dashboard
	if gpuPrices != "" {
		namespace, name, ok := strings.Cut(gpuPrices, "/")
		if !ok || namespace == "" || name == "" {
			log.Error(fmt.Errorf("%q is not namespace/name", gpuPrices), "Reading --gpu-prices")
			os.Exit(1)
		}
		r.Prices = &fleet.ConfigMapPrices{Key: client.ObjectKey{Namespace: namespace, Name: name}, Metadata: mgr.GetClient(), APIReader: mgr.GetAPIReader()}
	}
	if prometheusURL != "" {
		checks, err := fleet.NewPrometheusChecks(prometheusURL)
		if err != nil {
			log.Error(err, "Reading --prometheus-url")
			os.Exit(1)
		}
		r.Checks = checks
	}
	r.JobHistoryLimit = jobHistory
	r.MaxConcurrentReconciles = concurrency
	r.StatusWriteInterval = statusWriteInterval
	r.ForceDeleteStrandedWorkers = forceDeleteStranded
	r.GPUFaultConditions = faultConditions
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		log.Error(err, "Setting up the AgentFleet controller")
		os.Exit(1)
	}
	nodes := gpunode.NewReconciler(mgr.GetClient())
	nodes.FaultConditions, nodes.LabelFaultyNodes = faultConditions, labelFaultyGPUNodes
	if err := nodes.SetupWithManager(mgr); err != nil {
		log.Error(err, "Setting up the GPU node controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Adding the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "Adding the readiness check")
		os.Exit(1)
	}
	log.Info("Starting the AgentFleet operator")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Running the manager")
		os.Exit(1)
	}
}
