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
# kustomize for ArgoCD's repo server in the GitOps test: the version argo-cd v2.14 ships with.
KUSTOMIZE_VERSION      ?= v5.4.3
# helm for the chart's install/upgrade/uninstall e2e (test/helminstall).
HELM_VERSION           ?= v3.19.5
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
# What tests keep for people to look at (go test -artifacts): the cost report's HTML and screenshot.
TEST_ARTIFACTS := $(CURDIR)/bin/test-artifacts

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
build: ## Build the operator into bin/manager, and the agentfleet CLI into bin/agentfleet and bin/kubectl-agentfleet (the kubectl plugin).
	go build -o $(BIN)/manager ./cmd/manager
	go build -o $(BIN)/agentfleet ./cmd/agentfleet
	ln -sf agentfleet $(BIN)/kubectl-agentfleet

.PHONY: run
run: build ## Run the operator against the cluster KUBECONFIG names.
	$(BIN)/manager

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet every module of ours.
	go vet ./...
	CGO_ENABLED=1 go vet -tags nvml ./gpu/collector/ ./internal/gpuagent/
	@for d in $(SUBMODULES); do echo "go vet in $$d"; (cd $$d && go vet ./...) || exit 1; done
	cd test/grafana && go vet ./...

.PHONY: lint
lint: $(STAMPS)/golangci-lint-$(GOLANGCI_LINT_VERSION) ## golangci-lint (config in .golangci.yml).
	$(BIN)/golangci-lint run ./...
	@for d in $(SUBMODULES); do echo "golangci-lint in $$d"; (cd $$d && $(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done
	cd test/grafana && $(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...

.PHONY: verify
verify: generate manifests ## Fail if formatting, vet, lint or generated files are off.
	@if [ -n "$$(git status --porcelain -- ':(glob)api/**/zz_generated.*' config/crd config/rbac/role.yaml)" ]; then \
	  echo "generated files are stale (run make generate manifests and commit):"; git status --porcelain -- ':(glob)api/**/zz_generated.*' config/crd config/rbac/role.yaml; exit 1; fi
	$(MAKE) helm
	@if [ -n "$$(git status --porcelain -- charts)" ]; then \
	  echo "the chart is stale (run make helm and commit):"; git status --porcelain -- charts; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(MAKE) vet lint
	@for d in test/tools/*/ test/argocd/ test/helm/ test/grafana/ $(SUBMODULES); do (cd $$d && go mod tidy -diff) || { echo "go.mod of $$d is not tidy"; exit 1; }; done
	go mod tidy -diff || { echo "go.mod is not tidy: run go mod tidy"; exit 1; }

##@ Test

.PHONY: test
test: bins python-deps gitops-deps prometheus-deps browser-deps ## Every test: unit, envtest, e2e on the local cluster (a real Prometheus, Chromium for the cost report), the GitOps loop with a real ArgoCD, the ArgoCD health checks in its Lua engine, the chart, the Grafana dashboard, the images.
	rm -rf $(LIVE_FIXTURES) $(TEST_ARTIFACTS) && mkdir -p $(TEST_ARTIFACTS)
	AGENTFLEET_LIVE_FIXTURES=$(LIVE_FIXTURES) go test -count=1 -timeout 30m -artifacts -outputdir $(TEST_ARTIFACTS) ./...
	@for d in $(SUBMODULES); do (cd $$d && go test -count=1 ./...) || exit 1; done
	cd test/argocd && go test -count=1 ./... -args -live=$(LIVE_FIXTURES)
	cd test/helm && go test -count=1 ./...
	cd test/grafana && go test -count=1 ./...
	$(MAKE) --no-print-directory test-images

# The Python heartbeat SDK is tested with Debian's python3-kubernetes (PyPI is not reachable here).
.PHONY: python-deps
python-deps:
	@/usr/bin/python3 -c 'import kubernetes' 2>/dev/null || { \
	  echo ">> installing python3-kubernetes (Debian) for the Python SDK's tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-kubernetes >/dev/null; \
	  else echo "run as root, or: sudo apt-get install python3-kubernetes"; exit 1; fi; }

# The GitOps test runs Debian's redis-server (ArgoCD's cache) and git (the team's repository).
.PHONY: gitops-deps
gitops-deps:
	@command -v redis-server >/dev/null && command -v git >/dev/null || { \
	  echo ">> installing redis-server and git (Debian) for the GitOps test"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server git >/dev/null; \
	  else echo "run as root, or: sudo apt-get install redis-server git"; exit 1; fi; }

# The cost report's e2e runs Debian's Prometheus (and the benchmark its promtool); the HTML report is
# loaded in Debian's headless Chromium.
.PHONY: prometheus-deps
prometheus-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo ">> installing prometheus (Debian) for the cost report's tests and benchmark"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "run as root, or: sudo apt-get install prometheus"; exit 1; fi; }

.PHONY: browser-deps
browser-deps:
	@command -v chromium >/dev/null || { \
	  echo ">> installing chromium (Debian) for the HTML cost report's browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "run as root, or: sudo apt-get install chromium"; exit 1; fi; }

.PHONY: test-gitops
test-gitops: bins gitops-deps ## The GitOps loop with a real ArgoCD: the sample in config/samples/gitops synced from a local Git repository.
	go test -count=1 -timeout 20m -v ./test/gitops/...

.PHONY: test-e2e
test-e2e: bins python-deps prometheus-deps browser-deps ## The end-to-end tests only: the operator and the real KubeRay on the local cluster.
	mkdir -p $(TEST_ARTIFACTS)
	go test -count=1 -timeout 20m -artifacts -outputdir $(TEST_ARTIFACTS) ./test/e2e/... ./test/cluster/...

.PHONY: test-chaos
test-chaos: bins ## Faults survived (build tag chaos, a local cluster of their own): leader failover, KubeRay down, a node deleted, a node NotReady, etcd paused, the API server restarted.
	go test -tags chaos -count=1 -timeout 20m -run '^TestChaos' -v ./test/e2e/

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

##@ Images, without Docker: OCI images as docker-compatible tarballs in bin/images/

# The images are stamped with these; the creation time is the commit's (SOURCE_DATE_EPOCH wins), so
# that the same commit gives the same image digests. IMAGE_ARCH is not called GOARCH: a GOARCH on
# make's command line would reach every go command of the recipe, the image tool's build included.
VERSION           ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
IMAGE_REGISTRY    ?= ghcr.io/agentfleet
IMAGE_SOURCE      ?= https://github.com/agentfleet/agentfleet
GOHOSTARCH        := $(shell go env GOHOSTARCH)
IMAGE_ARCH        ?= $(GOHOSTARCH)
IMAGE_BIN         ?= $(BIN)/images/linux-$(IMAGE_ARCH)
IMAGE_DEBS        := $(BIN)/images/debs-$(IMAGE_ARCH)
# The GPU agent's base: glibc for the cgo binary and for NVML's dlopen, as distroless/base has it.
GPU_AGENT_DEBS    := libc6 libgcc-s1
# The images' binary flags, also those of the Dockerfile (it runs these targets) and of .ko.yaml
# (test/tools/images compares them).
IMAGE_GOFLAGS     := -trimpath
IMAGE_LDFLAGS     := -s -w

.PHONY: images
images: image-manager image-gpu-agent $(BIN)/images-tool $(IMAGE_DEBS)/.done ## The operator's and the GPU agent's images: bin/images/{operator,gpu-agent}-linux-<arch>.tar.
	@[ -n "$(REVISION)" ] && [ -n "$(SOURCE_DATE_EPOCH)" ] || { echo "make images needs a Git checkout (the revision and time of the commit), or REVISION and SOURCE_DATE_EPOCH"; exit 1; }
	$(BIN)/images-tool --image operator --binary $(IMAGE_BIN)/manager --arch $(IMAGE_ARCH) \
	  --version $(VERSION) --revision $(REVISION) --created $(SOURCE_DATE_EPOCH) --source $(IMAGE_SOURCE) \
	  --tag $(IMAGE_REGISTRY)/operator:$(VERSION) --out $(BIN)/images/operator-linux-$(IMAGE_ARCH).tar
	$(BIN)/images-tool --image gpu-agent --binary $(IMAGE_BIN)/gpu-agent --arch $(IMAGE_ARCH) --debs $(IMAGE_DEBS) \
	  --version $(VERSION) --revision $(REVISION) --created $(SOURCE_DATE_EPOCH) --source $(IMAGE_SOURCE) \
	  --tag $(IMAGE_REGISTRY)/gpu-agent:$(VERSION) --out $(BIN)/images/gpu-agent-linux-$(IMAGE_ARCH).tar

.PHONY: test-images
test-images: images ## Open each image: its config, no shell, and its binary's --help run from the image's layers.
	cd test/tools/images && go test -count=1 ./... -args -images=$(BIN)/images -arch=$(IMAGE_ARCH) -version=$(VERSION) -revision=$(REVISION)

.PHONY: image-manager
image-manager: ## The operator's binary for its image, static, into IMAGE_BIN.
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build $(IMAGE_GOFLAGS) -ldflags "$(IMAGE_LDFLAGS)" -o $(IMAGE_BIN)/manager ./cmd/manager

.PHONY: image-gpu-agent
image-gpu-agent: ## The GPU agent's binary for its image, with cgo against this machine's glibc, into IMAGE_BIN.
	@[ "$(IMAGE_ARCH)" = "$(GOHOSTARCH)" ] || { echo "IMAGE_ARCH=$(IMAGE_ARCH): the GPU agent is linked with cgo, so it is built on a machine of its architecture (this one is $(GOHOSTARCH)); the release workflow builds the others"; exit 1; }
	CGO_ENABLED=1 GOOS=linux GOARCH=$(IMAGE_ARCH) go build $(IMAGE_GOFLAGS) -ldflags "$(IMAGE_LDFLAGS)" -o $(IMAGE_BIN)/gpu-agent ./cmd/gpu-agent

$(BIN)/images-tool: test/tools/images/go.mod test/tools/images/go.sum $(filter-out %_test.go,$(wildcard test/tools/images/*.go))
	cd test/tools/images && go build -o $@ .

# Debian's packages for this machine's release (apt's sources), downloaded once; `rm -r` the folder
# to take newer ones. apt-get download needs apt's package lists, and apt-get update needs root.
$(IMAGE_DEBS)/.done:
	@rm -rf $(IMAGE_DEBS) && mkdir -p $(IMAGE_DEBS)
	@echo ">> downloading Debian's $(GPU_AGENT_DEBS) for the GPU agent's base"
	@cd $(IMAGE_DEBS) && { apt-get download -q -o APT::Sandbox::User=root $(addsuffix :$(IMAGE_ARCH),$(GPU_AGENT_DEBS)) \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -q -o APT::Sandbox::User=root $(addsuffix :$(IMAGE_ARCH),$(GPU_AGENT_DEBS)); }; } \
	  || { echo "cannot download Debian's $(GPU_AGENT_DEBS) for the GPU agent's image with apt-get download: on a Debian or Ubuntu machine, run as root (for apt-get update) or run sudo apt-get update first; or put their .deb files into $(IMAGE_DEBS) and touch $@"; exit 1; }
	@touch $@

##@ Cluster parts, built from Go modules into bin/ (git-ignored); each is rebuilt only when its pin changes

.PHONY: bins
bins: $(BIN)/kube-apiserver $(BIN)/etcd $(BIN)/kuberay-operator $(STAMPS)/kwok-$(KWOK_VERSION) $(BIN)/argocd $(STAMPS)/kustomize-$(KUSTOMIZE_VERSION) $(STAMPS)/helm-$(HELM_VERSION) ## Build what the local cluster needs.

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

# ArgoCD's application controller and repo server for the GitOps test (test/gitops): one binary that
# picks its command from ARGOCD_BINARY_NAME (or argv[0]). About 5 minutes cold on 2 cores.
ARGOCD_VERSION := $(shell awk '{for (i = 1; i < NF; i++) if ($$i == "github.com/argoproj/argo-cd/v2" && $$(i+1) ~ /^v/) print $$(i+1)}' test/tools/argocd/go.mod)
$(BIN)/argocd: test/tools/argocd/go.mod test/tools/argocd/go.sum
	@echo ">> building ArgoCD $(ARGOCD_VERSION) (application controller, repo server); about 5 minutes cold on 2 cores"
	cd test/tools/argocd && go build -trimpath -ldflags "-s -w -X github.com/argoproj/argo-cd/v2/common.version=$(ARGOCD_VERSION)" \
	  -o $@ github.com/argoproj/argo-cd/v2/cmd
	@touch $@

$(STAMPS)/kustomize-$(KUSTOMIZE_VERSION): | $(STAMPS)
	@echo ">> installing kustomize $(KUSTOMIZE_VERSION)"
	GOBIN=$(BIN) go install -trimpath -ldflags "-s -w" sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@touch $@

# The version is stamped as helm's own Makefile does (`helm version` says v3.19 otherwise).
$(STAMPS)/helm-$(HELM_VERSION): | $(STAMPS)
	@echo ">> installing helm $(HELM_VERSION)"
	GOBIN=$(BIN) go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
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

.PHONY: helm
helm: manifests ## Copy the CRD, RBAC rules, policies and ArgoCD health checks from config/ into charts/agentfleet; regenerate its README's values table.
	rm -f charts/agentfleet/crds/*.yaml && cp config/crd/bases/*.yaml charts/agentfleet/crds/
	cp config/rbac/role.yaml charts/agentfleet/files/manager-role.yaml
	cp config/gpu-agent/rbac.yaml charts/agentfleet/files/gpu-agent-rbac.yaml
	cp config/gpu-agent/own-node-policy.yaml charts/agentfleet/files/gpu-agent-own-node-policy.yaml
	cp config/policy/gpu-policy.yaml charts/agentfleet/files/gpu-policy.yaml
	cp config/policy/podtemplate-policy.yaml charts/agentfleet/files/podtemplate-policy.yaml
	cp config/policy/lease-policy.yaml charts/agentfleet/files/lease-policy.yaml
	cp config/policy/operator-pod-delete-policy.yaml charts/agentfleet/files/operator-pod-delete-policy.yaml
	cp config/argocd/argocd-cm.yaml charts/agentfleet/files/argocd-cm.yaml
	cp config/manager/gpu-prices.yaml charts/agentfleet/files/gpu-prices.yaml
	cp config/prometheus/agentfleet-rules.yaml charts/agentfleet/files/agentfleet-rules.yaml
	cd test/helm && go run ./cmd/valuestable $(CURDIR)/charts/agentfleet

.PHONY: test-helm
test-helm: ## The chart: helm lint, template snapshots (go test ./test/helm -update rewrites them), the values schema, agreement with config/default.
	cd test/helm && go test -count=1 ./...

FUZZTIME ?= 60s
.PHONY: fuzz
fuzz: ## Run every fuzz target (each func Fuzz… of a *_test.go, in every module) for FUZZTIME, one worker each; prints each one's executions. A crash fails and its input is kept in the package's testdata/fuzz/<target>/.
	@failed=0; start=$$(date +%s); \
	for file in $$(grep -rl --include='*_test.go' --exclude-dir=bin --exclude-dir=.git '^func Fuzz' . | sort); do \
	  dir=$$(dirname $$file); \
	  for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
	    log=$$(mktemp); t0=$$(date +%s); kept=$$(find $$dir/testdata/fuzz/$$target -type f 2>/dev/null | wc -l || true); \
	    if (cd $$dir && go test . -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x -parallel 1) >$$log 2>&1; then \
	      echo "fuzz $$dir $$target: $$(grep -o 'execs: [0-9]*' $$log | tail -1 | cut -d' ' -f2) executions in $(FUZZTIME), no crash ($$(( $$(date +%s) - t0 )) s with the build)"; \
	    elif grep -q 'context deadline exceeded' $$log && [ "$$(find $$dir/testdata/fuzz/$$target -type f 2>/dev/null | wc -l || true)" = "$$kept" ]; then \
	      echo "fuzz $$dir $$target: $$(grep -o 'execs: [0-9]*' $$log | tail -1 | cut -d' ' -f2) executions in $(FUZZTIME), no crash (the run ended on Go 1.26's fuzztime deadline race, golang/go#75804, fixed in Go 1.27: no input was kept)"; \
	    else \
	      cat $$log; echo "fuzz $$dir $$target: FAILED (a crashing input is kept in $$dir/testdata/fuzz/$$target/)"; failed=1; \
	    fi; \
	    rm -f $$log; \
	  done; \
	done; \
	echo "fuzz: all targets in $$(( $$(date +%s) - start )) s"; exit $$failed

##@ Benchmarks

BENCH_WORKERS ?= 1000
# BENCH_FLEETS fleets of 4 workers run through the self-healing latency runs (the convergence bench's
# largest size that converged here in every run); BENCH_REPEAT runs of each convergence size.
BENCH_FLEETS ?= 500
BENCH_REPEAT ?= 3
.PHONY: bench
bench: bins prometheus-deps ## NVML poll cost per GPU (mock); supervisor latency per reason and operator load at BENCH_WORKERS heartbeating workers; XID-to-condition and condition-to-replacement latency on the local cluster; canary verdict latency and the API writes a canary adds at steady state; `agentfleet cost` over 30 days × 500 fleets in a real Prometheus; N fleets converged beside the floor of the same RayClusters made directly (N = 50 to 1,000, BENCH_REPEAT runs each), the operators' cost and the steady state; self-healing with BENCH_FLEETS fleets running.
	go test -run '^$$' -bench BenchmarkPoll -benchmem -count=1 ./gpu/collector/
	go run ./test/bench/selfheal --workers $(BENCH_WORKERS) --background-fleets $(BENCH_FLEETS) --injections 100
	go run ./test/bench/canary --steady-for 60s
	go run ./test/bench/gpuhealth --injections 10
	go run ./test/bench/cost --fleets 500 --days 30 --interval 5m
	go run ./test/bench/converge --sizes 50,100,200,500,1000 --repeat $(BENCH_REPEAT) --steady-for 30s
