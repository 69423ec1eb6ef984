package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// `make test-images` (part of `make test`) builds the images first and passes what it stamped.
var (
	imagesDir = flag.String("images", "../../../bin/images", "where make images wrote the tarballs")
	arch      = flag.String("arch", runtime.GOARCH, "the images' architecture")
	version   = flag.String("version", "", "the version make images stamped (empty: any)")
	revision  = flag.String("revision", "", "the commit make images stamped (empty: any commit)")
)

const repoRoot = "../../.."

// want is what each built image must be.
var want = map[string]struct {
	entrypoint string
	user       string
	helpSays   string // a flag its --help lists
}{
	"operator":  {entrypoint: "/manager", user: "65532:65532", helpSays: "-leader-elect"},
	"gpu-agent": {entrypoint: "/gpu-agent", user: "0:0", helpSays: "-ignored-xids"},
}

// TestImages opens the tarballs of make images as a runtime would, checks their config, that no
// layer holds a shell, and runs each binary from the image's files with --help. The operator's
// binary is static; the GPU agent's runs under the image's own dynamic loader and glibc (from the
// image's Debian packages, not this machine's), on this machine's kernel.
func TestImages(t *testing.T) {
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(*imagesDir, name+"-linux-"+*arch+".tar")
			if _, err := os.Stat(file); err != nil {
				t.Fatalf("no image %s: run make images (make test-images runs this test after it): %v", file, err)
			}
			img, err := tarball.ImageFromPath(file, nil)
			if err != nil {
				t.Fatalf("opening %s: %v", file, err)
			}
			checkConfig(t, name, img)
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range layers {
				if shells := shellsIn(t, l); len(shells) > 0 {
					t.Errorf("layer %d holds a shell: %v", i, shells)
				}
			}

			root := t.TempDir()
			extract(t, img, root)
			bin := filepath.Join(root, w.entrypoint)
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatalf("the entrypoint %s is not an ELF binary in the image: %v", w.entrypoint, err)
			}
			interp := interpreter(t, f)
			libs, err := f.ImportedLibraries()
			f.Close()
			if err != nil {
				t.Fatal(err)
			}

			var cmd *exec.Cmd
			if name == "operator" {
				if interp != "" || len(libs) > 0 {
					t.Fatalf("the operator's binary is not static: interpreter %q, libraries %v", interp, libs)
				}
				cmd = exec.Command(bin, "--help")
			} else {
				loader, libPath := imageLoader(t, root, interp)
				checkLibrariesFromImage(t, root, loader, libPath, bin)
				cmd = exec.Command(loader, "--library-path", libPath, bin, "--help")
			}
			cmd.Env = []string{} // nothing from this machine's environment
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s --help from the image: %v\n%s", w.entrypoint, err, out)
			}
			if !strings.Contains(string(out), w.helpSays) {
				t.Errorf("%s --help does not list %s:\n%s", w.entrypoint, w.helpSays, out)
			}
		})
	}
}

func checkConfig(t *testing.T, name string, img v1.Image) {
	t.Helper()
	w := want[name]
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != *arch {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, *arch)
	}
	if diff := cmp.Diff([]string{w.entrypoint}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if len(cf.Config.Cmd) > 0 {
		t.Errorf("cmd %v, want none: the DaemonSet and the Deployment pass args", cf.Config.Cmd)
	}
	if cf.Config.User != w.user {
		t.Errorf("user %q, want %q", cf.Config.User, w.user)
	}
	if cf.Created.IsZero() {
		t.Error("no creation time")
	}
	l := cf.Config.Labels
	if l["org.opencontainers.image.title"] != "agentfleet-"+name {
		t.Errorf("title label %q, want agentfleet-%s", l["org.opencontainers.image.title"], name)
	}
	if !strings.HasPrefix(l["org.opencontainers.image.source"], "https://") {
		t.Errorf("source label %q, want the repository's URL", l["org.opencontainers.image.source"])
	}
	if got := l["org.opencontainers.image.revision"]; !revisionRE.MatchString(got) || (*revision != "" && got != *revision) {
		t.Errorf("revision label %q, want the commit %q", got, *revision)
	}
	if got := l["org.opencontainers.image.version"]; got == "" || (*version != "" && got != *version) {
		t.Errorf("version label %q, want %q", got, *version)
	}
	if got, want := l["org.opencontainers.image.created"], cf.Created.UTC().Format(time.RFC3339); got != want {
		t.Errorf("created label %q, want the config's time %q", got, want)
	}
	if name == "gpu-agent" {
		pkgs := l[labelDebianPackages]
		for _, p := range gpuAgentPackages {
			if !regexp.MustCompile(`(^| )` + regexp.QuoteMeta(p) + `=\S+`).MatchString(pkgs) {
				t.Errorf("label %s = %q does not name %s and its version", labelDebianPackages, pkgs, p)
			}
		}
		if l[labelRunsAsRoot] == "" {
			t.Errorf("no label %s saying why the agent runs as root", labelRunsAsRoot)
		}
	}
}

