package prometheus_test

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/agentfleet/agentfleet/internal/cost"
	"github.com/agentfleet/agentfleet/test/prometheus"
)

// The recording rules record what the report reads (promtool's own rule unit tests).
func TestRecordingRules(t *testing.T) {
	promtool, err := prometheus.Binary("promtool")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "test", "rules", "agentfleet-rules.test.yaml")
	cmd.Dir = "../../config/prometheus"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// A report read from the recorded series says what one read from the scraped series says, and both
// say what the history holds, in a real Prometheus.
func TestRecordedReportMatchesTheScrapedOne(t *testing.T) {
	promtool, err := prometheus.Binary("promtool")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	h := prometheus.History{N: 8, End: end, Range: 6 * time.Hour, Interval: 30 * time.Second, Recorded: true, RecordEvery: 5 * time.Minute}
	input := filepath.Join(dir, "history.om")
	f, err := os.Create(input)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", input, data).CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
	ctx := context.Background()
	prom, err := prometheus.Start(ctx, prometheus.Options{Dir: dir, DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Stop)
	pc, err := promapi.NewClient(promapi.Config{Address: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	api := v1.NewAPI(pc)

	fleets := map[string]prometheus.Fleet{}
	for _, fl := range h.Fleets() {
		fleets[fl.Namespace+"/"+fl.Name] = fl
	}
	for _, prices := range []string{cost.PricedByTable, cost.PricedByOpenCost} {
		for _, recorded := range []bool{false, true} {
			r, err := cost.Compute(ctx, api, cost.Options{Since: end.Add(-h.Range), Until: end, By: cost.ByFleet, Prices: prices, Recorded: recorded})
			if err != nil {
				t.Fatalf("prices %s, recorded %v: %v", prices, recorded, err)
			}
			if len(r.Rows) != h.N {
				t.Fatalf("prices %s, recorded %v: %d rows, want %d", prices, recorded, len(r.Rows), h.N)
			}
			for _, row := range r.Rows {
				fl := fleets[row.Group]
				hours := float64(fl.GPUs) * h.Range.Hours()
				hourly := fl.Hourly
				if prices == cost.PricedByOpenCost {
					hourly *= 0.9
				}
				near := func(what string, got, want float64) {
					if math.Abs(got-want) > 0.01*want {
						t.Errorf("prices %s, recorded %v: %s %s = %.4f, want %.4f", prices, recorded, row.Group, what, got, want)
					}
				}
				near("GPU-hours", row.GPUHours, hours)
				near("cost", row.Cost, hours*hourly)
				if row.Utilization == nil {
					t.Errorf("prices %s, recorded %v: %s utilization unknown", prices, recorded, row.Group)
				} else {
					near("utilization", *row.Utilization, fl.Utilization)
				}
			}
		}
	}
}
