// Command cost measures `agentfleet cost` over a month of recorded metrics: it writes the series the
// operator and the GPU agents would have exported for --fleets fleets over --days days, one sample
// per --interval, as OpenMetrics; turns them into TSDB blocks with promtool (Debian's prometheus
// package); serves them with Prometheus; and times the report for each grouping, cold and warm,
// printing the series and sample counts. Goal: under 2 s.
package main

import (
	"bufio"
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
	interval := flag.Duration("interval", 5*time.Minute, "time between recorded samples")
	runs := flag.Int("runs", 3, "timed reports per grouping after the cold one")
	keep := flag.Bool("keep", false, "keep the working folder")
	flag.Parse()
	if err := run(*fleets, *days, *interval, *runs, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench cost:", err)
		os.Exit(1)
	}
}

// The recording ends at a fixed instant, a whole hour, so that runs compare.
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
	input := filepath.Join(dir, "series.om")
	start := time.Now()
	series, samples, err := writeOpenMetrics(input, fleets, days, interval)
	if err != nil {
		return err
	}
	fmt.Printf("recorded %d fleets × %d days at %s: %d series, %d samples (written in %.1f s)\n",
		fleets, days, interval, series, samples, time.Since(start).Seconds())
	data := filepath.Join(dir, "data")
	start = time.Now()
	if out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration="+blockDuration(days).String(), input, data).CombinedOutput(); err != nil {
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
	if n, err := count(ctx, prom.URL); err != nil {
		return err
	} else {
		fmt.Printf("Prometheus serves %d agentfleet series\n", n)
	}

	for _, c := range []struct{ by, prices string }{
		{cost.ByNamespace, cost.PricedByTable}, {cost.ByFleet, cost.PricedByTable}, {cost.ByCostCenter, cost.PricedByTable},
		{cost.ByFleet, cost.PricedByOpenCost},
	} {
		by := c.by
		var times []time.Duration
		for i := 0; i <= runs; i++ {
			t0 := time.Now()
			args := []string{"cost", "--prometheus", prom.URL, "--since", fmt.Sprintf("%dd", days), "--until", end.Format(time.RFC3339), "--by", by, "--price-source", c.prices}
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
		fmt.Printf("agentfleet cost --since %dd --by %s --price-source %s: first %d ms, then median %d ms, max %d ms (goal < 2000 ms: %s)\n",
			days, by, c.prices, times[0].Milliseconds(), warm[len(warm)/2].Milliseconds(), slices.Max(times).Milliseconds(), verdict)
	}
	return nil
}

// blockDuration makes promtool write few large blocks, as Prometheus' compaction would leave a month
// of data, rather than its default of one block per 2 hours (360 for 30 days, and 20 times slower
// to write).
func blockDuration(days int) time.Duration {
	return time.Duration(max(days, 1)) * 24 * time.Hour
}

func count(ctx context.Context, url string) (int, error) {
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return 0, err
	}
	v, _, err := v1.NewAPI(c).Query(ctx, `count(last_over_time({__name__=~"agentfleet_.+"}[1d]))`, end)
	if err != nil {
		return 0, err
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 {
		return 0, fmt.Errorf("count of series: got %v", v)
	}
	return int(vec[0].Value), nil
}

// fleet is one recorded fleet: where it runs, what it holds, how busy its GPUs are.
type fleet struct {
	namespace, name, costCenter, product string
	gpus                                 int
	hourly, utilization                  float64
}

var products = []struct {
	name   string
	hourly float64
}{{"NVIDIA-H100-80GB-HBM3", 3.5}, {"NVIDIA-A100-SXM4-80GB", 2}, {"NVIDIA-L4", 0.7}, {"NVIDIA-H200", 4.5}}

func makeFleets(n int) []fleet {
	fs := make([]fleet, n)
	for i := range fs {
		p := products[i%len(products)]
		fs[i] = fleet{
			namespace: fmt.Sprintf("team-%02d", i%50), name: fmt.Sprintf("fleet-%03d", i), costCenter: fmt.Sprintf("cc-%d", i%10),
			product: p.name, hourly: p.hourly, gpus: 1 + i%4, utilization: float64(10+i%80) / 100,
		}
	}
	return fs
}

