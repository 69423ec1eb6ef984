package prometheus

import (
	"bufio"
	"fmt"
	"io"
	"time"
)

// History is a made-up record of what the operator, the GPU agents and OpenCost exported for some
// fleets, as OpenMetrics for `promtool tsdb create-blocks-from openmetrics`: a fleet holds its GPUs
// for the whole range, at a steady utilization, one node per fleet.
type History struct {
	// N is the number of fleets.
	N     int
	End   time.Time
	Range time.Duration
	// Interval between the scraped samples.
	Interval time.Duration
	// Recorded adds the series of config/prometheus/agentfleet-rules.yaml, one every RecordEvery (as
	// Prometheus' rule evaluations would have written them).
	Recorded    bool
	RecordEvery time.Duration
}

// Fleet is one recorded fleet.
type Fleet struct {
	Namespace, Name, CostCenter, Product string
	GPUs                                 int
	// Hourly is the price per GPU-hour of the cost counter; OpenCost's node price is 0.9 of it.
	Hourly, Utilization float64
}

var products = []struct {
	name   string
	hourly float64
}{{"NVIDIA-H100-80GB-HBM3", 3.5}, {"NVIDIA-A100-SXM4-80GB", 2}, {"NVIDIA-L4", 0.7}, {"NVIDIA-H200", 4.5}}

// Fleets are the history's fleets: 50 namespaces, 10 cost centers, 4 products, 1–4 GPUs each.
func (h History) Fleets() []Fleet {
	fs := make([]Fleet, h.N)
	for i := range fs {
		p := products[i%len(products)]
		fs[i] = Fleet{
			Namespace: fmt.Sprintf("team-%02d", i%50), Name: fmt.Sprintf("fleet-%03d", i), CostCenter: fmt.Sprintf("cc-%d", i%10),
			Product: p.name, Hourly: p.hourly, GPUs: 1 + i%4, Utilization: float64(10+i%80) / 100,
		}
	}
	return fs
}

