//go:build tools

// Package tools pins the ArgoCD commands built into bin/argocd by `make bins` (one binary that
// dispatches on argv[0]: argocd-application-controller, argocd-repo-server, …).
package tools

import _ "github.com/argoproj/argo-cd/v2/cmd"