// writeOpenMetrics writes, per fleet, agentfleet_gpu_seconds_total and agentfleet_gpu_cost_total
// (the operator's) and agentfleet_gpu_utilization_ratio for each of its GPUs (the GPU agents'), one
// sample per interval. OpenMetrics wants each family's samples together, each series' in time order.
func writeOpenMetrics(path string, n, days int, interval time.Duration) (series, samples int, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fs := makeFleets(n)
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	steps := int(end.Sub(start) / interval)
	at := func(i int) time.Time { return start.Add(time.Duration(i) * interval) }
	fmt.Fprintln(w, "# TYPE agentfleet_gpu_seconds counter")
	for _, fl := range fs {
		series++
		for i := 0; i <= steps; i++ {
			seconds := float64(fl.gpus) * at(i).Sub(start).Seconds()
			fmt.Fprintf(w, "agentfleet_gpu_seconds_total{namespace=%q,fleet=%q,cost_center=%q,gpu_product=%q} %g %d\n",
				fl.namespace, fl.name, fl.costCenter, fl.product, seconds, at(i).Unix())
			samples++
		}
	}
	fmt.Fprintln(w, "# TYPE agentfleet_gpu_cost counter")
	for _, fl := range fs {
		series++
		for i := 0; i <= steps; i++ {
			c := float64(fl.gpus) * at(i).Sub(start).Hours() * fl.hourly
			fmt.Fprintf(w, "agentfleet_gpu_cost_total{namespace=%q,fleet=%q,cost_center=%q,gpu_product=%q,currency=\"USD\"} %g %d\n",
				fl.namespace, fl.name, fl.costCenter, fl.product, c, at(i).Unix())
			samples++
		}
	}
	fmt.Fprintln(w, "# TYPE agentfleet_gpu_utilization_ratio gauge")
	for fi, fl := range fs {
		for g := 0; g < fl.gpus; g++ {
			series++
			for i := 0; i <= steps; i++ {
				fmt.Fprintf(w, "agentfleet_gpu_utilization_ratio{node=\"node-%d\",gpu=\"%d\",uuid=\"GPU-%d-%d\",product=%q,namespace=%q,pod=\"%s-w%d\",fleet=%q} %g %d\n",
					fi, g, fi, g, fl.product, fl.namespace, fl.name, g, fl.name, fl.utilization, at(i).Unix())
				samples++
			}
		}
	}
	// The GPU agents' memory series (the node→product join for OpenCost) and OpenCost's price per
	// node's GPU.
	fmt.Fprintln(w, "# TYPE agentfleet_gpu_memory_total_bytes gauge")
	for fi, fl := range fs {
		for g := 0; g < fl.gpus; g++ {
			series++
			for i := 0; i <= steps; i++ {
				fmt.Fprintf(w, "agentfleet_gpu_memory_total_bytes{node=\"node-%d\",gpu=\"%d\",uuid=\"GPU-%d-%d\",product=%q,namespace=%q,pod=\"%s-w%d\",fleet=%q} 85899345920 %d\n",
					fi, g, fi, g, fl.product, fl.namespace, fl.name, g, fl.name, at(i).Unix())
				samples++
			}
		}
	}
	fmt.Fprintln(w, "# TYPE node_gpu_hourly_cost gauge")
	for node, fl := range fs { // a node per fleet: one GPU product per node
		series++
		for i := 0; i <= steps; i++ {
			fmt.Fprintf(w, "node_gpu_hourly_cost{node=\"node-%d\",instance_type=\"p5.48xlarge\"} %g %d\n", node, fl.hourly*0.9, at(i).Unix())
			samples++
		}
	}
	fmt.Fprintln(w, "# EOF")
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	return series, samples, f.Close()
}
