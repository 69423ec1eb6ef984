//go:build tools

// Package tools pins the KubeRay operator built into bin/ by `make bins`.
package tools

import _ "github.com/ray-project/kuberay/ray-operator"
