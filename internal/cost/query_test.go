package cost

import (
	"context"
	"errors"
	"fmt"
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
	daily   model.Matrix
	err     error
	asked   []string
	rng     v1.Range
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
	return f.daily, nil, nil
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
				{Group: "team-a/coders", GPUHours: 10, Cost: 35, Utilization: ptr.To(0.4), IdleCost: ptr.To(21.0)},
				{Group: "team-a/reviewers", GPUHours: 2, Cost: 1.4},
				{Group: "team-b/planners", GPUHours: 2, Cost: 0.7, UnpricedGPUHours: 1, Utilization: ptr.To(0.9), IdleCost: ptr.To(0.07)},
			},
			// team-a/reviewers' utilization is unknown: so is the total's.
			Total: Row{Group: "TOTAL", GPUHours: 14, Cost: 37.1, UnpricedGPUHours: 1},
			Daily: []Series{
				{Group: "team-a/coders", Points: []Point{{d25, 0}, {d26, 20}, {d27, 15}}},
				{Group: "team-a/reviewers", Points: []Point{{d25, 0}, {d26, 0}, {d27, 0}}},
				{Group: "team-b/planners", Points: []Point{{d25, 0}, {d26, 0}, {d27, 0}}},
			},
		}},
		"by cost center": {by: ByCostCenter, want: Report{
			Rows: []Row{
				// team-a/reviewers has no GPU agent: research's utilization is unknown, not coders' alone.
				{Group: "research", GPUHours: 12, Cost: 36.4},
				{Group: "platform", GPUHours: 2, Cost: 0.7, UnpricedGPUHours: 1, Utilization: ptr.To(0.9), IdleCost: ptr.To(0.07)},
			},
			Total: Row{Group: "TOTAL", GPUHours: 14, Cost: 37.1, UnpricedGPUHours: 1},
			Daily: []Series{
				{Group: "research", Points: []Point{{d25, 0}, {d26, 20}, {d27, 15}}},
				{Group: "platform", Points: []Point{{d25, 0}, {d26, 0}, {d27, 0}}},
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
			"no GPU usage recorded from 2026-11-26T12:00:00Z to 2026-11-27T12:00:00Z: no agentfleet_gpu_seconds_total series"},
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
	r, err := assemble(Options{Since: until.Add(-time.Hour), Until: until, By: ByFleet},
		model.Vector{
			sample(3600, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4"),
			sample(7200, "namespace", "b", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4"),
		},
		model.Vector{
			sample(1, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4", "currency", "USD"),
			sample(2, "namespace", "b", "fleet", "y", "cost_center", "", "gpu_product", "NVIDIA-L4", "currency", "USD"),
		},
		nil,
		model.Vector{sample(5, "namespace", "a", "fleet", "x"), sample(10, "namespace", "b", "fleet", "y")},
		model.Vector{sample(10, "namespace", "a", "fleet", "x"), sample(40, "namespace", "b", "fleet", "y")},
		nil)
	if err != nil {
		t.Fatal(err)
	}
	// x: 50% of 1 USD idle; y: 25% of 2 USD; all samples: 15/50.
	want := Row{Group: "TOTAL", GPUHours: 3, Cost: 3, Utilization: ptr.To(0.3), IdleCost: ptr.To(0.5 + 1.5)}
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
	wantRows := []Row{{Group: "a/x", GPUHours: 2, Cost: 4.5}, {Group: "a/y", GPUHours: 1, UnpricedGPUHours: 1}}
	if diff := cmp.Diff(wantRows, r.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	d26, d27 := until.Truncate(day).Add(-day), until.Truncate(day)
	wantDaily := []Series{{Group: "a/x", Points: []Point{{d26, 2.25}, {d27, 2.25}}}, {Group: "a/y", Points: []Point{{d26, 0}, {d27, 0}}}}
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
	want := []Row{{Group: "a/x", GPUHours: 2, Cost: 9, UnpricedGPUHours: 1}, {Group: "a/y", GPUHours: 1}}
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
	want := []Row{{Group: "a/x", GPUHours: 2, Cost: 4.5}, {Group: "a/y", GPUHours: 1, Cost: 0.7}}
	if diff := cmp.Diff(want, r.Rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if r.PricedBy != PricedByOpenCostAndTable {
		t.Errorf("priced by %q, want %q", r.PricedBy, PricedByOpenCostAndTable)
	}
}

// A recorded report over a range the recording rules did not cover from its start is refused.
func TestComputeRecordedCoverage(t *testing.T) {
	until := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	o := Options{Since: until.Add(-day), Until: until, By: ByFleet, Prices: PricedByTable, Recorded: true}
	prom := &fakeProm{instant: map[string]model.Vector{
		`count(last_over_time(agentfleet_gpu_seconds_total[10m]))`: {sample(3)},
	}}
	if _, err := Compute(context.Background(), prom, o); err == nil || !strings.Contains(err.Error(), "the recording rules had not run by 2026-11-26T12:00:00Z") {
		t.Errorf("error %v, want one saying the rules had not run at the start", err)
	}
	prom.instant[`count(last_over_time(fleet:agentfleet_gpu_seconds_total:sum[10m]))`] = model.Vector{sample(3)}
	prom.instant[fmt.Sprintf(recordedQueries.seconds, "1d")] = model.Vector{sample(3600, "namespace", "a", "fleet", "x", "cost_center", "", "gpu_product", "NVIDIA-L4")}
	r, err := Compute(context.Background(), prom, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) != 1 || r.Rows[0].GPUHours != 1 {
		t.Errorf("rows %+v, want a/x with 1 GPU-hour, read from the recorded series", r.Rows)
	}
}
