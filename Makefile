# AgentFleet. `make help` lists the targets; README.md says which two matter first.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

BIN        := $(CURDIR)/bin
STAMPS     := $(BIN)/.stamps
export GOWORK := off

# Tools installed with `go install pkg@version`; the cluster parts (etcd, Kubernetes, KubeRay) are pinned
# by the wrapper modules under test/tools/, whose go.mod and go.sum are the version record.
KWOK_VERSION           ?= v0.7.0
CONTROLLER_GEN_VERSION ?= v0.20.1
GOLANGCI_LINT_VERSION  ?= v2.15.0
K8S_VERSION            := $(shell awk '{for (i = 1; i < NF; i++) if ($$i == "k8s.io/kubernetes" && $$(i+1) ~ /^v/) print $$(i+1)}' test/tools/kubernetes/go.mod)
ifeq ($(K8S_VERSION),)
$(error cannot read the k8s.io/kubernetes version from test/tools/kubernetes/go.mod)
endif
K8S_MINOR              := $(word 2,$(subst ., ,$(K8S_VERSION)))

# Our modules besides the main one: the heartbeat contract and the Go SDK, modules of their own so
# that agents built with the SDK do not inherit the operator's dependencies. `go ... ./...` in the
# main module does not reach into them.
SUBMODULES := api/heartbeat sdk/go

# Objects the e2e tests write from the live cluster for the ArgoCD health-check tests.
LIVE_FIXTURES := $(CURDIR)/bin/live-fixtures

# What the tests and `make dev` find: bin/ for the cluster's processes, the local test cluster's
# state under a folder of its own.
export AGENTFLEET_BIN_DIR := $(BIN)

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: dev
dev: bins build ## Boot the local cluster (fake GPU nodes, real KubeRay), run the operator and the samples until Ctrl-C.
	go build -o $(BIN)/localcluster ./test/cluster/cmd/localcluster
	$(BIN)/localcluster --bin-dir $(BIN) --operator $(BIN)/manager --samples config/dev,config/samples

.PHONY: build
build: ## Build the operator into bin/manager.
	go build -o $(BIN)/manager ./cmd/manager

.PHONY: run
run: build ## Run the operator against the cluster KUBECONFIG names.
	$(BIN)/manager

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet every module of ours.
	go vet ./...
	@for d in $(SUBMODULES); do echo "go vet in $$d"; (cd $$d && go vet ./...) || exit 1; done

