package fleet

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/agentfleet/agentfleet/internal/cost"
)

// sample is one series of the meter as a line: name{labels} value.
func samples(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	var out []string
	for _, mf := range gather(t, c) {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, mf.GetName()+"{"+strings.Join(labels, ",")+"} "+value(m))
		}
	}
	sort.Strings(out)
	return out
}

func value(m *dto.Metric) string {
	switch {
	case m.Counter != nil:
		return formatFloat(m.Counter.GetValue())
	case m.Gauge != nil:
		return formatFloat(m.Gauge.GetValue())
	}
	return "?"
}

// sortLabels writes a sample line's labels in the order Gather gives them (by name), so that the
// tables can list them in the order that reads best.
func sortLabels(line string) string {
	open, closing := strings.Index(line, "{"), strings.Index(line, "}")
	labels := strings.Split(line[open+1:closing], ",")
	if labels[0] == "" {
		return line
	}
	sort.Strings(labels)
	return line[:open+1] + strings.Join(labels, ",") + line[closing:]
}

func sortedLines(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = sortLabels(l)
	}
	sort.Strings(out)
	return out
}

func formatFloat(v float64) string { return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64) }

func TestGPUMeter(t *testing.T) {
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	prices, err := cost.ParsePrices([]byte("currency: EUR\ngpuHourly: {NVIDIA-H100-80GB-HBM3: \"3.60\", NVIDIA-L4: \"0.72\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	dearer, err := cost.ParsePrices([]byte("currency: EUR\ngpuHourly: {NVIDIA-H100-80GB-HBM3: \"7.20\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	withB300, err := cost.ParsePrices([]byte("currency: EUR\ngpuHourly: {NVIDIA-B300: \"9.00\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	agents := types.NamespacedName{Namespace: "team-a", Name: "agents"}
	other := types.NamespacedName{Namespace: "team-b", Name: "other"}
	type step struct {
		after      time.Duration // since the previous step
		do         func(m *gpuMeter)
		wantSeries []string // the meter's samples after the step (price and validity series, and unpriced seconds of 0, left out)
	}
	h100 := func(n int32) map[string]int32 { return map[string]int32{"NVIDIA-H100-80GB-HBM3": n} }
	cases := map[string][]step{
		"GPU-seconds and cost accrue between observations and up to a scrape, without changing the totals": {
			{0, func(m *gpuMeter) { m.observe(agents, "research", "", h100(2), prices, nil) }, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 0`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 0`,
			}},
			{30 * time.Minute, nil, []string{ // a scrape 30 min later: 2 GPUs × 1800 s, at 3.60 per GPU-hour
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 3.6`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 3600`,
			}},
			{30 * time.Minute, func(m *gpuMeter) { m.observe(agents, "research", "", h100(1), prices, nil) }, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 7.2`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 7200`,
			}},
			{time.Hour, func(m *gpuMeter) { m.observe(agents, "research", "", nil, prices, nil) }, []string{ // scaled to zero: the counters stay
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 10.8`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 10800`,
			}},
			{time.Hour, nil, []string{ // nothing held: nothing accrues
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 10.8`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 10800`,
			}},
		},
		"a price change applies from the observation that sees it": {
			{0, func(m *gpuMeter) { m.observe(agents, "", "", h100(1), prices, nil) }, nil},
			{time.Hour, func(m *gpuMeter) { m.observe(agents, "", "", h100(1), dearer, nil) }, nil},
			{time.Hour, nil, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 10.8`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3} 7200`,
			}},
		},
		"an unpriced product is counted in GPU-seconds, reported as unpriced, and has no cost": {
			{0, func(m *gpuMeter) {
				m.observe(agents, "", "", map[string]int32{"NVIDIA-B300": 4, "NVIDIA-L4": 1}, prices, nil)
			}, nil},
			{time.Hour, nil, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-L4,currency=EUR} 0.72`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-B300} 14400`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-L4} 3600`,
				`agentfleet_gpu_unpriced{namespace=team-a,fleet=agents,gpu_product=NVIDIA-B300} 4`,
				`agentfleet_gpu_unpriced_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-B300} 14400`,
			}},
		},
		"a product priced part of the time: its unpriced seconds are counted apart, never as cost 0": {
			{0, func(m *gpuMeter) { m.observe(agents, "", "", map[string]int32{"NVIDIA-B300": 1}, prices, nil) }, nil},
			{time.Hour, func(m *gpuMeter) { m.observe(agents, "", "", map[string]int32{"NVIDIA-B300": 1}, withB300, nil) }, nil},
			{time.Hour, nil, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-B300,currency=EUR} 9`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-B300} 7200`,
				`agentfleet_gpu_unpriced_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-B300} 3600`,
			}},
		},
		"a series unused for the retention goes; one in use stays however old": {
			{0, func(m *gpuMeter) {
				m.observe(agents, "research", "", h100(1), prices, nil)
				m.observe(other, "", "", h100(1), prices, nil)
			}, nil},
			{time.Hour, func(m *gpuMeter) { m.observe(agents, "platform", "", h100(1), prices, nil) }, nil},
			{seriesRetention, func(m *gpuMeter) { m.observe(agents, "platform", "", h100(1), prices, nil) }, []string{ // research's last use: 15 min ago
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=platform,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 0.9`,
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 3.6`,
				`agentfleet_gpu_cost_total{namespace=team-b,fleet=other,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 4.5`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=platform,gpu_product=NVIDIA-H100-80GB-HBM3} 900`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 3600`,
				`agentfleet_gpu_seconds_total{namespace=team-b,fleet=other,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3} 4500`,
			}},
			{time.Minute, func(m *gpuMeter) { m.observe(agents, "platform", "", h100(1), prices, nil) }, []string{ // past the retention: gone
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=platform,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 0.96`,
				`agentfleet_gpu_cost_total{namespace=team-b,fleet=other,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 4.56`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=platform,gpu_product=NVIDIA-H100-80GB-HBM3} 960`,
				`agentfleet_gpu_seconds_total{namespace=team-b,fleet=other,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3} 4560`,
			}},
		},
		"a new cost center starts a new series; the old one keeps its total": {
			{0, func(m *gpuMeter) { m.observe(agents, "research", "", h100(1), prices, nil) }, nil},
			{time.Hour, func(m *gpuMeter) { m.observe(agents, "platform", "", h100(1), prices, nil) }, nil},
			{time.Hour, nil, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=platform,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 3.6`,
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 3.6`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=platform,gpu_product=NVIDIA-H100-80GB-HBM3} 3600`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 3600`,
			}},
		},
		"fleets are metered apart; a deleted fleet stops accruing and keeps its total": {
			{0, func(m *gpuMeter) {
				m.observe(agents, "", "", h100(1), prices, nil)
				m.observe(other, "", "", h100(3), prices, nil)
			}, nil},
			{time.Hour, func(m *gpuMeter) { m.forget(other) }, nil},
			{time.Hour, nil, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 7.2`,
				`agentfleet_gpu_cost_total{namespace=team-b,fleet=other,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 10.8`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3} 7200`,
				`agentfleet_gpu_seconds_total{namespace=team-b,fleet=other,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3} 10800`,
			}},
		},
		"a declared product's series exist at 0 before any GPU is held, so that Prometheus sees the counter start": {
			{0, func(m *gpuMeter) { m.observe(agents, "research", "NVIDIA-H100-80GB-HBM3", nil, prices, nil) }, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 0`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 0`,
			}},
			{time.Minute, func(m *gpuMeter) { m.observe(agents, "research", "NVIDIA-H100-80GB-HBM3", h100(1), prices, nil) }, nil},
			{time.Hour, nil, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 3.6`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=research,gpu_product=NVIDIA-H100-80GB-HBM3} 3600`,
			}},
		},
		// The real clock's readings carry Go's monotonic clock, so time.Sub never goes back there; a
		// wall clock set back must still not make a counter negative.
		"a clock set back before the last observation accrues nothing": {
			{0, func(m *gpuMeter) { m.observe(agents, "", "", h100(1), prices, nil) }, nil},
			{-30 * time.Minute, func(m *gpuMeter) { m.observe(agents, "", "", h100(1), prices, nil) }, []string{
				`agentfleet_gpu_cost_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3,currency=EUR} 0`,
				`agentfleet_gpu_seconds_total{namespace=team-a,fleet=agents,cost_center=,gpu_product=NVIDIA-H100-80GB-HBM3} 0`,
			}},
		},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakePassiveClock(start)
			m := newGPUMeter(clk, nil)
			for i, st := range steps {
				clk.SetTime(clk.Now().Add(st.after))
				if st.do != nil {
					st.do(m)
				}
				if st.wantSeries == nil {
					continue
				}
				var got []string
				for _, s := range samples(t, m) {
					zeroUnpriced := strings.HasPrefix(s, "agentfleet_gpu_unpriced_seconds_total") && strings.HasSuffix(s, "} 0")
					if !strings.HasPrefix(s, "agentfleet_gpu_price") && !zeroUnpriced {
						got = append(got, s)
					}
				}
				if diff := cmp.Diff(sortedLines(st.wantSeries), got); diff != "" {
					t.Errorf("step %d: series (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

// The price table in force is exported, and so is whether the configured one could be read, once it
// was read: a replica that is not the leader, or a leader before its first reconcile, says nothing.
func TestGPUMeterPriceSeries(t *testing.T) {
	m := newGPUMeter(clocktesting.NewFakePassiveClock(time.Unix(0, 0)), nil)
	if got := samples(t, m); len(got) != 0 {
		t.Errorf("before any price table was read: %v, want no series", got)
	}
	prices, err := cost.ParsePrices([]byte("currency: USD\ngpuHourly: {NVIDIA-L4: \"0.70\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	m.observe(types.NamespacedName{Namespace: "a", Name: "b"}, "", "", nil, prices, context.DeadlineExceeded)
	want := []string{
		`agentfleet_gpu_price_per_hour{gpu_product=NVIDIA-L4,currency=USD} 0.7`,
		`agentfleet_gpu_price_table_valid{} 0`,
	}
	if diff := cmp.Diff(sortedLines(want), samples(t, m)); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
}

func TestConfigMapPrices(t *testing.T) {
	key := types.NamespacedName{Namespace: "agentfleet-system", Name: "agentfleet-gpu-prices"}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Data: map[string]string{cost.PricesKey: "currency: USD\ngpuHourly: {NVIDIA-L4: \"0.70\"}\n"}}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	ctx := context.Background()
	src := &ConfigMapPrices{Key: key, Metadata: c, APIReader: c}
	hourly := func() (float64, bool, error) {
		p, err := src.Prices(ctx)
		v, ok := p.GPUHour("NVIDIA-L4")
		return v, ok, err
	}

	if _, ok, err := hourly(); ok || err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("no ConfigMap: priced %v, error %v; want unpriced and an error saying it does not exist", ok, err)
	}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := hourly(); !ok || v != 0.7 || err != nil {
		t.Errorf("got %v %v %v, want 0.7 from the ConfigMap", v, ok, err)
	}
	cm.Data[cost.PricesKey] = "currency: USD\ngpuHourly: {NVIDIA-L4: cheap}\n"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := hourly(); !ok || v != 0.7 || err == nil || !strings.Contains(err.Error(), `gpuHourly[NVIDIA-L4] = "cheap"`) {
		t.Errorf("invalid table: got %v %v %v; want the last valid price 0.7 and an error naming the bad price", v, ok, err)
	}
	cm.Data = map[string]string{"prices.yml": "currency: USD\n"}
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hourly(); err == nil || !strings.Contains(err.Error(), "no key prices.yaml") {
		t.Errorf("misnamed key: error %v, want one naming the key prices.yaml", err)
	}
	cm.Data = map[string]string{cost.PricesKey: "currency: USD\ngpuHourly: {NVIDIA-L4: \"0.80\"}\n"}
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if v, _, err := hourly(); v != 0.8 || err != nil {
		t.Errorf("fixed table: got %v %v, want 0.8", v, err)
	}
}
