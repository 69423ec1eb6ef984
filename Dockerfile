# syntax=docker/dockerfile:1
# The operator's and the GPU agent's images, for people who build with Docker. Docker does not run in
# this repository's CI: `make images` builds the same two images without a daemon, and its test opens
# them. The binaries are built by the Makefile's image-manager and image-gpu-agent targets, so their
# flags are those of `make images` (test/tools/images checks that no `go build` of its own is here).
#
#   docker buildx build --platform linux/amd64,linux/arm64 --target operator -t REPO/operator:TAG .
#   docker buildx build --platform linux/amd64,linux/arm64 --target gpu-agent -t REPO/gpu-agent:TAG .
ARG GO_IMAGE=golang:1.26-bookworm

# Static, so it is cross-compiled on the build machine.
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS operator-build
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make image-manager IMAGE_ARCH=${TARGETARCH} IMAGE_BIN=/out

# cgo against bookworm's glibc, the glibc of distroless/base-debian12; built on the target platform
# (buildx emulates another architecture).
FROM ${GO_IMAGE} AS gpu-agent-build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make image-gpu-agent IMAGE_BIN=/out

FROM gcr.io/distroless/base-debian12 AS gpu-agent
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title=agentfleet-gpu-agent \
      org.opencontainers.image.source=https://github.com/agentfleet/agentfleet \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      dev.agentfleet.image.runs-as-root="the kubelet's pod-resources socket is root's; see config/gpu-agent/daemonset.yaml"
COPY --from=gpu-agent-build /out/gpu-agent /gpu-agent
# Root: the kubelet's pod-resources socket is root's (config/gpu-agent/daemonset.yaml).
USER 0:0
ENTRYPOINT ["/gpu-agent"]

# The last stage: what a plain `docker build .` gives.
FROM gcr.io/distroless/static-debian12:nonroot AS operator
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title=agentfleet-operator \
      org.opencontainers.image.source=https://github.com/agentfleet/agentfleet \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION}
COPY --from=operator-build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