.PHONY: lint
lint: $(STAMPS)/golangci-lint-$(GOLANGCI_LINT_VERSION) ## golangci-lint (config in .golangci.yml).
	$(BIN)/golangci-lint run ./...
	@for d in $(SUBMODULES); do echo "golangci-lint in $$d"; (cd $$d && $(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done

.PHONY: verify
verify: generate manifests ## Fail if formatting, vet, lint or generated files are off.
	@if [ -n "$$(git status --porcelain -- ':(glob)api/**/zz_generated.*' config/crd config/rbac/role.yaml)" ]; then \
	  echo "generated files are stale (run make generate manifests and commit):"; git status --porcelain -- ':(glob)api/**/zz_generated.*' config/crd config/rbac/role.yaml; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(MAKE) vet lint
	@for d in test/tools/*/ test/argocd/ $(SUBMODULES); do (cd $$d && go mod tidy -diff) || { echo "go.mod of $$d is not tidy"; exit 1; }; done
	go mod tidy -diff || { echo "go.mod is not tidy: run go mod tidy"; exit 1; }

##@ Test

.PHONY: test
test: bins python-deps ## Every test: unit, envtest, e2e on the local cluster, and the ArgoCD health checks in ArgoCD's Lua engine.
	rm -rf $(LIVE_FIXTURES)
	AGENTFLEET_LIVE_FIXTURES=$(LIVE_FIXTURES) go test -count=1 -timeout 30m ./...
	@for d in $(SUBMODULES); do (cd $$d && go test -count=1 ./...) || exit 1; done
	cd test/argocd && go test -count=1 ./... -args -live=$(LIVE_FIXTURES)

# The Python heartbeat SDK is tested with Debian's python3-kubernetes (PyPI is not reachable here).
.PHONY: python-deps
python-deps:
	@/usr/bin/python3 -c 'import kubernetes' 2>/dev/null || { \
	  echo ">> installing python3-kubernetes (Debian) for the Python SDK's tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-kubernetes >/dev/null; \
	  else echo "run as root, or: sudo apt-get install python3-kubernetes"; exit 1; fi; }

.PHONY: test-e2e
test-e2e: bins python-deps ## The end-to-end tests only: the operator and the real KubeRay on the local cluster.
	go test -count=1 -timeout 20m ./test/e2e/... ./test/cluster/...

.PHONY: test-argocd
test-argocd: ## config/argocd's health checks in argo-cd v2.14's util/lua (a module of its own).
	cd test/argocd && go test -count=1 ./...

.PHONY: argocd-cm
argocd-cm: ## Regenerate config/argocd/argocd-cm.yaml from the health.lua files.
	cd test/argocd && go test -count=1 -run TestArgoCDConfigMapSnippet ./... -update

.PHONY: test-nvml
test-nvml: ## The real-NVML tests (build tag nvml): on a GPU machine with the NVIDIA driver; the collector and one whole agent poll, a line per GPU.
	CGO_ENABLED=1 go test -tags nvml -run 'TestRealNVML' -v -count=1 ./gpu/collector/ ./internal/gpuagent/

.PHONY: test-unit
test-unit: ## Tests that need no cluster parts.
	go test -count=1 -short ./...
	@for d in $(SUBMODULES); do (cd $$d && go test -count=1 -short ./...) || exit 1; done

##@ Cluster parts, built from Go modules into bin/ (git-ignored); each is rebuilt only when its pin changes

.PHONY: bins
bins: $(BIN)/kube-apiserver $(BIN)/etcd $(BIN)/kuberay-operator $(STAMPS)/kwok-$(KWOK_VERSION) ## Build what the local cluster needs.

$(STAMPS):
	@mkdir -p $@

# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl share one build: most of the
# compile work is common to all four. The version is stamped so that clients see a real server version.
K8S_LDFLAGS := -s -w \
  -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(K8S_MINOR) \
  -X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION)
$(BIN)/kube-apiserver: test/tools/kubernetes/go.mod test/tools/kubernetes/go.sum
	@echo ">> building Kubernetes $(K8S_VERSION) (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); about 10 minutes cold on 2 cores"
	cd test/tools/kubernetes && go build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $(BIN)/ \
	  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
	  k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-apiserver
	@touch $@

$(BIN)/etcd: test/tools/etcd/go.mod test/tools/etcd/go.sum
	@echo ">> building etcd"
	cd test/tools/etcd && go build -trimpath -ldflags "-s -w" -o $@ go.etcd.io/etcd/server/v3
	@touch $@

$(BIN)/kuberay-operator: test/tools/kuberay/go.mod test/tools/kuberay/go.sum
	@echo ">> building the KubeRay operator"
	cd test/tools/kuberay && go build -trimpath -ldflags "-s -w" -o $@ github.com/ray-project/kuberay/ray-operator
	@touch $@

$(STAMPS)/kwok-$(KWOK_VERSION): | $(STAMPS)
	@echo ">> installing kwok $(KWOK_VERSION)"
	GOBIN=$(BIN) go install -trimpath -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)
	@touch $@

$(STAMPS)/controller-gen-$(CONTROLLER_GEN_VERSION): | $(STAMPS)
	GOBIN=$(BIN) go install -trimpath sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	@touch $@

$(STAMPS)/golangci-lint-$(GOLANGCI_LINT_VERSION): | $(STAMPS)
	GOBIN=$(BIN) go install -trimpath github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@touch $@

.PHONY: clean
clean: ## Remove bin/ (the next build is cold again).
	rm -rf $(BIN)

##@ Generated code

.PHONY: generate
generate: $(STAMPS)/controller-gen-$(CONTROLLER_GEN_VERSION) ## Deep-copy functions (zz_generated.deepcopy.go).
	$(BIN)/controller-gen object paths=./api/...

.PHONY: manifests
manifests: $(STAMPS)/controller-gen-$(CONTROLLER_GEN_VERSION) ## CRDs into config/crd/bases, the operator's ClusterRole into config/rbac.
	$(BIN)/controller-gen crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(BIN)/controller-gen rbac:roleName=agentfleet-manager paths=./controllers/... output:rbac:artifacts:config=config/rbac

FUZZTIME ?= 60s
.PHONY: fuzz
fuzz: ## Fuzz the builders with fleets the CRD accepts (FUZZTIME=60s).
	go test ./rayspecs -run '^$$' -fuzz FuzzValidFleetsBuild -fuzztime $(FUZZTIME)

##@ Benchmarks

BENCH_WORKERS ?= 1000
.PHONY: bench
bench: bins ## NVML poll cost per GPU (mock); supervisor latency per reason and operator load at BENCH_WORKERS heartbeating workers, and XID-to-condition and condition-to-replacement latency, on the local cluster.
	go test -run '^$$' -bench BenchmarkPoll -benchmem -count=1 ./gpu/collector/
	go run ./test/bench/selfheal --workers $(BENCH_WORKERS)
	go run ./test/bench/gpuhealth --injections 10
