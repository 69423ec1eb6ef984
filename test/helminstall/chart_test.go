package helminstall

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/cluster"
)

const (
	release          = "agentfleet"
	releaseNamespace = "agentfleet-system"
	// The label every object of the chart carries (helm's convention, the chart's helpers).
	instanceLabel = "app.kubernetes.io/instance"
	// A namespace that allows no GPUs, by the GPU policy's label.
	noGPUNamespace = "helm-no-gpus"
)

var fleetsGVR = schema.GroupVersionResource{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Resource: "agentfleets"}

// Kinds searched by the chart's labels for what an uninstall might leave: every kind the chart
// makes, and what the cluster makes from them (ReplicaSets and pods of the Deployment, the
// DaemonSet's pods).
var labelledKinds = []schema.GroupVersionResource{
	{Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "apps", Version: "v1", Resource: "daemonsets"},
	{Group: "apps", Version: "v1", Resource: "replicasets"},
	{Version: "v1", Resource: "pods"},
	{Version: "v1", Resource: "serviceaccounts"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "configmaps"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"},
}

// TestChartInstallUpgradeUninstall is the chart's life on a cluster, as a platform team lives it:
// install with the defaults, run the operator as the chart's ServiceAccount, upgrade to the GPU
// agent and ArgoCD's health checks and back, uninstall. Each step needs the one before.
func TestChartInstallUpgradeUninstall(t *testing.T) {
	needCluster(t)
	chart, err := cluster.RepoPath("charts/agentfleet")
	if err != nil {
		t.Fatal(err)
	}
	// The chart puts argocd-cm into ArgoCD's namespace, which ArgoCD's own install makes.
	createNamespace(t, "argocd", nil)

	var installed []*unstructured.Unstructured
	var operatorConfig string
	ok := t.Run("install", func(t *testing.T) {
		helm(t, "install", release, chart, "-n", releaseNamespace, "--create-namespace", "--wait=false")
		installed = manifest(t)
		waitCRDEstablished(t)
		expectExist(t, installed)
		// The chart labels every object it makes, so that the search after uninstall can find them.
		for _, obj := range installed {
			if obj.GetLabels()[instanceLabel] != release {
				t.Errorf("%s has no %s=%s label", key(obj), instanceLabel, release)
			}
		}
		found := labelled(t)
		for _, obj := range installed {
			if !slices.Contains(found, key(obj)) {
				t.Errorf("%s not found by label %s=%s (found %v)", key(obj), instanceLabel, release, found)
			}
		}
		operatorConfig = runOperatorAsChart(t, installed)
	})
	if !ok {
		return
	}

	ok = t.Run("fleet Ready with the chart's CRD and RBAC", func(t *testing.T) {
		ns := createNamespace(t, "helm-fleets", nil)
		if _, err := kube.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "llm-keys"}, StringData: map[string]string{"anthropic": "test"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		fleet := sampleFleet(t, "config/samples/cpu-fleet.yaml", ns)
		if _, err := dyn.Resource(fleetsGVR).Namespace(ns).Create(context.Background(), fleet, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFleetReady(t, ns, fleet.GetName(), 2*time.Minute)
		// The operator leads through the chart's leader-election Role: its Lease is held.
		lease, err := kube.CoordinationV1().Leases("agentfleet-system").Get(context.Background(), "agentfleet-operator.agentfleet.dev", metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			t.Errorf("the leader election Lease in agentfleet-system: %v, %+v", err, lease)
		}
	})
	if !ok {
		return
	}

	t.Run("the chart's admission policies refuse what they must", func(t *testing.T) {
		gpuPolicy := named(t, installed, "ValidatingAdmissionPolicy", "-gpu-policy")
		podTemplatePolicy := named(t, installed, "ValidatingAdmissionPolicy", "-podtemplate")
		denied := createNamespace(t, noGPUNamespace, map[string]string{v1alpha1.LabelGPUAllowed: "false"})
		allowed := createNamespace(t, "helm-gpus", nil)
		// A new policy takes a moment to reach admission: poll with dry runs until it refuses.
		refused(t, sampleFleet(t, "config/samples/gpu-fleet.yaml", denied), gpuPolicy.GetName(), "agentfleet.dev/gpu-allowed=false")
		// The same fleet is fine where GPUs are allowed: the refusal is the label's.
		if err := dryRunCreate(context.Background(), sampleFleet(t, "config/samples/gpu-fleet.yaml", allowed)); err != nil {
			t.Errorf("the GPU fleet in namespace %s (no gpu-allowed label): %v", allowed, err)
		}
		misspelt := sampleFleet(t, "config/samples/cpu-fleet.yaml", allowed)
		if err := unstructured.SetNestedField(misspelt.Object, map[string]any{"spec": map[string]any{"nodeSelecter": map[string]any{"pool": "agents"}}}, "spec", "worker", "podTemplate"); err != nil {
			t.Fatal(err)
		}
		refused(t, misspelt, podTemplatePolicy.GetName(), "spec.worker.podTemplate.spec: unknown field(s) nodeSelecter")
	})

	var upgraded []*unstructured.Unstructured
	ok = t.Run("upgrade to the GPU agent, ArgoCD's health checks and another operator flag", func(t *testing.T) {
		helm(t, "upgrade", release, chart, "-n", releaseNamespace, "--wait=false",
			"--set", "gpuAgent.enabled=true", "--set", "argocd.healthChecks=true", "--set", "manager.jobHistoryLimit=7")
		upgraded = manifest(t)
		added := missingFrom(upgraded, installed)
		var kinds []string
		for _, obj := range added {
			kinds = append(kinds, obj.GetKind())
		}
		slices.Sort(kinds)
		wantKinds := []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
		if !slices.Equal(kinds, wantKinds) {
			t.Errorf("the upgrade added %v, want one each of %v", kinds, wantKinds)
		}
		if removed := missingFrom(installed, upgraded); len(removed) > 0 {
			t.Errorf("the upgrade dropped %v", keys(removed))
		}
		expectExist(t, added)
		if args := operatorArgs(t); !slices.Contains(args, "--job-history-limit=7") {
			t.Errorf("the operator's args after the upgrade: %v, want --job-history-limit=7", args)
		}
		// The DaemonSet lands on the GPU node only (kwok fakes its pod).
		ds := only(t, added, "DaemonSet")
		eventually(t, 30*time.Second, "the GPU agent's DaemonSet on the one GPU node", func(ctx context.Context) (bool, string) {
			got, err := kube.AppsV1().DaemonSets(ds.GetNamespace()).Get(ctx, ds.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return got.Status.DesiredNumberScheduled == 1 && got.Status.NumberReady == 1, fmt.Sprintf("status %+v", got.Status)
		})
		cm := only(t, added, "ConfigMap")
		got, err := kube.CoreV1().ConfigMaps(cm.GetNamespace()).Get(context.Background(), cm.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got.Data["resource.customizations.health.agentfleet.dev_AgentFleet"], "Ready") {
			t.Errorf("argocd-cm has no AgentFleet health check: keys %v", mapKeys(got.Data))
		}
	})
	if !ok {
		return
	}

	t.Run("upgrade back to the defaults", func(t *testing.T) {
		helm(t, "upgrade", release, chart, "-n", releaseNamespace, "--wait=false", "--reset-values")
		back := manifest(t)
		if diff := missingFrom(back, installed); len(diff) > 0 {
			t.Errorf("objects beyond the first install's: %v", keys(diff))
		}
		if diff := missingFrom(installed, back); len(diff) > 0 {
			t.Errorf("objects of the first install missing: %v", keys(diff))
		}
		expectGone(t, missingFrom(upgraded, installed), time.Minute)
		if args := operatorArgs(t); !slices.Contains(args, "--job-history-limit=3") {
			t.Errorf("the operator's args after the upgrade back: %v, want --job-history-limit=3", args)
		}
	})

	t.Run("uninstall leaves no orphan", func(t *testing.T) {
		// The operator's rights go with the chart: stop it first rather than watch it fail.
		if err := c.StopPart("agentfleet-operator"); err != nil {
			t.Fatal(err)
		}
		helm(t, "uninstall", release, "-n", releaseNamespace, "--wait", "--timeout", "2m")
		everything := append(append([]*unstructured.Unstructured(nil), installed...), missingFrom(upgraded, installed)...)
		expectGone(t, everything, time.Minute)
		// Nor anything else with the chart's labels, the cluster's own children of its objects included.
		eventually(t, time.Minute, "no object labelled "+instanceLabel+"="+release, func(ctx context.Context) (bool, string) {
			found := labelled(t)
			return len(found) == 0, fmt.Sprint(found)
		})
		// Nor Helm's record of the release.
		secrets, err := kube.CoreV1().Secrets(releaseNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
		if err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) > 0 {
			t.Errorf("helm's release Secrets remain: %d", len(secrets.Items))
		}
		// The ServiceAccount's token died with it.
		cfg, err := clientcmd.BuildConfigFromFlags("", operatorConfig)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the operator's token refused after uninstall", func(ctx context.Context) (bool, string) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			return apierrors.IsUnauthorized(err), fmt.Sprintf("%v, want Unauthorized", err)
		})
		// The GPU policy no longer holds: the fleet it refused is admitted.
		eventually(t, 30*time.Second, "the GPU fleet admitted without the policy", func(ctx context.Context) (bool, string) {
			err := dryRunCreate(ctx, sampleFleet(t, "config/samples/gpu-fleet.yaml", noGPUNamespace))
			if err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		// Helm keeps what crds/ installed, by design (deleting a CRD deletes every fleet of every
		// team): the CRD stays, with its fleets, until an administrator deletes it.
		if _, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
			Get(context.Background(), fleetsGVR.Resource+"."+fleetsGVR.Group, metav1.GetOptions{}); err != nil {
			t.Errorf("the CRD after uninstall: %v (Helm keeps crds/ by design)", err)
		}
	})
}

// manifest is what the release made, from `helm get manifest`, each namespaced object with its
// namespace.
func manifest(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := decodeObjects([]byte(helm(t, "get", "manifest", release, "-n", releaseNamespace)))
	if err != nil {
		t.Fatalf("helm get manifest: %v", err)
	}
	if len(objs) == 0 {
		t.Fatal("helm get manifest: no objects")
	}
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", key(obj), err)
		}
		if m.Scope.Name() == meta.RESTScopeNameNamespace && obj.GetNamespace() == "" {
			obj.SetNamespace(releaseNamespace)
		}
	}
	return objs
}

// runOperatorAsChart starts bin/manager out of the cluster with a token of the ServiceAccount the
// chart's Deployment runs as and the Deployment's own arguments, and returns its kubeconfig.
func runOperatorAsChart(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(only(t, objs, "Deployment").Object, dep); err != nil {
		t.Fatal(err)
	}
	sa := dep.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		t.Fatalf("Deployment %s names no ServiceAccount", dep.Name)
	}
	if !slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == "ServiceAccount" && o.GetName() == sa }) {
		t.Fatalf("the chart does not make ServiceAccount %s, which its Deployment runs as", sa)
	}
	cfg, err := c.ServiceAccountConfig(context.Background(), releaseNamespace, sa, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["operator"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	kc.CurrentContext = "operator"
	path := filepath.Join(c.Dir, "chart-operator.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	// The Deployment's arguments, but the addresses (StartOperatorWith picks free local ports), and
	// the Lease's namespace, which a pod would read from its ServiceAccount: so the leader election
	// runs on the chart's Role.
	var args []string
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--metrics-bind-address"), strings.HasPrefix(a, "--health-probe-bind-address"):
		default:
			args = append(args, a)
		}
	}
	args = append(args, "--leader-election-namespace="+dep.Namespace)
	if err := c.StartOperatorWith(context.Background(), "agentfleet-operator", manager, cluster.OperatorOptions{Kubeconfig: path}, args...); err != nil {
		t.Fatal(err)
	}
	return path
}

