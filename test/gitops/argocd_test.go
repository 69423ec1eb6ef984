package gitops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/test/cluster"
)

// ArgoCD runs here as ArgoCD's own Procfile runs it for its e2e tests: the application controller and
// the repo server as local processes (one binary, bin/argocd, picking its command from
// ARGOCD_BINARY_NAME), with ARGOCD_FAKE_IN_CLUSTER=true so that https://kubernetes.default.svc is the
// cluster of $KUBECONFIG, and redis-server as their cache. No argocd-server: the test works through
// the Application resources, as `kubectl` users of ArgoCD do.

const argoNamespace = "argocd"

var (
	applicationGVK = schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "Application"}
	appProjectGVK  = schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "AppProject"}
	externalSecret = schema.GroupVersionKind{Group: "external-secrets.io", Version: "v1", Kind: "ExternalSecret"}
)

// reconciliationTimeout is how often the controller compares every Application with Git on its own
// (ArgoCD's default is 180 s). Local processes read it from the environment, not from argocd-cm.
const reconciliationTimeout = "10s"

// argoCDModuleDir is where the Go module cache holds the argo-cd module test/tools/argocd pins.
func argoCDModuleDir(repo string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/argoproj/argo-cd/v2")
	cmd.Dir = filepath.Join(repo, "test", "tools", "argocd")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("locating argo-cd's module from test/tools/argocd: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("locating argo-cd's module from test/tools/argocd: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// argoCDCRDs are the Application and AppProject CRDs of the pinned ArgoCD.
func argoCDCRDs(repo string) ([]string, error) {
	dir, err := argoCDModuleDir(repo)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, f := range []string{"application-crd.yaml", "appproject-crd.yaml"} {
		p := filepath.Join(dir, "manifests", "crds", f)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("ArgoCD's CRDs: %w", err)
		}
		files = append(files, p)
	}
	return files, nil
}

// needTools names what the ArgoCD processes need and is missing.
func needTools(binDir string) error {
	var missing []string
	for _, b := range []string{"argocd", "kustomize"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			missing = append(missing, filepath.Join(binDir, b)+" (make bins)")
		}
	}
	for _, b := range []string{"redis-server", "git"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b+" (Debian's redis-server and git: make bins installs them as root)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the GitOps test needs: %s", strings.Join(missing, ", "))
	}
	return nil
}