// gpuAgentPackages are the Makefile's GPU_AGENT_DEBS.
var gpuAgentPackages = []string{"libc6", "libgcc-s1"}

// shellsIn names the shells and shell-like tools in a layer, wherever they are.
func shellsIn(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var shells []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return shells
		}
		if err != nil {
			t.Fatal(err)
		}
		switch path.Base(h.Name) {
		case "sh", "bash", "dash", "ash", "zsh", "busybox", "toybox":
			shells = append(shells, h.Name)
		}
	}
}

// extract writes the image's file system (its layers flattened, as a runtime would) under root.
// Symbolic links are made relative, so that an absolute one (/lib64/ld-linux-x86-64.so.2 points to
// /lib/x86_64-linux-gnu/…) resolves inside root, not on this machine.
func extract(t *testing.T, img v1.Image, root string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := cleanName(h.Name)
		if name == "" {
			continue
		}
		dst := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(dst, b, fs.FileMode(h.Mode&0o755)|0o600)
			}
		case tar.TypeSymlink:
			target := h.Linkname
			if !path.IsAbs(target) {
				target = path.Join("/", path.Dir(name), target)
			}
			var rel string
			if rel, err = filepath.Rel(filepath.Dir(dst), filepath.Join(root, cleanName(target))); err == nil {
				err = os.Symlink(rel, dst)
			}
		case tar.TypeLink:
			err = os.Link(filepath.Join(root, cleanName(h.Linkname)), dst)
		default:
			t.Fatalf("%s: tar type %q in an image", name, h.Typeflag)
		}
		if err != nil {
			t.Fatalf("extracting %s: %v", name, err)
		}
	}
}

func interpreter(t *testing.T, f *elf.File) string {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			return string(bytes.TrimRight(b, "\x00"))
		}
	}
	return ""
}

// imageLoader finds the binary's dynamic loader and glibc's folder in the image.
func imageLoader(t *testing.T, root, interp string) (loader, libPath string) {
	t.Helper()
	if interp == "" {
		t.Fatal("the GPU agent's binary is static: it is built with cgo, for NVML's dlopen")
	}
	loader = filepath.Join(root, interp)
	if _, err := os.Stat(loader); err != nil {
		t.Fatalf("the binary's interpreter %s is not in the image: %v", interp, err)
	}
	var dirs []string
	found := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch d.Name() {
		case "libc.so.6", "libgcc_s.so.1":
			found[d.Name()] = true
			if dir := filepath.Dir(p); !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, lib := range []string{"libc.so.6", "libgcc_s.so.1"} {
		if !found[lib] {
			t.Errorf("no %s in the image", lib)
		}
	}
	for _, p := range gpuAgentPackages {
		b, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status.d", p))
		if err != nil || !bytes.Contains(b, []byte("Package: "+p+"\n")) {
			t.Errorf("/var/lib/dpkg/status.d/%s does not describe %s (%v), for image scanners", p, p, err)
		}
	}
	return loader, strings.Join(dirs, ":")
}

// checkLibrariesFromImage asks the image's loader where it finds the binary's libraries: all must
// come from the image.
func checkLibrariesFromImage(t *testing.T, root, loader, libPath, bin string) {
	t.Helper()
	cmd := exec.Command(loader, "--list", "--library-path", libPath, bin)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --list: %v\n%s", loader, err, out)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		_, found, ok := strings.Cut(sc.Text(), "=>")
		if !ok {
			continue // the vDSO, the loader itself
		}
		p := strings.Fields(found)
		if len(p) == 0 || !strings.HasPrefix(p[0], root+"/") {
			t.Errorf("a library of the GPU agent is not taken from the image: %s", strings.TrimSpace(sc.Text()))
		}
		n++
	}
	if n == 0 {
		t.Errorf("the loader lists no library of the GPU agent:\n%s", out)
	}
	t.Logf("the GPU agent's libraries, as the image's loader finds them:\n%s", out)
}

