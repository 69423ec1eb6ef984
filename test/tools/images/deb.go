package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"
)

// entry is one file of a layer being assembled.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// debLayer unpacks Debian packages into one layer, the way distroless builds its bases: each
// package's data.tar as it is, and its control file in /var/lib/dpkg/status.d/<package> so that image
// scanners know what is installed. Packages that ship under /usr only (merged /usr, Debian 13 on) get
// the /lib and /lib64 links that base-files would make, so that the ELF interpreter is found. It
// returns the tar and "package=version" of each package. dpkg-deb reads the .deb files: it is there
// wherever apt-get download is, and it knows every compression Debian uses.
func debLayer(debs []string, created time.Time) ([]byte, []string, error) {
	debs = append([]string(nil), debs...)
	sort.Strings(debs)
	var entries []entry
	seen := map[string]byte{}
	add := func(e entry) error {
		name := e.hdr.Name
		if prev, ok := seen[name]; ok {
			if prev == tar.TypeDir && e.hdr.Typeflag == tar.TypeDir {
				return nil // both packages have /usr, /usr/share/doc, …
			}
			return fmt.Errorf("%s is in two packages", name)
		}
		seen[name] = e.hdr.Typeflag
		entries = append(entries, e)
		return nil
	}
	dir := func(name string) error {
		return add(entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: created}})
	}

	var pkgs []string
	var controls []entry
	for _, deb := range debs {
		fields, err := dpkgDeb("--show", "--showformat=${Package}\t${Version}\t${Architecture}", deb)
		if err != nil {
			return nil, nil, err
		}
		f := strings.Split(strings.TrimSpace(string(fields)), "\t")
		if len(f) != 3 || f[0] == "" || f[1] == "" {
			return nil, nil, fmt.Errorf("%s: dpkg-deb --show says %q, not package, version and architecture", deb, fields)
		}
		pkgs = append(pkgs, f[0]+"="+f[1])
		control, err := dpkgDeb("--info", deb, "control")
		if err != nil {
			return nil, nil, err
		}
		controls = append(controls, entry{hdr: &tar.Header{Typeflag: tar.TypeReg,
			Name: "var/lib/dpkg/status.d/" + f[0], Mode: 0o644, Size: int64(len(control)), ModTime: created}, data: control})

		data, err := dpkgDeb("--fsys-tarfile", deb)
		if err != nil {
			return nil, nil, err
		}
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s: reading its data.tar: %w", deb, err)
			}
			name := cleanName(h.Name)
			if name == "" {
				continue
			}
			out := &tar.Header{Typeflag: h.Typeflag, Name: name, Mode: h.Mode & 0o7777, Size: h.Size,
				ModTime: h.ModTime.UTC().Truncate(time.Second)}
			switch h.Typeflag {
			case tar.TypeDir, tar.TypeReg:
			case tar.TypeSymlink:
				out.Linkname = h.Linkname
			case tar.TypeLink:
				out.Linkname = cleanName(h.Linkname)
			default:
				return nil, nil, fmt.Errorf("%s: %s is of tar type %q, which a base layer should not hold", deb, name, h.Typeflag)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: reading %s: %w", deb, name, err)
			}
			if err := add(entry{hdr: out, data: body}); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", deb, err)
			}
		}
	}

	for _, d := range []string{"lib", "lib64"} {
		if _, under := seen["usr/"+d]; under {
			if _, ok := seen[d]; !ok {
				if err := add(entry{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: d, Linkname: "usr/" + d,
					Mode: 0o777, ModTime: created}}); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	for _, d := range []string{"var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/status.d"} {
		if _, ok := seen[d]; !ok {
			if err := dir(d); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, c := range controls {
		if err := add(c); err != nil {
			return nil, nil, err
		}
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, nil, fmt.Errorf("writing %s: %w", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, nil, fmt.Errorf("writing %s: %w", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), pkgs, nil
}

// cleanName turns "./usr/lib/" into "usr/lib"; the archive's root is "".
func cleanName(name string) string {
	name = path.Clean("/" + name)
	return strings.TrimPrefix(name, "/")
}

func dpkgDeb(args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("dpkg-deb", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if errors.Is(err, exec.ErrNotFound) {
		return nil, errors.New("dpkg-deb is not installed: the GPU agent's base is built from Debian packages, on a Debian or Ubuntu machine")
	}
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