// operatorArgs are the arguments of the chart's operator Deployment as the cluster has it.
func operatorArgs(t *testing.T) []string {
	t.Helper()
	deps, err := kube.AppsV1().Deployments(releaseNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: instanceLabel + "=" + release})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 {
		t.Fatalf("%d Deployments of the release, want 1", len(deps.Items))
	}
	return deps.Items[0].Spec.Template.Spec.Containers[0].Args
}

func waitCRDEstablished(t *testing.T) {
	t.Helper()
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	name := fleetsGVR.Resource + "." + fleetsGVR.Group
	eventually(t, 30*time.Second, "the chart's CRD "+name+" Established", func(ctx context.Context) (bool, string) {
		crd, err := crds.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if crd.GetLabels()[instanceLabel] != "" {
			return false, "the CRD carries the release's labels: it was templated, not installed from crds/"
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("conditions %v", conds)
	})
}

func expectExist(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, obj := range objs {
		r, err := resource(obj)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(context.Background(), obj.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("%s: %v", key(obj), err)
		}
	}
}

// expectGone waits until none of objs exists.
func expectGone(t *testing.T, objs []*unstructured.Unstructured, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d objects gone", len(objs)), func(ctx context.Context) (bool, string) {
		var left []string
		for _, obj := range objs {
			r, err := resource(obj)
			if err != nil {
				return false, err.Error()
			}
			_, err = r.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("%s (%v)", key(obj), err))
			}
		}
		return len(left) == 0, "left: " + strings.Join(left, ", ")
	})
}