// TestBuildIsReproducible: the same inputs give the same digest, and the stamped facts change it.
func TestBuildIsReproducible(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "manager")
	if err := os.WriteFile(bin, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := buildOptions{binary: bin, version: "v1.2.3", revision: strings.Repeat("a", 40),
		source: "https://example.com/agentfleet", created: time.Unix(1700000000, 0), arch: "amd64"}
	digest := func(o buildOptions) v1.Hash {
		t.Helper()
		img, err := buildImage(kinds["operator"], o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := digest(o)
	if again := digest(o); again != first {
		t.Errorf("two builds of the same inputs: %s, then %s", first, again)
	}
	later := o
	later.created = o.created.Add(time.Second)
	otherRevision := o
	otherRevision.revision = strings.Repeat("b", 40)
	for what, changed := range map[string]buildOptions{"created": later, "revision": otherRevision} {
		if digest(changed) == first {
			t.Errorf("a different %s gives the same digest", what)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gpu-agent")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := buildOptions{binary: bin, version: "v1", revision: strings.Repeat("a", 40),
		source: "https://example.com", created: time.Unix(0, 0), arch: "amd64"}
	if _, err := buildImage(kinds["gpu-agent"], o); err == nil || !strings.Contains(err.Error(), "Debian packages") {
		t.Errorf("gpu-agent without .deb files: error %v, want one that asks for Debian packages", err)
	}
	noVersion := o
	noVersion.version = ""
	if _, err := buildImage(kinds["operator"], noVersion); err == nil || !strings.Contains(err.Error(), "org.opencontainers.image.version") {
		t.Errorf("no version: error %v, want one naming the label", err)
	}
	for args, says := range map[string]string{
		"--image nope": `--image "nope": want gpu-agent or operator`,
		"--image operator --out x.tar --tag a/b:c --binary b --version v --revision abc --source s --arch amd64 --created 1":                 "--revision \"abc\" is not a commit",
		"--image operator --out x.tar --tag a/b:c --binary b --version v --revision " + strings.Repeat("a", 40) + " --source s --arch amd64": "--created is required",
	} {
		if err := run(strings.Fields(args), io.Discard); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("images %s: error %v, want one saying %s", args, err, says)
		}
	}
}

// TestFlagsInStep: .ko.yaml (the release's operator build) uses the Makefile's binary flags, and the
// Dockerfile builds through the Makefile's targets rather than with flags of its own.
func TestFlagsInStep(t *testing.T) {
	makefile := readRepoFile(t, "Makefile")
	makeVar := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:?=\s*(.*)$`).FindStringSubmatch(makefile)
		if m == nil {
			t.Fatalf("no %s in the Makefile", name)
		}
		return strings.TrimSpace(m[1])
	}
	ko := readRepoFile(t, ".ko.yaml")
	koList := func(key string) string {
		m := regexp.MustCompile(`(?m)^\s*` + key + `:\s*(\[.*\])\s*$`).FindStringSubmatch(ko)
		if m == nil {
			t.Fatalf(".ko.yaml has no %s: [...] line", key)
		}
		var list []string
		if err := json.Unmarshal([]byte(m[1]), &list); err != nil {
			t.Fatalf(".ko.yaml %s: %v", key, err)
		}
		return strings.Join(list, " ")
	}
	if got, want := koList("flags"), makeVar("IMAGE_GOFLAGS"); got != want {
		t.Errorf(".ko.yaml flags %q, the Makefile's IMAGE_GOFLAGS %q", got, want)
	}
	if got, want := koList("ldflags"), makeVar("IMAGE_LDFLAGS"); got != want {
		t.Errorf(".ko.yaml ldflags %q, the Makefile's IMAGE_LDFLAGS %q", got, want)
	}
	if got, want := strings.Join(strings.Fields(makeVar("GPU_AGENT_DEBS")), " "), strings.Join(gpuAgentPackages, " "); got != want {
		t.Errorf("the Makefile's GPU_AGENT_DEBS %q, the test checks %q", got, want)
	}

	dockerfile := readRepoFile(t, "Dockerfile")
	for _, target := range []string{"make image-manager", "make image-gpu-agent"} {
		if !strings.Contains(dockerfile, target) {
			t.Errorf("the Dockerfile does not run %s", target)
		}
	}
	if regexp.MustCompile(`(?m)^[^#]*\bgo build\b`).MatchString(dockerfile) {
		t.Error("the Dockerfile runs go build itself: build through the Makefile's image-* targets, so that the flags are the same")
	}
}

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
