// Package browser loads a local HTML page in Debian's headless Chromium, for tests that must know
// what a person would see: the DOM after the page's scripts ran, and a screenshot.
package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrNoChromium is returned (wrapped) when no Chromium is installed; the caller decides whether that
// fails its test.
var ErrNoChromium = errors.New("chromium not found: install Debian's chromium: apt-get install -y chromium")

// debianChromium is where Debian's chromium package puts its launcher.
const debianChromium = "/usr/bin/chromium"

// Chromium returns the path of the chromium launcher: Debian's, else the one on PATH.
func Chromium() (string, error) {
	if _, err := os.Stat(debianChromium); err == nil {
		return debianChromium, nil
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		return "", fmt.Errorf("%w (%w)", ErrNoChromium, err)
	}
	return p, nil
}

// Render loads the page at htmlPath and returns its DOM after the page's scripts ran (Chromium's
// --dump-dom); when screenshotPath is not empty it also writes a 1280×900 PNG of the page there.
// Each load is a fresh headless Chromium with a profile of its own, so no state leaks between calls.
// The page gets up to 5 s of virtual time for its scripts and timers; ctx bounds the whole.
func Render(ctx context.Context, htmlPath, screenshotPath string) (dom string, err error) {
	abs, err := filepath.Abs(htmlPath)
	if err != nil {
		return "", fmt.Errorf("page %s: %w", htmlPath, err)
	}
	// Chromium shows an error page for a missing file, with no error of its own.
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("page: %w", err)
	}
	chromium, err := Chromium()
	if err != nil {
		return "", err
	}
	page := (&url.URL{Scheme: "file", Path: abs}).String()

	out, err := run(ctx, chromium, "--dump-dom", page)
	if err != nil {
		return "", fmt.Errorf("dumping the DOM of %s: %w", htmlPath, err)
	}
	dom = string(out)
	if !strings.Contains(dom, "<html") {
		return "", fmt.Errorf("dumping the DOM of %s: chromium printed no document: %q", htmlPath, truncate(dom))
	}

	if screenshotPath == "" {
		return dom, nil
	}
	shot, err := filepath.Abs(screenshotPath)
	if err != nil {
		return "", fmt.Errorf("screenshot %s: %w", screenshotPath, err)
	}
	// A stale file from an earlier run must not pass for this one's.
	if err := os.Remove(shot); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("removing the old screenshot: %w", err)
	}
	if _, err := run(ctx, chromium, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", page); err != nil {
		return "", fmt.Errorf("taking a screenshot of %s: %w", htmlPath, err)
	}
	if fi, err := os.Stat(shot); err != nil {
		return "", fmt.Errorf("chromium wrote no screenshot of %s: %w", htmlPath, err)
	} else if fi.Size() == 0 {
		return "", fmt.Errorf("chromium wrote an empty screenshot of %s at %s", htmlPath, shot)
	}
	return dom, nil
}

// run runs one headless Chromium with args after the common flags and returns its stdout.
func run(ctx context.Context, chromium string, args ...string) ([]byte, error) {
	profile, err := os.MkdirTemp("", "agentfleet-chromium-")
	if err != nil {
		return nil, fmt.Errorf("profile directory: %w", err)
	}
	defer func() { _ = os.RemoveAll(profile) }()

	flags := []string{
		"--headless",
		// Tests run as root in containers, where Chromium's sandbox cannot start.
		"--no-sandbox",
		"--disable-gpu",
		// /dev/shm is often 64 MB in containers, too small for the renderer.
		"--disable-dev-shm-usage",
		// Nothing may reach the network: the page is local and must stay self-contained.
		"--disable-quic",
		"--no-first-run",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--user-data-dir=" + profile,
		// Virtual time runs the page's scripts and timers to quiescence without waiting in real time.
		"--virtual-time-budget=5000",
	}
	cmd := exec.CommandContext(ctx, chromium, append(flags, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Chromium forks renderer and utility processes; on cancellation kill them all, not just the
	// launcher, and do not wait long for pipes its children may hold.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	// HOME for what Chromium writes outside the profile (crash reports, fontconfig cache).
	cmd.Env = append(os.Environ(), "HOME="+profile)
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return nil, fmt.Errorf("%s: %w; its stderr ends: %s", chromium, err, tail(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// tail is the last lines of Chromium's stderr, which is mostly noise (D-Bus) before the error.
func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

func truncate(s string) string {
	if len(s) > 500 {
		return s[:500] + "…"
	}
	return s
}
