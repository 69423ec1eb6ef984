package cost

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/utils/ptr"
)

// fakeProm answers each query from a table keyed by the query's text, and records the queries.
type fakeProm struct {
	mu      sync.Mutex // the report's queries run at once
	instant map[string]model.Vector
	// daily answers the GPU daily queries (cost, GPU-seconds); ranges, keyed by query, the others.
	daily  model.Matrix
	ranges map[string]model.Matrix
	err    error
	asked  []string
	rng    v1.Range
}

func (f *fakeProm) Query(_ context.Context, q string, _ time.Time, _ ...v1.Option) (model.Value, v1.Warnings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, q)
	if f.err != nil {
		return nil, nil, f.err
	}
	return f.instant[q], nil, nil
}

func (f *fakeProm) QueryRange(_ context.Context, q string, r v1.Range, _ ...v1.Option) (model.Value, v1.Warnings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, q)
	f.rng = r
	if m, ok := f.ranges[q]; ok {
		return m, nil, nil
	}
	if strings.Contains(q, "agentfleet_gpu_") {
		return f.daily, nil, nil
	}
	return model.Matrix{}, nil, nil
}

func sample(v float64, labels ...string) *model.Sample {
	m := model.Metric{}
	for i := 0; i < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(v)}
}

func TestCompute(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	since := until.Add(-2 * day)
	q := func(format string) string { return fmt.Sprintf(format, "2d") }
	// Two fleets of team-a (cost center research), one of team-b (platform) on an unpriced product
	// and a priced one; GPU agent samples for the first and the third.
	prom := &fakeProm{
		instant: map[string]model.Vector{
			q(rawQueries.seconds): {
				sample(36000, "namespace", "team-a", "fleet", "coders", "cost_center", "research", "gpu_product", "NVIDIA-H100-80GB-HBM3"),
				sample(7200, "namespace", "team-a", "fleet", "reviewers", "cost_center", "research", "gpu_product", "NVIDIA-L4"),
				sample(3600, "namespace", "team-b", "fleet", "planners", "cost_center", "platform", "gpu_product", "NVIDIA-B300"),
				sample(3600, "namespace", "team-b", "fleet", "planners", "cost_center", "platform", "gpu_product", "NVIDIA-L4"),
			},
			q(rawQueries.cost): {
				sample(35, "namespace", "team-a", "fleet", "coders", "cost_center", "research", "gpu_product", "NVIDIA-H100-80GB-HBM3", "currency", "USD"),
				sample(1.4, "namespace", "team-a", "fleet", "reviewers", "cost_center", "research", "gpu_product", "NVIDIA-L4", "currency", "USD"),
				sample(0.7, "namespace", "team-b", "fleet", "planners", "cost_center", "platform", "gpu_product", "NVIDIA-L4", "currency", "USD"),
			},
			q(rawQueries.utilSum): {
				sample(40, "namespace", "team-a", "fleet", "coders"),
				sample(9, "namespace", "team-b", "fleet", "planners"),
				sample(5, "namespace", "team-c", "fleet", "unmetered"), // no GPU-seconds: not attributed
			},
			q(rawQueries.utilCount): {
				sample(100, "namespace", "team-a", "fleet", "coders"),
				sample(10, "namespace", "team-b", "fleet", "planners"),
				sample(10, "namespace", "team-c", "fleet", "unmetered"),
			},
		},
		daily: model.Matrix{
			{Metric: model.Metric{"namespace": "team-a", "fleet": "coders", "cost_center": "research"}, Values: []model.SamplePair{
				{Timestamp: model.TimeFromUnixNano(until.Truncate(day).UnixNano()), Value: 20},
				{Timestamp: model.TimeFromUnixNano(until.Truncate(day).Add(day).UnixNano()), Value: 15},
			}},
		},
	}
	d25, d26, d27 := until.Truncate(day).Add(-2*day), until.Truncate(day).Add(-day), until.Truncate(day)
	cases := map[string]struct {
		by   string
		want Report
	}{
		"by fleet": {by: ByFleet, want: Report{
			Rows: []Row{
				{Group: "team-a/coders", GPUHours: 10, Cost: 35, TotalCost: 35, Utilization: ptr.To(0.4), IdleCost: ptr.To(21.0)},
				{Group: "team-a/reviewers", GPUHours: 2, Cost: 1.4, TotalCost: 1.4},
				{Group: "team-b/planners", GPUHours: 2, Cost: 0.7, TotalCost: 0.7, UnpricedGPUHours: 1, Utilization: ptr.To(0.9), IdleCost: ptr.To(0.07)},
			},
			// team-a/reviewers' utilization is unknown: so is the total's.
			Total: Row{Group: "TOTAL", GPUHours: 14, Cost: 37.1, TotalCost: 37.1, UnpricedGPUHours: 1},
			Daily: []Series{
				{Group: "team-a/coders", Points: []Point{{Day: d25}, {Day: d26, Cost: 20}, {Day: d27, Cost: 15}}},
				{Group: "team-a/reviewers", Points: []Point{{Day: d25}, {Day: d26}, {Day: d27}}},
				{Group: "team-b/planners", Points: []Point{{Day: d25}, {Day: d26}, {Day: d27}}},
			},
		}},
		"by cost center": {by: ByCostCenter, want: Report{
			Rows: []Row{
				// team-a/reviewers has no GPU agent: research's utilization is unknown, not coders' alone.
				{Group: "research", GPUHours: 12, Cost: 36.4, TotalCost: 36.4},
				{Group: "platform", GPUHours: 2, Cost: 0.7, TotalCost: 0.7, UnpricedGPUHours: 1, Utilization: ptr.To(0.9), IdleCost: ptr.To(0.07)},
			},
			Total: Row{Group: "TOTAL", GPUHours: 14, Cost: 37.1, TotalCost: 37.1, UnpricedGPUHours: 1},
			Daily: []Series{
				{Group: "research", Points: []Point{{Day: d25}, {Day: d26, Cost: 20}, {Day: d27, Cost: 15}}},
				{Group: "platform", Points: []Point{{Day: d25}, {Day: d26}, {Day: d27}}},
			},
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Compute(context.Background(), prom, Options{Since: since, Until: until, By: tc.by})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Since, want.Until, want.By, want.Currency, want.UtilizationKnown = since, until, tc.by, "USD", true
			want.Unpriced = []Unpriced{{Product: "NVIDIA-B300", GPUHours: 1}}
			want.PricedBy = PricedByTable
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return fmt.Sprintf("%.6f", a) == fmt.Sprintf("%.6f", b) })); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
	if prom.rng.Start != d26 || prom.rng.End != d27.Add(day) || prom.rng.Step != day {
		t.Errorf("daily range %+v, want a point at the end of each UTC day from %s to %s", prom.rng, d26, d27.Add(day))
	}
}