// Write writes the history and returns its series and sample counts. OpenMetrics wants each
// family's samples together, each series' in time order.
func (h History) Write(out io.Writer) (series, samples int, err error) {
	w := bufio.NewWriterSize(out, 1<<20)
	fs := h.Fleets()
	start := h.End.Add(-h.Range)
	family := func(name, typ string, each func(emit func(labels string, value func(t time.Time) float64)), every time.Duration) {
		fmt.Fprintf(w, "# TYPE %s %s\n", name, typ)
		sample := name
		if typ == "counter" {
			sample += "_total"
		}
		each(func(labels string, value func(t time.Time) float64) {
			series++
			for t := start; !t.After(h.End); t = t.Add(every) {
				fmt.Fprintf(w, "%s{%s} %g %d\n", sample, labels, value(t), t.Unix())
				samples++
			}
		})
	}
	fleetLabels := func(f Fleet) string {
		return fmt.Sprintf("namespace=%q,fleet=%q,cost_center=%q,gpu_product=%q", f.Namespace, f.Name, f.CostCenter, f.Product)
	}
	gpuLabels := func(i, g int, f Fleet) string {
		return fmt.Sprintf("node=\"node-%d\",gpu=\"%d\",uuid=\"GPU-%d-%d\",product=%q,namespace=%q,pod=\"%s-w%d\",fleet=%q",
			i, g, i, g, f.Product, f.Namespace, f.Name, g, f.Name)
	}
	seconds := func(f Fleet) func(time.Time) float64 {
		return func(t time.Time) float64 { return float64(f.GPUs) * t.Sub(start).Seconds() }
	}
	cost := func(f Fleet) func(time.Time) float64 {
		return func(t time.Time) float64 { return float64(f.GPUs) * t.Sub(start).Hours() * f.Hourly }
	}
	constant := func(v float64) func(time.Time) float64 { return func(time.Time) float64 { return v } }
	forFleets := func(labels func(Fleet) string, value func(Fleet) func(time.Time) float64) func(func(string, func(time.Time) float64)) {
		return func(emit func(string, func(time.Time) float64)) {
			for _, f := range fs {
				emit(labels(f), value(f))
			}
		}
	}
	forGPUs := func(value func(Fleet) float64) func(func(string, func(time.Time) float64)) {
		return func(emit func(string, func(time.Time) float64)) {
			for i, f := range fs {
				for g := range f.GPUs {
					emit(gpuLabels(i, g, f), constant(value(f)))
				}
			}
		}
	}
	family("agentfleet_gpu_seconds", "counter", forFleets(fleetLabels, seconds), h.Interval)
	family("agentfleet_gpu_cost", "counter", forFleets(func(f Fleet) string { return fleetLabels(f) + `,currency="USD"` }, cost), h.Interval)
	family("agentfleet_gpu_unpriced_seconds", "counter", forFleets(fleetLabels, func(Fleet) func(time.Time) float64 { return constant(0) }), h.Interval)
	family("agentfleet_gpu_utilization_ratio", "gauge", forGPUs(func(f Fleet) float64 { return f.Utilization }), h.Interval)
	family("agentfleet_gpu_memory_total_bytes", "gauge", forGPUs(func(Fleet) float64 { return 85899345920 }), h.Interval)
	family("node_gpu_hourly_cost", "gauge", func(emit func(string, func(time.Time) float64)) {
		for i, f := range fs {
			emit(fmt.Sprintf("node=\"node-%d\",instance_type=\"p5.48xlarge\"", i), constant(f.Hourly*0.9))
		}
	}, h.Interval)
	if h.Recorded {
		// What the rules record: the counters as they are (one operator here), and each window's
		// utilization sums and counts.
		// Prometheus 2's ranges hold both ends (Prometheus 3's only the last): the report reads the
		// sums over the counts, so this only scales both.
		perWindow := float64(h.RecordEvery/h.Interval) + 1
		family("fleet:agentfleet_gpu_seconds_total:sum", "gauge", forFleets(fleetLabels, seconds), h.RecordEvery)
		family("fleet:agentfleet_gpu_cost_total:sum", "gauge", forFleets(func(f Fleet) string { return fleetLabels(f) + `,currency="USD"` }, cost), h.RecordEvery)
		family("fleet:agentfleet_gpu_unpriced_seconds_total:sum", "gauge", forFleets(fleetLabels, func(Fleet) func(time.Time) float64 { return constant(0) }), h.RecordEvery)
		nsFleet := func(f Fleet) string { return fmt.Sprintf("namespace=%q,fleet=%q", f.Namespace, f.Name) }
		family("fleet:agentfleet_gpu_utilization_ratio:sum_over_time5m", "gauge", forFleets(nsFleet, func(f Fleet) func(time.Time) float64 {
			return constant(f.Utilization * float64(f.GPUs) * perWindow)
		}), h.RecordEvery)
		family("fleet:agentfleet_gpu_utilization_ratio:count_over_time5m", "gauge", forFleets(nsFleet, func(f Fleet) func(time.Time) float64 {
			return constant(float64(f.GPUs) * perWindow)
		}), h.RecordEvery)
		family("node:agentfleet_gpu_product:group", "gauge", func(emit func(string, func(time.Time) float64)) {
			for i, f := range fs {
				emit(fmt.Sprintf("node=\"node-%d\",product=%q", i, f.Product), constant(1))
			}
		}, h.RecordEvery)
		family("node:node_gpu_hourly_cost:avg_over_time5m", "gauge", func(emit func(string, func(time.Time) float64)) {
			for i, f := range fs {
				emit(fmt.Sprintf("node=\"node-%d\"", i), constant(f.Hourly*0.9))
			}
		}, h.RecordEvery)
	}
	fmt.Fprintln(w, "# EOF")
	return series, samples, w.Flush()
}
