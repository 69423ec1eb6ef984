// Package prometheus runs Debian's Prometheus server (installed by `make prometheus-deps`) on
// loopback for the tests and benchmarks that check what AgentFleet's metrics add up to.
package prometheus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoPrometheus is returned when the prometheus binary is not installed.
var ErrNoPrometheus = errors.New("prometheus is not installed: run `make prometheus-deps` (Debian's prometheus package)")

// Binary finds a tool of Debian's prometheus package: prometheus or promtool.
func Binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s: %w", name, ErrNoPrometheus)
}

// Options say what the server scrapes, and where it keeps its data.
type Options struct {
	// Dir holds its configuration, data (unless DataDir is set) and log.
	Dir string
	// DataDir is the TSDB (default Dir/data): a benchmark points it at blocks it created.
	DataDir string
	// Targets are the scrape jobs: job name to host:port addresses, scraped at /metrics.
	Targets map[string][]string
	// ScrapeInterval (default 1s).
	ScrapeInterval time.Duration
}

// Server is a running Prometheus.
type Server struct {
	URL     string
	LogPath string
	cmd     *exec.Cmd
	done    chan error
}

// Start runs Prometheus and waits until it is ready.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin, err := Binary("prometheus")
	if err != nil {
		return nil, err
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = time.Second
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(o.Dir, "data")
	}
	config := filepath.Join(o.Dir, "prometheus.yml")
	if err := os.WriteFile(config, Config(o.Targets, o.ScrapeInterval), 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), LogPath: filepath.Join(o.Dir, "prometheus.log"), done: make(chan error, 1)}
	log, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = log.Close() }()
	s.cmd = exec.Command(bin,
		"--config.file="+config,
		"--storage.tsdb.path="+o.DataDir,
		"--storage.tsdb.retention.time=400d",
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		"--log.level=warn",
	)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("prometheus exited before it was ready (%w); its log: %s\n%s", err, s.LogPath, tail(s.LogPath))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if ready(s.URL) {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("prometheus not ready after 60s; its log: %s\n%s", s.LogPath, tail(s.LogPath))
		}
	}
}

// Stop stops the server and waits for it.
func (s *Server) Stop() {
	if s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-s.done:
		_ = err // killed: its exit status says so, nothing more
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		err := <-s.done
		_ = err
	}
}

// Config is a prometheus.yml scraping the targets every interval.
func Config(targets map[string][]string, interval time.Duration) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\nscrape_configs:\n", interval, interval)
	for job, addrs := range targets {
		fmt.Fprintf(&b, "  - job_name: %q\n    static_configs:\n      - targets: [%s]\n", job, quoteAll(addrs))
	}
	if len(targets) == 0 {
		b.WriteString("  []\n")
	}
	return []byte(b.String())
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

func ready(url string) bool {
	resp, err := http.Get(url + "/-/ready")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}
