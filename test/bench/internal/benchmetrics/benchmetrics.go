// Package benchmetrics is what the benchmarks read of the operator: its own metrics endpoint, parsed
// with Prometheus' text parser, and the percentiles they report.
package benchmetrics

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Operator is one scrape of the operator's metrics endpoint.
type Operator struct {
	// CPUSeconds is the operator's process_cpu_seconds_total (user and system), which its process
	// collector reports.
	CPUSeconds float64
	// Requests sums client-go's rest_client_requests_total: "read" (GET), "write" (every other
	// method) and each write method.
	Requests map[string]float64
	// Reconciles is controller-runtime's controller_runtime_reconcile_total of the AgentFleet
	// controller, every result.
	Reconciles float64
}

// Scrape reads the operator's metrics at url within timeout.
func Scrape(ctx context.Context, url string, timeout time.Duration) (Operator, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Operator{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Operator{}, fmt.Errorf("reading the operator's metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return Operator{}, fmt.Errorf("reading the operator's metrics at %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return Operator{}, fmt.Errorf("parsing the operator's metrics: %w", err)
	}
	cpu, ok := families["process_cpu_seconds_total"]
	if !ok || len(cpu.GetMetric()) != 1 {
		return Operator{}, fmt.Errorf("the operator's metrics at %s have no process_cpu_seconds_total", url)
	}
	m := Operator{CPUSeconds: cpu.GetMetric()[0].GetCounter().GetValue(), Requests: map[string]float64{}}
	requests, ok := families["rest_client_requests_total"]
	if !ok {
		return Operator{}, fmt.Errorf("the operator's metrics at %s have no rest_client_requests_total", url)
	}
	for _, s := range requests.GetMetric() {
		method := Label(s.GetLabel(), "method")
		v := s.GetCounter().GetValue()
		if method == http.MethodGet {
			m.Requests["read"] += v
			continue
		}
		m.Requests["write"] += v
		m.Requests[method] += v
	}
	reconciles, ok := families["controller_runtime_reconcile_total"]
	if !ok {
		return Operator{}, fmt.Errorf("the operator's metrics at %s have no controller_runtime_reconcile_total", url)
	}
	for _, s := range reconciles.GetMetric() {
		if Label(s.GetLabel(), "controller") == "agentfleet" {
			m.Reconciles += s.GetCounter().GetValue()
		}
	}
	return m, nil
}

// Label is the value of a metric's label name ("" without it).
func Label[L interface {
	GetName() string
	GetValue() string
}](labels []L, name string) string {
	for _, l := range labels {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Percentile is the p-th percentile (nearest rank) of v; 0 for none.
func Percentile(v []float64, p int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (p*len(s) + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// MemTotal is the machine's memory from /proc/meminfo (0 where there is none), for a bench's results.
func MemTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		fs := strings.Fields(line)
		if len(fs) >= 2 && fs[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