func TestComputeErrors(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	usd := func(c string) model.Vector {
		return model.Vector{sample(1, "namespace", "a", "fleet", "b", "cost_center", "", "gpu_product", "NVIDIA-L4", "currency", c)}
	}
	cases := map[string]struct {
		prom    *fakeProm
		o       Options
		wantErr string
	}{
		"an unknown group": {&fakeProm{}, Options{Since: until.Add(-day), Until: until, By: "team"}, `unknown group "team": one of namespace, fleet, cost_center`},
		"an empty range":   {&fakeProm{}, Options{Since: until, Until: until, By: ByFleet}, "empty range: 2026-11-27T12:00:00Z is not before 2026-11-27T12:00:00Z"},
		"no usage in range": {&fakeProm{instant: map[string]model.Vector{}}, Options{Since: until.Add(-day), Until: until, By: ByFleet},
			"no GPU usage, tokens or tasks recorded from 2026-11-26T12:00:00Z to 2026-11-27T12:00:00Z: no agentfleet_gpu_seconds_total, agentfleet_tokens_total or agentfleet_tasks_total series"},
		"Prometheus fails": {&fakeProm{err: errors.New("connection refused")}, Options{Since: until.Add(-day), Until: until, By: ByFleet},
			": connection refused"},
		"OpenCost asked for, none in range": {&fakeProm{instant: map[string]model.Vector{
			fmt.Sprintf(rawQueries.seconds, "1d"): {sample(1, "namespace", "a", "fleet", "b")},
		}}, Options{Since: until.Add(-day), Until: until, By: ByFleet, Prices: PricedByOpenCost}, "no OpenCost node_gpu_hourly_cost in the range"},
		"OpenCost for nodes no GPU agent reports": {&fakeProm{instant: map[string]model.Vector{
			fmt.Sprintf(rawQueries.seconds, "1d"):         {sample(1, "namespace", "a", "fleet", "b")},
			fmt.Sprintf(rawQueries.openCostPresent, "1d"): {sample(3)},
		}}, Options{Since: until.Add(-day), Until: until, By: ByFleet, Prices: PricedByOpenCost}, "names no node the GPU agents report"},
		"an unknown price source": {&fakeProm{}, Options{Since: until.Add(-day), Until: until, By: ByFleet, Prices: "kubecost"}, `unknown price source "kubecost": one of table, opencost`},
		"two currencies": {&fakeProm{instant: map[string]model.Vector{
			fmt.Sprintf(rawQueries.seconds, "1d"): {sample(1, "namespace", "a", "fleet", "b")},
			fmt.Sprintf(rawQueries.cost, "1d"):    append(usd("USD"), usd("EUR")...),
		}}, Options{Since: until.Add(-day), Until: until, By: ByFleet}, "the costs are in several currencies (EUR, USD)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Compute(context.Background(), tc.prom, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// When the GPU agent reports every fleet, the total has a utilization and an idle cost: the samples'
// mean, and the sum of the groups' idle costs.
func TestAssembleTotalUtilization(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	r, err := assemble(Options{Since: until.Add(-time.Hour), Until: until, By: ByFleet}, results{
		seconds: model.Vector{
			sample(3600, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4"),
			sample(7200, "namespace", "b", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4"),
		},
		costs: model.Vector{
			sample(1, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4", "currency", "USD"),
			sample(2, "namespace", "b", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4", "currency", "USD"),
		},
		utilSum:   model.Vector{sample(5, "namespace", "a", "fleet", "x"), sample(10, "namespace", "b", "fleet", "y")},
		utilCount: model.Vector{sample(10, "namespace", "a", "fleet", "x"), sample(40, "namespace", "b", "fleet", "y")},
	})
	if err != nil {
		t.Fatal(err)
	}
	// x: 50% of 1 USD idle; y: 25% of 2 USD; all samples: 15/50.
	want := Row{Group: "TOTAL", GPUHours: 3, Cost: 3, TotalCost: 3, Utilization: ptr.To(0.3), IdleCost: ptr.To(0.5 + 1.5)}
	if diff := cmp.Diff(want, r.Total); diff != "" {
		t.Errorf("total (-want +got):\n%s", diff)
	}
}

// With OpenCost's node_gpu_hourly_cost in the Prometheus, the GPU-seconds are priced at its mean
// price per product (NVML's product name spelt as the node label), not by the operator's table; a
// product OpenCost does not price is unpriced.
func TestComputeOpenCost(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	since := until.Add(-day)
	q := func(format string) string { return fmt.Sprintf(format, "1d") }
	prom := &fakeProm{
		instant: map[string]model.Vector{
			q(rawQueries.seconds): {
				sample(7200, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-H100-80GB-HBM3"),
				sample(3600, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4"),
			},
			// The table's cost is there too, and must not be used.
			q(rawQueries.cost):                          {sample(999, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-H100-80GB-HBM3", "currency", "USD")},
			q(rawQueries.openCostPresent):               {sample(2)},
			fmt.Sprintf(rawQueries.openCostPrice, "1d"): {sample(2.25, "product", "NVIDIA H100 80GB HBM3")},
		},
		daily: model.Matrix{{Metric: model.Metric{"namespace": "a", "fleet": "x", "cost_center": "", "gpu_product": "NVIDIA-H100-80GB-HBM3"},
			Values: []model.SamplePair{{Timestamp: model.TimeFromUnixNano(until.Truncate(day).UnixNano()), Value: 3600}, {Timestamp: model.TimeFromUnixNano(until.Truncate(day).Add(day).UnixNano()), Value: 3600}}}},
	}
	r, err := Compute(context.Background(), prom, Options{Since: since, Until: until, By: ByFleet})
	if err != nil {
		t.Fatal(err)
	}
	if r.PricedBy != PricedByOpenCost || r.Currency != "USD" {
		t.Errorf("priced by %q in %q, want opencost in USD", r.PricedBy, r.Currency)
	}
	wantRows := []Row{{Group: "a/x", GPUHours: 2, Cost: 4.5, TotalCost: 4.5}, {Group: "a/y", GPUHours: 1, UnpricedGPUHours: 1}}
	if diff := cmp.Diff(wantRows, r.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	d26, d27 := until.Truncate(day).Add(-day), until.Truncate(day)
	wantDaily := []Series{{Group: "a/x", Points: []Point{{Day: d26, Cost: 2.25}, {Day: d27, Cost: 2.25}}}, {Group: "a/y", Points: []Point{{Day: d26}, {Day: d27}}}}
	if diff := cmp.Diff(wantDaily, r.Daily); diff != "" {
		t.Errorf("daily (-want +got):\n%s", diff)
	}
	// Asked for the table, the table it is.
	r, err = Compute(context.Background(), prom, Options{Since: since, Until: until, By: ByFleet, Prices: PricedByTable})
	if err != nil {
		t.Fatal(err)
	}
	if r.PricedBy != PricedByTable || r.Rows[0].Cost != 999 {
		t.Errorf("--prices table: priced by %q, cost %v; want the table's 999", r.PricedBy, r.Rows[0].Cost)
	}
}

// A report priced by OpenCost says so, in every format people read.
func TestRenderSaysOpenCost(t *testing.T) {
	r := Report{By: ByFleet, Currency: "USD", PricedBy: PricedByOpenCost, UtilizationKnown: true, Total: Row{Group: "TOTAL"}}
	for format, want := range map[string]string{"table": openCostNote, "html": "node_gpu_hourly_cost", "json": `"priced_by": "opencost"`} {
		var b strings.Builder
		if err := Render(&b, r, format); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s report does not say %q:\n%s", format, want, b.String())
		}
	}
}

// The operator's unpriced GPU-seconds say which part of a series had no price: a product priced
// for part of the range is unpriced for the rest, not priced at 0; a series that was always priced
// is not unpriced even where its cost is 0 (a free GPU).
func TestComputeUnpricedSeconds(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	q := func(format string) string { return fmt.Sprintf(format, "1d") }
	prom := &fakeProm{instant: map[string]model.Vector{
		q(rawQueries.seconds): {
			sample(7200, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-B300"),
			sample(3600, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "Tesla-T4"),
		},
		q(rawQueries.cost): {
			sample(9, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-B300", "currency", "USD"),
			sample(0, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "Tesla-T4", "currency", "USD"),
		},
		q(rawQueries.unpriced): {
			sample(3600, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-B300"),
			sample(0, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "Tesla-T4"),
		},
	}}
	r, err := Compute(context.Background(), prom, Options{Since: until.Add(-day), Until: until, By: ByFleet, Prices: PricedByTable})
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{{Group: "a/x", GPUHours: 2, Cost: 9, TotalCost: 9, UnpricedGPUHours: 1}, {Group: "a/y", GPUHours: 1}}
	if diff := cmp.Diff(want, r.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Unpriced{{Product: "NVIDIA-B300", GPUHours: 1}}, r.Unpriced); diff != "" {
		t.Errorf("unpriced (-want +got):\n%s", diff)
	}
}

// OpenCost prices what it can; the table prices the rest, and the report says both were used.
func TestComputeOpenCostAndTable(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	q := func(format string) string { return fmt.Sprintf(format, "1d") }
	prom := &fakeProm{instant: map[string]model.Vector{
		q(rawQueries.seconds): {
			sample(7200, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-H100-80GB-HBM3"),
			sample(3600, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4"),
		},
		q(rawQueries.cost): {
			sample(7, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-H100-80GB-HBM3", "currency", "USD"),
			sample(0.7, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4", "currency", "USD"),
		},
		q(rawQueries.unpriced): {
			sample(0, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-H100-80GB-HBM3"),
			sample(0, "namespace", "a", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4"),
		},
		fmt.Sprintf(rawQueries.openCostPrice, "1d"): {sample(2.25, "product", "NVIDIA H100 80GB HBM3")},
	}}
	r, err := Compute(context.Background(), prom, Options{Since: until.Add(-day), Until: until, By: ByFleet})
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{{Group: "a/x", GPUHours: 2, Cost: 4.5, TotalCost: 4.5}, {Group: "a/y", GPUHours: 1, Cost: 0.7, TotalCost: 0.7}}
	if diff := cmp.Diff(want, r.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if r.PricedBy != PricedByOpenCostAndTable {
		t.Errorf("priced by %q, want %q", r.PricedBy, PricedByOpenCostAndTable)
	}
}

// A recorded report over a range the recording rules did not cover from its start is refused: the
// GPU-seconds' rules, or the tokens' (a rules file from before them); covered, it reads the recorded
// series.
func TestComputeRecordedCoverage(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	o := Options{Since: until.Add(-day), Until: until, By: ByFleet, Prices: PricedByTable, Recorded: true}
	const (
		rawGPU      = `count(last_over_time(agentfleet_gpu_seconds_total[10m]))`
		recGPU      = `count(last_over_time(fleet:agentfleet_gpu_seconds_total:sum[10m]))`
		rawTokens   = `count(last_over_time(agentfleet_tokens_total[10m]))`
		recTokens   = `count(last_over_time(fleet:agentfleet_tokens_total:sum[10m]))`
		startOfThem = "by 2026-11-26T12:00:00Z, the start of the range"
	)
	cases := map[string]struct {
		coverage map[string]model.Vector
		wantErr  string
	}{
		"GPU-seconds scraped, not recorded": {map[string]model.Vector{rawGPU: {sample(3)}},
			"the recording rules had not recorded fleet:agentfleet_gpu_seconds_total:sum " + startOfThem},
		"tokens scraped, not recorded": {map[string]model.Vector{rawGPU: {sample(3)}, recGPU: {sample(3)}, rawTokens: {sample(2)}},
			"the recording rules had not recorded fleet:agentfleet_tokens_total:sum " + startOfThem},
		"both recorded":                {map[string]model.Vector{rawGPU: {sample(3)}, recGPU: {sample(3)}, rawTokens: {sample(2)}, recTokens: {sample(2)}}, ""},
		"nothing scraped at the start": {map[string]model.Vector{}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			prom := &fakeProm{instant: map[string]model.Vector{
				fmt.Sprintf(recordedQueries.seconds, "1d"): {sample(3600, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4")},
				fmt.Sprintf(recordedQueries.tasks, "1d"):   {sample(4, "namespace", "a", "fleet", "x", "outcome", "succeeded")},
			}}
			maps.Copy(prom.instant, tc.coverage)
			r, err := Compute(context.Background(), prom, o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Rows) != 1 || r.Rows[0].GPUHours != 1 || r.Rows[0].TasksSucceeded != 4 {
				t.Errorf("rows %+v, want a/x with 1 GPU-hour and 4 succeeded tasks, read from the recorded series", r.Rows)
			}
		})
	}
}

// The ledger: tokens, their cost and the tasks per group, beside the GPUs, and what a succeeded task
// cost. Fleets on a hosted model hold no GPU and are rows all the same; token and task series have
// no cost center, so by cost center a fleet's go where its agentfleet_fleet_info series was longest
// (team-a/chat moved from research to platform), or to "" without one (team-b/flaky). increase()
// extrapolates: counts are rounded to whole tokens and tasks per group.
func TestComputeLedger(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	since := until.Add(-2 * day)
	q := func(format string) string { return fmt.Sprintf(format, "2d") }
	d25, d26, d27 := until.Truncate(day).Add(-2*day), until.Truncate(day).Add(-day), until.Truncate(day)
	// endOf is when a daily query's point for day d is evaluated: at its end.
	endOf := func(d time.Time) model.Time { return model.TimeFromUnixNano(d.Add(day).UnixNano()) }
	tokens := func(v float64, ns, fleet, mdl, dir string) *model.Sample {
		return sample(v, "namespace", ns, "fleet", fleet, "model", mdl, "direction", dir)
	}
	tokenCost := func(v float64, ns, fleet, mdl, dir string) *model.Sample {
		return sample(v, "namespace", ns, "fleet", fleet, "model", mdl, "direction", dir, "currency", "USD")
	}
	tasks := func(v float64, ns, fleet, outcome string) *model.Sample {
		return sample(v, "namespace", ns, "fleet", fleet, "outcome", outcome)
	}
	byDay := func(ns, fleet string, values map[time.Time]float64) *model.SampleStream {
		s := &model.SampleStream{Metric: model.Metric{"namespace": model.LabelValue(ns), "fleet": model.LabelValue(fleet)}}
		for _, d := range []time.Time{d25, d26, d27} {
			if v, ok := values[d]; ok {
				s.Values = append(s.Values, model.SamplePair{Timestamp: endOf(d), Value: model.SampleValue(v)})
			}
		}
		return s
	}
	prom := &fakeProm{
		instant: map[string]model.Vector{
			q(rawQueries.seconds):  {sample(36000, "namespace", "team-a", "fleet", "coders", "cost_center", "research", "gpu_product", "NVIDIA-H100-80GB-HBM3")},
			q(rawQueries.cost):     {sample(35, "namespace", "team-a", "fleet", "coders", "cost_center", "research", "gpu_product", "NVIDIA-H100-80GB-HBM3", "currency", "USD")},
			q(rawQueries.unpriced): {sample(0, "namespace", "team-a", "fleet", "coders", "cost_center", "research", "gpu_product", "NVIDIA-H100-80GB-HBM3")},
			q(rawQueries.tokens): {
				tokens(1_000_000.4, "team-a", "coders", "claude-sonnet-4-5", "in"),
				tokens(200_000, "team-a", "coders", "claude-sonnet-4-5", "out"),
				tokens(2_000_000, "team-a", "chat", "claude-haiku-4-5", "in"),
				tokens(400_000, "team-a", "chat", "claude-haiku-4-5", "out"),
				tokens(5000, "team-a", "chat", "llama-local", "in"),
				tokens(1000, "team-a", "chat", "llama-local", "out"),
				tokens(100_000, "team-b", "flaky", "gpt-4o", "in"),
				tokens(10_000, "team-b", "flaky", "gpt-4o", "out"),
			},
			q(rawQueries.tokenCost): {
				tokenCost(3, "team-a", "coders", "claude-sonnet-4-5", "in"),
				tokenCost(3, "team-a", "coders", "claude-sonnet-4-5", "out"),
				tokenCost(2, "team-a", "chat", "claude-haiku-4-5", "in"),
				tokenCost(2, "team-a", "chat", "claude-haiku-4-5", "out"),
				tokenCost(0.25, "team-b", "flaky", "gpt-4o", "in"),
				tokenCost(0.1, "team-b", "flaky", "gpt-4o", "out"),
			},
			q(rawQueries.tokensUnpriced): {
				sample(5000, "namespace", "team-a", "fleet", "chat", "model", "llama-local", "direction", "in"),
				sample(1000, "namespace", "team-a", "fleet", "chat", "model", "llama-local", "direction", "out"),
			},
			q(rawQueries.tasks): {
				tasks(9.6, "team-a", "coders", "succeeded"),
				tasks(1, "team-a", "coders", "failed"),
				tasks(8, "team-a", "chat", "succeeded"),
				tasks(0, "team-a", "chat", "failed"),
				tasks(5, "team-b", "flaky", "failed"),
			},
			q(rawQueries.fleetInfo): {
				sample(400, "namespace", "team-a", "fleet", "coders", "cost_center", "research"),
				sample(100, "namespace", "team-a", "fleet", "chat", "cost_center", "research"),
				sample(300, "namespace", "team-a", "fleet", "chat", "cost_center", "platform"),
			},
		},
		daily: model.Matrix{{Metric: model.Metric{"namespace": "team-a", "fleet": "coders", "cost_center": "research", "gpu_product": "NVIDIA-H100-80GB-HBM3"},
			Values: []model.SamplePair{{Timestamp: endOf(d26), Value: 20}, {Timestamp: endOf(d27), Value: 15}}}},
		ranges: map[string]model.Matrix{
			rawQueries.dailyTokenCost: {byDay("team-a", "coders", map[time.Time]float64{d26: 2, d27: 4}), byDay("team-a", "chat", map[time.Time]float64{d25: 1, d27: 3})},
			rawQueries.dailySucceeded: {byDay("team-a", "coders", map[time.Time]float64{d26: 5, d27: 5}), byDay("team-a", "chat", map[time.Time]float64{d25: 0, d27: 8})},
		},
	}
	coders := Row{GPUHours: 10, Cost: 35, TokensIn: 1_000_000, TokensOut: 200_000, TokenCost: 6, TotalCost: 41,
		TasksSucceeded: 10, TasksFailed: 1, CostPerSucceededTask: ptr.To(4.1)}
	// Some of chat's tokens are unpriced: its cost per task would be understated, so it has none.
	chat := Row{TokensIn: 2_005_000, TokensOut: 401_000, UnpricedTokens: 6000, TokenCost: 4, TotalCost: 4,
		TasksSucceeded: 8}
	flaky := Row{TokensIn: 100_000, TokensOut: 10_000, TokenCost: 0.35, TotalCost: 0.35, TasksFailed: 5}
	named := func(g string, r Row) Row { r.Group = g; return r }
	// A day with cost and no succeeded task has no cost per task (team-a/chat on the 25th), not 0.
	codersDays := []Point{{Day: d25}, {Day: d26, Cost: 20, TokenCost: 2, TasksSucceeded: 5, CostPerSucceededTask: ptr.To(4.4)},
		{Day: d27, Cost: 15, TokenCost: 4, TasksSucceeded: 5, CostPerSucceededTask: ptr.To(3.8)}}
	chatDays := []Point{{Day: d25, TokenCost: 1}, {Day: d26}, {Day: d27, TokenCost: 3, TasksSucceeded: 8, CostPerSucceededTask: ptr.To(0.375)}}
	noDays := []Point{{Day: d25}, {Day: d26}, {Day: d27}}
	total := Row{Group: "TOTAL", GPUHours: 10, Cost: 35, TokensIn: 3_105_000, TokensOut: 611_000, UnpricedTokens: 6000, TokenCost: 10.35,
		TotalCost: 45.35, TasksSucceeded: 18, TasksFailed: 6}
	cases := map[string]struct {
		by    string
		rows  []Row
		daily []Series
	}{
		"by fleet": {by: ByFleet,
			rows: []Row{named("team-a/coders", coders), named("team-a/chat", chat), named("team-b/flaky", flaky)},
			daily: []Series{{Group: "team-a/coders", Points: codersDays}, {Group: "team-a/chat", Points: chatDays},
				{Group: "team-b/flaky", Points: noDays}},
		},
		"by namespace": {by: ByNamespace,
			rows: []Row{
				{Group: "team-a", GPUHours: 10, Cost: 35, TokensIn: 3_005_000, TokensOut: 601_000, UnpricedTokens: 6000, TokenCost: 10, TotalCost: 45,
					TasksSucceeded: 18, TasksFailed: 1},
				named("team-b", flaky),
			},
			daily: []Series{
				{Group: "team-a", Points: []Point{{Day: d25, TokenCost: 1}, {Day: d26, Cost: 20, TokenCost: 2, TasksSucceeded: 5, CostPerSucceededTask: ptr.To(4.4)},
					{Day: d27, Cost: 15, TokenCost: 7, TasksSucceeded: 13, CostPerSucceededTask: ptr.To(22.0 / 13)}}},
				{Group: "team-b", Points: noDays},
			},
		},
		"by cost center": {by: ByCostCenter,
			rows:  []Row{named("research", coders), named("platform", chat), named("", flaky)},
			daily: []Series{{Group: "research", Points: codersDays}, {Group: "platform", Points: chatDays}, {Group: "", Points: noDays}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Compute(context.Background(), prom, Options{Since: since, Until: until, By: tc.by, Prices: PricedByTable})
			if err != nil {
				t.Fatal(err)
			}
			want := Report{Since: since, Until: until, By: tc.by, Currency: "USD", PricedBy: PricedByTable,
				Rows: tc.rows, Total: total, Daily: tc.daily,
				UnpricedModels: []UnpricedModel{{Model: "llama-local", TokensIn: 5000, TokensOut: 1000}}}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return fmt.Sprintf("%.6f", a) == fmt.Sprintf("%.6f", b) })); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
}

// A range with tokens and tasks and no GPU at all is a report, not "no data".
func TestComputeWithoutGPUs(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	q := func(format string) string { return fmt.Sprintf(format, "1d") }
	prom := &fakeProm{instant: map[string]model.Vector{
		q(rawQueries.tasks):     {sample(4, "namespace", "a", "fleet", "x", "outcome", "succeeded")},
		q(rawQueries.tokenCost): {sample(2, "namespace", "a", "fleet", "x", "model", "gpt-4o", "direction", "in", "currency", "EUR")},
	}}
	r, err := Compute(context.Background(), prom, Options{Since: until.Add(-day), Until: until, By: ByFleet})
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{{Group: "a/x", TokenCost: 2, TotalCost: 2, TasksSucceeded: 4, CostPerSucceededTask: ptr.To(0.5)}}
	if diff := cmp.Diff(want, r.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if r.Currency != "EUR" || r.UtilizationKnown {
		t.Errorf("currency %q, utilization known %v; want EUR (the tokens'), unknown", r.Currency, r.UtilizationKnown)
	}
}

// Token costs are in the operator's table's currency: GPU costs in another (OpenCost's) cannot be
// added to them.
func TestComputeTokenCurrency(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	q := func(format string) string { return fmt.Sprintf(format, "1d") }
	gpu := sample(3600, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4")
	cases := map[string]struct {
		instant map[string]model.Vector
		wantErr string
	}{
		"OpenCost's USD, the table's EUR": {map[string]model.Vector{
			q(rawQueries.seconds):       {gpu},
			q(rawQueries.openCostPrice): {sample(1, "product", "NVIDIA L4")},
			q(rawQueries.tokenCost):     {sample(2, "namespace", "a", "fleet", "x", "model", "m", "direction", "in", "currency", "EUR")},
		}, "the GPU costs are in USD and the token costs in EUR"},
		"token costs in two currencies": {map[string]model.Vector{
			q(rawQueries.seconds): {gpu},
			q(rawQueries.tokenCost): {
				sample(2, "namespace", "a", "fleet", "x", "model", "m", "direction", "in", "currency", "EUR"),
				sample(2, "namespace", "a", "fleet", "x", "model", "m", "direction", "out", "currency", "USD"),
			},
		}, "the costs are in several currencies (EUR, USD)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Compute(context.Background(), &fakeProm{instant: tc.instant}, Options{Since: until.Add(-day), Until: until, By: ByFleet})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
