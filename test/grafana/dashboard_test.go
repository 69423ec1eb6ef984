package grafana

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	// The operator registers its metrics with controller-runtime's registry when it is loaded.
	_ "github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/gpu/agent"
)

const dashboardFile = "../../config/grafana/agentfleet.json"

// exported is what the operator's metrics endpoint and the GPU agent's serve: the metrics we
// export, and those of controller-runtime and client_golang the operator serves with them.
func exported(t *testing.T) Registry {
	t.Helper()
	gpuAgent := prometheus.NewRegistry()
	if err := gpuAgent.Register(agent.NewMetrics()); err != nil {
		t.Fatalf("registering the GPU agent's metrics: %v", err)
	}
	return Registries{
		Probe{Registerer: ctrlmetrics.Registry, Gatherer: ctrlmetrics.Registry},
		Probe{Registerer: gpuAgent, Gatherer: gpuAgent},
	}
}

func loadFile(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestDashboard checks config/grafana/agentfleet.json: Grafana's model decodes it strictly, its
// panels are well formed, and every query parses and selects only metrics we export.
func TestDashboard(t *testing.T) {
	d, errs := Check(loadFile(t), exported(t))
	for _, err := range errs {
		t.Error(err)
	}
	if d == nil {
		return
	}
	if got := *d.Model.Uid; got != "agentfleet" {
		t.Errorf("uid = %q, want agentfleet (the Ray dashboard and the CLI link to it)", got)
	}
	if got := *d.Model.Title; got != "AgentFleet" {
		t.Errorf("title = %q, want AgentFleet", got)
	}
	if len(d.Queries) == 0 {
		t.Error("no queries found: the checker checked nothing")
	}
}

// TestDashboardVariables: the filters the panels use are there, fed from our own metrics.
func TestDashboardVariables(t *testing.T) {
	d, _ := Load(loadFile(t))
	if d == nil {
		t.Fatal("the dashboard does not decode")
	}
	want := map[string]string{
		"datasource":  "datasource",
		"namespace":   "query agentfleet_workers",
		"fleet":       "query agentfleet_workers",
		"cost_center": "query agentfleet_gpu_seconds_total",
	}
	got := map[string]string{}
	for name, v := range d.Variables {
		got[name] = string(v.Type)
	}
	for _, q := range d.Queries {
		for _, vs := range q.Selectors() {
			if q.Variable != "" {
				got[q.Variable] += " " + MetricName(vs)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("template variables (-want +got):\n%s", diff)
	}
	for _, name := range []string{"namespace", "fleet", "cost_center"} {
		if v := d.Variables[name]; v.Multi == nil || !*v.Multi || v.IncludeAll == nil || !*v.IncludeAll {
			t.Errorf("variable %q: want multi-value with All", name)
		}
	}
}

// scoped lists the labels by which a metric's selectors must filter, for each metric the dashboard
// selects: those of the fleet, and the cost center where the metric has one. Metrics without
// namespace and fleet labels (the detection latency histogram, the price table) are listed with
// none; a metric missing here fails the test, so that a new panel's filters are decided on.
var scoped = map[string][]string{
	"agentfleet_workers":                   {"namespace", "fleet"},
	"agentfleet_worker_restarts_total":     {"namespace", "fleet"},
	"agentfleet_fleet_condition":           {"namespace", "fleet"},
	"agentfleet_detection_latency_seconds": nil,
	"agentfleet_gpus_allocated":            {"namespace", "fleet", "cost_center"},
	"agentfleet_gpu_seconds_total":         {"namespace", "fleet", "cost_center"},
	"agentfleet_gpu_cost_total":            {"namespace", "fleet", "cost_center"},
	"agentfleet_gpu_price_per_hour":        nil,
	"agentfleet_gpu_price_table_valid":     nil,
	"agentfleet_gpu_unpriced":              {"namespace", "fleet"},
	"agentfleet_gpu_utilization_ratio":     {"namespace", "fleet"},
	"agentfleet_gpu_memory_used_bytes":     {"namespace", "fleet"},
	"agentfleet_gpu_memory_total_bytes":    {"namespace", "fleet"},
	"agentfleet_gpu_temperature_celsius":   {"namespace", "fleet"},
	"agentfleet_gpu_power_watts":           {"namespace", "fleet"},
	"agentfleet_gpu_xid_errors_total":      {"namespace", "fleet"},
	"agentfleet_gpu_health":                {"namespace", "fleet"},
	"agentfleet_tasks_total":               {"namespace", "fleet"},
	"agentfleet_tokens_total":              {"namespace", "fleet"},
}

// TestPanelsFilterByVariables: every panel's selector filters by $namespace, $fleet and
// $cost_center where its metric has those labels, so that the dashboard shows what was picked.
func TestPanelsFilterByVariables(t *testing.T) {
	d, _ := Load(loadFile(t))
	if d == nil {
		t.Fatal("the dashboard does not decode")
	}
	for _, q := range d.Queries {
		if q.Variable != "" {
			continue // a variable filters by the variables before it only
		}
		for _, vs := range q.Selectors() {
			name := MetricName(vs)
			base := histogramBase(name)
			want, ok := scoped[base]
			if !ok {
				t.Errorf("%s: metric %q: decide which variables filter it (add it to scoped)", q.Where, name)
				continue
			}
			for _, label := range want {
				if !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
					return m.Name == label && m.Type == labels.MatchRegexp && m.Value == "var_"+label
				}) {
					t.Errorf("%s: %s does not filter by %s=~\"$%s\"", q.Where, vs, label, label)
				}
			}
		}
	}
}

func histogramBase(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if _, known := scoped[base]; known {
				return base
			}
		}
	}
	return name
}

// TestDashboardShowsWhatIssue11Asks: each thing the dashboard is for has a panel whose queries
// select its metric.
func TestDashboardShowsWhatIssue11Asks(t *testing.T) {
	d, _ := Load(loadFile(t))
	if d == nil {
		t.Fatal("the dashboard does not decode")
	}
	selected := map[string]bool{}
	for _, q := range d.Queries {
		if q.Variable != "" {
			continue
		}
		for _, vs := range q.Selectors() {
			selected[MetricName(vs)] = true
		}
	}
	for what, metric := range map[string]string{
		"workers desired/ready/updated": "agentfleet_workers",
		"restarts by reason":            "agentfleet_worker_restarts_total",
		"detection latency":             "agentfleet_detection_latency_seconds_bucket",
		"GPU allocation":                "agentfleet_gpus_allocated",
		"GPU utilization":               "agentfleet_gpu_utilization_ratio",
		"GPU-hours":                     "agentfleet_gpu_seconds_total",
		"cost":                          "agentfleet_gpu_cost_total",
		"unpriced GPUs":                 "agentfleet_gpu_unpriced",
		"fleet conditions":              "agentfleet_fleet_condition",
		"GPU health":                    "agentfleet_gpu_health",
	} {
		if !selected[metric] {
			t.Errorf("no panel shows %s (%s)", what, metric)
		}
	}
}
