package cluster

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// crdInstallWait is how long the CRDs may take to be served after they are created.
const crdInstallWait = 2 * time.Minute

// Envtest returns an envtest environment (etcd and kube-apiserver only, for synchronous controller
// tests and API validation tests) on the binaries of `make bins`, with KubeRay's CRDs and the CRDs
// in crdDirs installed. Call Start and, when done, Stop.
func Envtest(scheme *runtime.Scheme, crdDirs ...string) (*envtest.Environment, error) {
	binDir, err := defaultBinDir()
	if err != nil {
		return nil, err
	}
	if missing := missingBinaries(binDir, "etcd", "kube-apiserver"); len(missing) > 0 {
		return nil, fmt.Errorf("missing in %s: %v; run `make bins`", binDir, missing)
	}
	kuberay, err := KubeRayCRDDir()
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		BinaryAssetsDirectory:    binDir,
		CRDDirectoryPaths:        append([]string{kuberay}, crdDirs...),
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 90 * time.Second,
		CRDInstallOptions:        envtest.CRDInstallOptions{MaxTime: crdInstallWait},
		Scheme:                   scheme,
	}, nil
}

// RepoPath is a path relative to the repository root (the folder above bin/).
func RepoPath(rel string) (string, error) {
	binDir, err := defaultBinDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(binDir), rel), nil
}

// RunWithAPIServer runs a package's tests against an envtest kube-apiserver with KubeRay's CRDs and
// ours installed, handing use a client of scheme first. In -short mode it runs them without one
// (use is not called). It returns the exit code for os.Exit.
func RunWithAPIServer(m *testing.M, scheme *runtime.Scheme, use func(client.Client)) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	crds, err := RepoPath("config/crd/bases")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err := Envtest(scheme, crds)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	running = env
	defer func() { running = nil }()
	use(c)
	return m.Run()
}

// running is the environment RunWithAPIServer started, for User.
var running *envtest.Environment

// User returns a rest.Config for a user of the API server RunWithAPIServer started, authenticated as
// name in groups (and system:authenticated) and allowed only what RBAC grants it: to test what the
// operator does with fewer rights than its ClusterRole gives. Call it only from tests run by
// RunWithAPIServer.
func User(name string, groups ...string) (*rest.Config, error) {
	if running == nil {
		return nil, errors.New("no API server: User is for tests run by RunWithAPIServer")
	}
	u, err := running.AddUser(envtest.User{Name: name, Groups: groups}, running.Config)
	if err != nil {
		return nil, fmt.Errorf("adding the envtest user %s: %w", name, err)
	}
	return u.Config(), nil
}

// APIServerConfig returns the administrator's rest.Config of the API server RunWithAPIServer
// started: to build other clients (a clientset, a token's) for it.
func APIServerConfig() (*rest.Config, error) {
	if running == nil {
		return nil, errors.New("no API server: APIServerConfig is for tests run by RunWithAPIServer")
	}
	return rest.CopyConfig(running.Config), nil
}
