package cluster

import (
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

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
