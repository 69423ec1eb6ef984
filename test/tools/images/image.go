package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Label keys of our own, beside the org.opencontainers.image.* ones.
const (
	labelDebianPackages = "dev.agentfleet.image.debian-packages"
	labelRunsAsRoot     = "dev.agentfleet.image.runs-as-root"
)

// kind is what differs between our two images; everything else is built the same way.
type kind struct {
	title       string
	description string
	entrypoint  string // where the binary lies in the image, and the entrypoint
	user        string // numeric: no /etc/passwd in the operator's image
	env         []string
	// glibc: the image gets a base layer from Debian packages (libc6 and what it needs), for a
	// binary linked with cgo.
	glibc  bool
	labels map[string]string
}

var kinds = map[string]kind{
	"operator": {
		title:       "agentfleet-operator",
		description: "The AgentFleet operator: AgentFleet resources into KubeRay RayClusters and RayJobs",
		entrypoint:  "/manager",
		user:        "65532:65532",
	},
	"gpu-agent": {
		title:       "agentfleet-gpu-agent",
		description: "The AgentFleet GPU health agent (NVML), a DaemonSet on GPU nodes",
		entrypoint:  "/gpu-agent",
		user:        "0:0",
		// What the NVIDIA container toolkit reads to inject libnvidia-ml.so.1; the DaemonSet sets them too.
		env:   []string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=utility"},
		glibc: true,
		labels: map[string]string{
			labelRunsAsRoot: "the kubelet's pod-resources socket (/var/lib/kubelet/pod-resources) is root's; see config/gpu-agent/daemonset.yaml",
		},
	},
}

// buildOptions are the facts of one build: where the inputs are and what to stamp.
type buildOptions struct {
	binary   string    // the binary on this machine
	debs     []string  // .deb files for the glibc base layer
	version  string    // org.opencontainers.image.version
	revision string    // the commit
	source   string    // the repository's URL
	created  time.Time // fixed, for reproducible images: the commit's time or SOURCE_DATE_EPOCH
	arch     string    // GOARCH
}

// buildImage assembles the image of kind k: the glibc layer if k needs it, then the binary's layer,
// then the config. The same inputs give the same digest.
func buildImage(k kind, o buildOptions) (v1.Image, error) {
	created := o.created.UTC().Truncate(time.Second)
	var adds []mutate.Addendum
	labels := map[string]string{
		"org.opencontainers.image.title":       k.title,
		"org.opencontainers.image.description": k.description,
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.revision":    o.revision,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	for key, v := range k.labels {
		labels[key] = v
	}
	for key, v := range labels {
		if v == "" {
			return nil, fmt.Errorf("label %s is empty", key)
		}
	}

	if k.glibc {
		if len(o.debs) == 0 {
			return nil, fmt.Errorf("image %s needs Debian packages for its glibc base (--deb)", k.title)
		}
		base, pkgs, err := debLayer(o.debs, created)
		if err != nil {
			return nil, err
		}
		layer, err := layerFromTar(base)
		if err != nil {
			return nil, err
		}
		labels[labelDebianPackages] = strings.Join(pkgs, " ")
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "debian packages " + strings.Join(pkgs, " "),
			Comment: "glibc base, built from Debian packages the way distroless is",
		}})
	}

	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return nil, fmt.Errorf("reading the binary: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: strings.TrimPrefix(k.entrypoint, "/"), Mode: 0o755,
		Size: int64(len(bin)), ModTime: created, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := layerFromTar(buf.Bytes())
	if err != nil {
		return nil, err
	}
	adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: created}, CreatedBy: "make images: " + path.Base(o.binary) + " at " + k.entrypoint,
	}})

	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", o.arch, v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: []string{k.entrypoint},
		User:       k.user,
		Env:        k.env,
		Labels:     labels,
	}
	return mutate.ConfigFile(img, cf)
}

// layerFromTar compresses a tar into a layer (gzip, which every runtime reads). The media types are
// Docker's, the ones a docker tarball's manifest gets when it is loaded or pushed.
func layerFromTar(b []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressionLevel(gzip.DefaultCompression))
}
