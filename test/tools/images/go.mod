// Module images builds AgentFleet's container images without a Docker daemon or a registry
// (go-containerregistry), and tests them. A module of its own: in the operator's go.mod,
// go-containerregistry v0.22 would raise golang.org/x/{sys,sync,oauth2}, spf13/cobra and OpenTelemetry.
module github.com/agentfleet/agentfleet/test/tools/images

go 1.26

require (
	github.com/google/go-cmp v0.7.0
	github.com/google/go-containerregistry v0.22.1
)

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
