// Command images builds AgentFleet's container images with no Docker daemon and no registry: an
// image is an empty base, a glibc layer from Debian packages where the binary needs one, the binary,
// and a config, written as a docker-compatible tarball (`docker load`, `podman load`,
// `kind load image-archive`, `crane push`). `make images` runs it; see the Makefile for the inputs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

var revisionRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	var (
		kindName = fs.String("image", "", "which image: "+strings.Join(kindNames(), " or "))
		out      = fs.String("out", "", "the tarball to write")
		tag      = fs.String("tag", "", "the image's name and tag in the tarball, e.g. ghcr.io/agentfleet/operator:v0.1.0")
		debs     = fs.String("debs", "", "folder of the .deb files for the glibc base (gpu-agent)")
		created  = fs.String("created", "", "the image's creation time, Unix seconds (SOURCE_DATE_EPOCH, or the commit's time)")
		o        buildOptions
	)
	fs.StringVar(&o.binary, "binary", "", "the binary to put in the image, built for linux/--arch")
	fs.StringVar(&o.version, "version", "", "org.opencontainers.image.version")
	fs.StringVar(&o.revision, "revision", "", "org.opencontainers.image.revision: the commit, 40 hex digits")
	fs.StringVar(&o.source, "source", "", "org.opencontainers.image.source: the repository's URL")
	fs.StringVar(&o.arch, "arch", "", "the binary's GOARCH")
	if err := fs.Parse(args); err != nil {
		return err
	}
	k, ok := kinds[*kindName]
	if !ok {
		return fmt.Errorf("--image %q: want %s", *kindName, strings.Join(kindNames(), " or "))
	}
	for flagName, v := range map[string]string{"out": *out, "tag": *tag, "binary": o.binary, "version": o.version,
		"revision": o.revision, "source": o.source, "arch": o.arch, "created": *created} {
		if v == "" {
			return fmt.Errorf("--%s is required", flagName)
		}
	}
	if !revisionRE.MatchString(o.revision) {
		return fmt.Errorf("--revision %q is not a commit (40 hex digits)", o.revision)
	}
	secs, err := strconv.ParseInt(*created, 10, 64)
	if err != nil || secs < 0 {
		return fmt.Errorf("--created %q is not a time in Unix seconds", *created)
	}
	o.created = time.Unix(secs, 0)
	ref, err := name.NewTag(*tag)
	if err != nil {
		return fmt.Errorf("--tag %q: %w", *tag, err)
	}
	if k.glibc {
		if *debs == "" {
			return fmt.Errorf("--debs is required for %s (its glibc base)", *kindName)
		}
		o.debs, err = filepath.Glob(filepath.Join(*debs, "*.deb"))
		if err != nil || len(o.debs) == 0 {
			return fmt.Errorf("--debs %s holds no .deb files", *debs)
		}
	} else if *debs != "" {
		return fmt.Errorf("--debs: the %s image has no Debian base (it is static)", *kindName)
	}

	img, err := buildImage(k, o)
	if err != nil {
		return fmt.Errorf("building %s: %w", *kindName, err)
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return errors.Join(fmt.Errorf("writing %s: %w", *out, err), os.Remove(tmp))
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	id, err := img.ConfigName() // the image ID that docker load and podman load show
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var compressed int64
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return err
		}
		compressed += size
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s (image ID %s): %d layers, %.1f MB compressed, tarball %s (%.1f MB)\n",
		*kindName, ref, id, len(layers), float64(compressed)/1e6, *out, float64(st.Size())/1e6)
	return err
}

func kindNames() []string {
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