// labelled lists every object of labelledKinds, in every namespace, that carries the release's
// instance label.
func labelled(t *testing.T) []string {
	t.Helper()
	var found []string
	for _, gvr := range labelledKinds {
		list, err := dyn.Resource(gvr).List(context.Background(), metav1.ListOptions{LabelSelector: instanceLabel + "=" + release})
		if err != nil {
			t.Fatalf("listing %s: %v", gvr, err)
		}
		for i := range list.Items {
			found = append(found, key(&list.Items[i]))
		}
	}
	return found
}

// missingFrom is what of objs other lacks (by kind, namespace and name).
func missingFrom(objs, other []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, obj := range objs {
		if !slices.ContainsFunc(other, func(o *unstructured.Unstructured) bool { return key(o) == key(obj) }) {
			out = append(out, obj)
		}
	}
	return out
}

// refused waits until a dry-run create of fleet is refused by the ValidatingAdmissionPolicy policy
// with a message that contains want.
func refused(t *testing.T, fleet *unstructured.Unstructured, policy, want string) {
	t.Helper()
	by := fmt.Sprintf("ValidatingAdmissionPolicy '%s'", policy)
	eventually(t, 30*time.Second, fmt.Sprintf("fleet %s/%s refused by %s", fleet.GetNamespace(), fleet.GetName(), policy), func(ctx context.Context) (bool, string) {
		err := dryRunCreate(ctx, fleet)
		if err == nil {
			return false, "admitted"
		}
		return strings.Contains(err.Error(), by) && strings.Contains(err.Error(), want), err.Error()
	})
}