// startArgoCD installs ArgoCD's configuration (argocd-cm with our health checks, argocd-secret, the
// default AppProject) and starts redis-server, the repo server and the application controller.
func startArgoCD(ctx context.Context, c *cluster.Cluster, repo, binDir string) error {
	k := c.Client
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: argoNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := c.ApplyFiles(ctx, filepath.Join(repo, "config", "argocd")); err != nil {
		return fmt.Errorf("applying config/argocd: %w", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "argocd-secret", Namespace: argoNamespace,
		Labels: map[string]string{"app.kubernetes.io/name": "argocd-secret", "app.kubernetes.io/part-of": "argocd"}}}
	if err := k.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// argocd-server makes the default project on its first start; without it, nothing does.
	project := &unstructured.Unstructured{}
	project.SetGroupVersionKind(appProjectGVK)
	project.SetNamespace(argoNamespace)
	project.SetName("default")
	project.Object["spec"] = map[string]any{
		"sourceRepos":              []any{"*"},
		"destinations":             []any{map[string]any{"server": "*", "namespace": "*"}},
		"clusterResourceWhitelist": []any{map[string]any{"group": "*", "kind": "*"}},
	}
	if err := k.Create(ctx, project); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the default AppProject: %w", err)
	}

	redisPort, err := cluster.FreePort()
	if err != nil {
		return err
	}
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	if err := c.StartProcess(ctx, "redis", redis, []string{"--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", c.Dir}, nil, ""); err != nil {
		return err
	}
	if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", redisPort), 30*time.Second); err != nil {
		return fmt.Errorf("redis-server: %w (log: %s)", err, c.LogPath("redis"))
	}

	data := filepath.Join(c.Dir, "argocd")
	for _, d := range []string{"tls", "ssh", "gpg/keys", "gpg/source", "tmp"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o700); err != nil {
			return err
		}
	}
	argocd := filepath.Join(binDir, "argocd")
	common := []string{
		"ARGOCD_FAKE_IN_CLUSTER=true",
		"KUBECONFIG=" + c.Kubeconfig,
		"ARGOCD_TLS_DATA_PATH=" + filepath.Join(data, "tls"),
		"ARGOCD_SSH_DATA_PATH=" + filepath.Join(data, "ssh"),
		"ARGOCD_GNUPGHOME=" + filepath.Join(data, "gpg/keys"),
		"ARGOCD_GPG_DATA_PATH=" + filepath.Join(data, "gpg/source"),
		"ARGOCD_GPG_ENABLED=false",
		"TMPDIR=" + filepath.Join(data, "tmp"),
		// The repo server runs kustomize (bin/kustomize) and git from PATH.
		"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH"),
	}
	redisAddr := fmt.Sprintf("127.0.0.1:%d", redisPort)

	repoPort, err := cluster.FreePort()
	if err != nil {
		return err
	}
	repoMetrics, err := cluster.FreePort()
	if err != nil {
		return err
	}
	if err := c.StartProcess(ctx, "argocd-repo-server", argocd, []string{
		"--loglevel", "info", "--port", strconv.Itoa(repoPort), "--metrics-port", strconv.Itoa(repoMetrics),
		"--redis", redisAddr,
	}, append(common, "ARGOCD_BINARY_NAME=argocd-repo-server"), fmt.Sprintf("http://127.0.0.1:%d/metrics", repoMetrics)); err != nil {
		return err
	}

	controllerMetrics, err := cluster.FreePort()
	if err != nil {
		return err
	}
	return c.StartProcess(ctx, "argocd-application-controller", argocd, []string{
		"--loglevel", "info", "--namespace", argoNamespace, "--kubeconfig", c.Kubeconfig,
		"--redis", redisAddr, "--repo-server", fmt.Sprintf("127.0.0.1:%d", repoPort),
		"--metrics-port", strconv.Itoa(controllerMetrics),
		"--status-processors", "4", "--operation-processors", "2",
		"--self-heal-timeout-seconds", "2",
	}, append(common, "ARGOCD_BINARY_NAME=argocd-application-controller", "HOSTNAME=argocd-application-controller-0",
		"ARGOCD_RECONCILIATION_TIMEOUT="+reconciliationTimeout, "ARGOCD_RECONCILIATION_JITTER=0s"),
		fmt.Sprintf("http://127.0.0.1:%d/metrics", controllerMetrics))
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// application reads the sample's Application for an overlay, pointed at repoURL.
func application(repo, env, repoURL string) (*unstructured.Unstructured, error) {
	path := filepath.Join(repo, "config", "samples", "gitops", "argocd", env+".yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	app := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &app.Object); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := unstructured.SetNestedField(app.Object, repoURL, "spec", "source", "repoURL"); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return app, nil
}

// appState is what `argocd app get` shows of an Application.
type appState struct {
	Sync, Revision     string // status.sync
	Health, HealthMsg  string // status.health
	OpPhase, OpMessage string // status.operationState
	Conditions         []string
	ResourceHealth     map[string]string // Kind/name: health (status.resources)
	ReconciledAt       string
}

func (s appState) String() string {
	return fmt.Sprintf("sync=%s@%.7s health=%s (%s) operation=%s (%s) conditions=%v resources=%v",
		s.Sync, s.Revision, s.Health, s.HealthMsg, s.OpPhase, s.OpMessage, s.Conditions, s.ResourceHealth)
}

func getApp(ctx context.Context, k client.Client, name string) (appState, error) {
	app := &unstructured.Unstructured{}
	app.SetGroupVersionKind(applicationGVK)
	if err := k.Get(ctx, client.ObjectKey{Namespace: argoNamespace, Name: name}, app); err != nil {
		return appState{}, err
	}
	str := func(fields ...string) string {
		v, _, _ := unstructured.NestedString(app.Object, fields...)
		return v
	}
	s := appState{
		Sync: str("status", "sync", "status"), Revision: str("status", "sync", "revision"),
		Health: str("status", "health", "status"), HealthMsg: str("status", "health", "message"),
		OpPhase: str("status", "operationState", "phase"), OpMessage: str("status", "operationState", "message"),
		ReconciledAt:   str("status", "reconciledAt"),
		ResourceHealth: map[string]string{},
	}
	conds, _, _ := unstructured.NestedSlice(app.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok {
			s.Conditions = append(s.Conditions, fmt.Sprintf("%v: %v", m["type"], m["message"]))
		}
	}
	res, _, _ := unstructured.NestedSlice(app.Object, "status", "resources")
	for _, r := range res {
		if m, ok := r.(map[string]any); ok {
			h, _, _ := unstructured.NestedString(m, "health", "status")
			s.ResourceHealth[fmt.Sprintf("%v/%v", m["kind"], m["name"])] = h
		}
	}
	return s, nil
}

// refresh asks the controller to compare the Application with Git now, as `argocd app get --refresh`
// does.
func refresh(ctx context.Context, k client.Client, name string) error {
	app := &unstructured.Unstructured{}
	app.SetGroupVersionKind(applicationGVK)
	app.SetNamespace(argoNamespace)
	app.SetName(name)
	patch := []byte(`{"metadata":{"annotations":{"argocd.argoproj.io/refresh":"normal"}}}`)
	return k.Patch(ctx, app, client.RawPatch("application/merge-patch+json", patch))
}

// playExternalSecrets does what the External Secrets operator would, until ctx ends: for every
// ExternalSecret, the target Secret (each key a placeholder, owned by the ExternalSecret) and a Ready
// condition.
func playExternalSecrets(ctx context.Context, k client.Client, logf func(string, ...any)) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(externalSecret.GroupVersion().WithKind("ExternalSecretList"))
		if err := k.List(ctx, list); err != nil {
			continue
		}
		for i := range list.Items {
			if err := syncExternalSecret(ctx, k, &list.Items[i]); err != nil && ctx.Err() == nil {
				logf("playing ESO for %s/%s: %v", list.Items[i].GetNamespace(), list.Items[i].GetName(), err)
			}
		}
	}
}

func syncExternalSecret(ctx context.Context, k client.Client, es *unstructured.Unstructured) error {
	conds, _, _ := unstructured.NestedSlice(es.Object, "status", "conditions")
	if len(conds) > 0 {
		return nil
	}
	target, _, _ := unstructured.NestedString(es.Object, "spec", "target", "name")
	if target == "" {
		target = es.GetName()
	}
	data := map[string][]byte{}
	items, _, _ := unstructured.NestedSlice(es.Object, "spec", "data")
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			if key, ok := m["secretKey"].(string); ok {
				data[key] = []byte("placeholder-from-the-secret-manager")
			}
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: target, Namespace: es.GetNamespace(),
		OwnerReferences: []metav1.OwnerReference{{APIVersion: es.GetAPIVersion(), Kind: es.GetKind(), Name: es.GetName(), UID: es.GetUID()}}},
		Data: data}
	if err := k.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	es.Object["status"] = map[string]any{"conditions": []any{map[string]any{
		"type": "Ready", "status": "True", "reason": "SecretSynced", "message": "Secret was synced",
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	}}}
	return k.Status().Update(ctx, es)
}
