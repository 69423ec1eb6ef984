package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentfleet/agentfleet/test/bench/internal/benchmetrics"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

// procSample is what /proc says of a process at one moment.
type procSample struct {
	CPUSeconds float64 // utime + stime
	PeakRSS    int64   // VmHWM: the peak resident set since start or since resetPeak
	RSS        int64   // VmRSS
}

func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("reading the CPU time of pid %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces: fields count from after it.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	f := strings.Fields(string(rest))
	// After the name: state is field 3, so utime (14) and stime (15) are f[11] and f[12].
	if len(f) < 13 {
		return s, fmt.Errorf("pid %d: /proc/<pid>/stat has %d fields after the name, want at least 13", pid, len(f))
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("pid %d: utime %q, stime %q are not numbers", pid, f[11], f[12])
	}
	s.CPUSeconds = (utime + stime) / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("reading the memory of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			continue
		}
		switch fs[0] {
		case "VmHWM:":
			s.PeakRSS = kb * 1024
		case "VmRSS:":
			s.RSS = kb * 1024
		}
	}
	return s, nil
}

// resetPeak sets a process's VmHWM back to its current RSS (proc(5), clear_refs "5"), so that the
// next read is the peak of one phase, not of the run.
func resetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("resetting the peak RSS of pid %d: %w", pid, err)
	}
	return nil
}

// controlPlanePids finds etcd and kube-apiserver, which envtest runs as children of this process
// (cluster.Pids does not list them), by their program name. kube-apiserver is also matched on its
// --secure-port, that of the cluster's address, so that no other API server is taken for it.
func controlPlanePids(apiPort string) (map[string]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	self := os.Getpid()
	pids := map[string]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		switch filepath.Base(args[0]) {
		case "kube-apiserver":
			for _, a := range args[1:] {
				if a == "--secure-port="+apiPort {
					pids["kube-apiserver"] = pid
				}
			}
		case "etcd":
			if parent(pid) == self {
				pids["etcd"] = pid
			}
		}
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if pids[name] == 0 {
			return nil, fmt.Errorf("no %s process of this cluster found in /proc (API server port %s)", name, apiPort)
		}
	}
	return pids, nil
}

// parent is a process's parent pid (0 when unknown).
func parent(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// operatorMetrics is one scrape of a controller-runtime operator's metrics endpoint (ours or
// KubeRay's: both serve controller-runtime's registry).
type operatorMetrics struct {
	// Requests is rest_client_requests_total by method, and "read" (GET) and "write" (the rest), and
	// the writes by method and response code ("PATCH 409").
	Requests map[string]float64
	// Reconciles is controller_runtime_reconcile_total by controller, every result.
	Reconciles map[string]float64
	// WorkSeconds and WorkCount are workqueue_work_duration_seconds' sum and count by queue: how
	// long reconciles take.
	WorkSeconds, WorkCount map[string]float64
	// Depth is workqueue_depth by queue: how many objects wait for a worker.
	Depth map[string]float64
}

func scrapeOperator(ctx context.Context, url string) (operatorMetrics, error) {
	m := operatorMetrics{Requests: map[string]float64{}, Reconciles: map[string]float64{},
		WorkSeconds: map[string]float64{}, WorkCount: map[string]float64{}, Depth: map[string]float64{}}
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return m, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, fmt.Errorf("reading metrics at %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("reading metrics at %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return m, fmt.Errorf("parsing metrics at %s: %w", url, err)
	}
	if _, ok := families["rest_client_requests_total"]; !ok {
		return m, fmt.Errorf("the metrics at %s have no rest_client_requests_total", url)
	}
	for _, s := range families["rest_client_requests_total"].GetMetric() {
		method, v := benchmetrics.Label(s.GetLabel(), "method"), s.GetCounter().GetValue()
		m.Requests[method] += v
		if method == http.MethodGet {
			m.Requests["read"] += v
		} else {
			m.Requests["write"] += v
			// And by response code: a write that conflicted (409) is one to do again.
			m.Requests[method+" "+benchmetrics.Label(s.GetLabel(), "code")] += v
		}
	}
	for _, s := range families["controller_runtime_reconcile_total"].GetMetric() {
		m.Reconciles[benchmetrics.Label(s.GetLabel(), "controller")] += s.GetCounter().GetValue()
	}
	for _, s := range families["workqueue_work_duration_seconds"].GetMetric() {
		name := benchmetrics.Label(s.GetLabel(), "name")
		m.WorkSeconds[name] += s.GetHistogram().GetSampleSum()
		m.WorkCount[name] += float64(s.GetHistogram().GetSampleCount())
	}
	for _, s := range families["workqueue_depth"].GetMetric() {
		m.Depth[benchmetrics.Label(s.GetLabel(), "name")] += s.GetGauge().GetValue() // one series per priority in a priority queue
	}
	return m, nil
}

const scrapeTimeout = 10 * time.Second