// named is the one object of kind in objs whose name ends in suffix.
func named(t *testing.T, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == kind && strings.HasSuffix(obj.GetName(), suffix) {
			found = append(found, obj)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s named *%s among %v, want 1", len(found), kind, suffix, keys(objs))
	}
	return found[0]
}

// only is the one object of kind in objs.
func only(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == kind {
			found = append(found, obj)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s among %v, want 1", len(found), kind, keys(objs))
	}
	return found[0]
}

func keys(objs []*unstructured.Unstructured) []string {
	out := make([]string, len(objs))
	for i, obj := range objs {
		out[i] = key(obj)
	}
	return out
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func createNamespace(t *testing.T, name string, labels map[string]string) string {
	t.Helper()
	_, err := kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// sampleFleet is the one AgentFleet of a file under config/samples, moved into namespace.
func sampleFleet(t *testing.T, rel, namespace string) *unstructured.Unstructured {
	t.Helper()
	path, err := cluster.RepoPath(rel)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(data)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	fleet := only(t, objs, "AgentFleet")
	fleet.SetNamespace(namespace)
	return fleet
}

func dryRunCreate(ctx context.Context, fleet *unstructured.Unstructured) error {
	_, err := dyn.Resource(fleetsGVR).Namespace(fleet.GetNamespace()).Create(ctx, fleet, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

func waitFleetReady(t *testing.T, namespace, name string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("fleet %s/%s Ready (operator log: %s)", namespace, name, c.LogPath("agentfleet-operator")), func(ctx context.Context) (bool, string) {
		u, err := dyn.Resource(fleetsGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		f := &v1alpha1.AgentFleet{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, f); err != nil {
			return false, err.Error()
		}
		cond := meta.FindStatusCondition(f.Status.Conditions, v1alpha1.ConditionReady)
		if cond == nil || cond.ObservedGeneration != f.Generation || f.Status.ObservedGeneration != f.Generation {
			return false, fmt.Sprintf("status %+v", f.Status)
		}
		return cond.Status == metav1.ConditionTrue, fmt.Sprintf("Ready=%s/%s: %s", cond.Status, cond.Reason, cond.Message)
	})
}
