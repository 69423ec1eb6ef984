// Command cost measures `agentfleet cost` over a month of recorded metrics: it writes the series the
// operator, the GPU agents and OpenCost would have exported for --fleets fleets over --days days,
// one sample per --interval, and the series config/prometheus/agentfleet-rules.yaml records every 5
// minutes, as OpenMetrics (test/prometheus.History); turns them into TSDB blocks with promtool
// (Debian's prometheus package); serves them with Prometheus; and times the report for each grouping
// and price source, from the scraped series and from the recorded ones, cold and warm, printing the
// series and sample counts. Goal: under 2 s.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/agentfleet/agentfleet/internal/cli"
	"github.com/agentfleet/agentfleet/internal/cost"
	"github.com/agentfleet/agentfleet/test/prometheus"
)

func main() {
	fleets := flag.Int("fleets", 500, "fleets")
	days := flag.Int("days", 30, "days of history")
	interval := flag.Duration("interval", 5*time.Minute, "time between scraped samples")
	runs := flag.Int("runs", 3, "timed reports per case after the cold one")
	keep := flag.Bool("keep", false, "keep the working folder")
	flag.Parse()
	if err := run(*fleets, *days, *interval, *runs, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench cost:", err)
		os.Exit(1)
	}
}

// The recording ends at a fixed instant, so that runs compare.
var end = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func run(fleets, days int, interval time.Duration, runs int, keep bool) error {
	promtool, err := prometheus.Binary("promtool")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "agentfleet-bench-cost-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("working folder:", dir)
	} else {
		defer func() { _ = os.RemoveAll(dir) }()
	}
	h := prometheus.History{N: fleets, End: end, Range: time.Duration(days) * 24 * time.Hour, Interval: interval, Recorded: true, RecordEvery: 5 * time.Minute}
	input := filepath.Join(dir, "series.om")
	start := time.Now()
	f, err := os.Create(input)
	if err != nil {
		return err
	}
	series, samples, err := h.Write(f)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Printf("recorded %d fleets × %d days, scraped every %s, rules every %s: %d series, %d samples (written in %.1f s)\n",
		fleets, days, interval, h.RecordEvery, series, samples, time.Since(start).Seconds())
	data := filepath.Join(dir, "data")
	start = time.Now()
	// Few large blocks, as Prometheus' compaction would leave a month, rather than promtool's default
	// of one block per 2 hours (360 for 30 days, and 20 times slower to write).
	block := time.Duration(max(days, 1)) * 24 * time.Hour
	if out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration="+block.String(), input, data).CombinedOutput(); err != nil {
		return fmt.Errorf("promtool: %w\n%s", err, out)
	}
	_ = os.Remove(input)
	fmt.Printf("promtool made the TSDB blocks in %.1f s\n", time.Since(start).Seconds())

	ctx := context.Background()
	prom, err := prometheus.Start(ctx, prometheus.Options{Dir: dir, DataDir: data})
	if err != nil {
		return err
	}
	defer prom.Stop()
	n, err := count(ctx, prom.URL)
	if err != nil {
		return err
	}
	fmt.Printf("Prometheus serves %d series\n", n)

	for _, c := range []struct {
		by, prices string
		recorded   bool
	}{
		{cost.ByNamespace, cost.PricedByTable, false}, {cost.ByFleet, cost.PricedByTable, false}, {cost.ByCostCenter, cost.PricedByTable, false},
		{cost.ByFleet, cost.PricedByOpenCost, false},
		{cost.ByFleet, cost.PricedByTable, true}, {cost.ByFleet, cost.PricedByOpenCost, true},
	} {
		var times []time.Duration
		args := []string{"cost", "--prometheus", prom.URL, "--since", fmt.Sprintf("%dd", days), "--until", end.Format(time.RFC3339),
			"--by", c.by, "--price-source", c.prices, fmt.Sprintf("--recorded=%t", c.recorded)}
		for i := 0; i <= runs; i++ {
			t0 := time.Now()
			if code := cli.Main(ctx, args, cli.IO{Out: io.Discard, Err: os.Stderr}); code != 0 {
				return fmt.Errorf("agentfleet %v: exit %d", args, code)
			}
			times = append(times, time.Since(t0))
		}
		warm := slices.Clone(times[1:])
		slices.Sort(warm)
		verdict := "goal met"
		if slices.Max(times) >= 2*time.Second {
			verdict = "GOAL MISSED"
		}
		source := "scraped"
		if c.recorded {
			source = "recorded"
		}
		fmt.Printf("agentfleet cost --since %dd --by %s --price-source %s, %s series: first %d ms, then median %d ms, max %d ms (goal < 2000 ms: %s)\n",
			days, c.by, c.prices, source, times[0].Milliseconds(), warm[len(warm)/2].Milliseconds(), slices.Max(times).Milliseconds(), verdict)
	}
	return nil
}

func count(ctx context.Context, url string) (int, error) {
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return 0, err
	}
	v, _, err := v1.NewAPI(c).Query(ctx, `count({__name__=~".+"})`, end)
	if err != nil {
		return 0, err
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 {
		return 0, fmt.Errorf("count of series: got %v", v)
	}
	return int(vec[0].Value), nil
}
