package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/internal/cli"
	"github.com/agentfleet/agentfleet/internal/cost"
	"github.com/agentfleet/agentfleet/test/browser"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
	"github.com/agentfleet/agentfleet/test/fakegpu"
	"github.com/agentfleet/agentfleet/test/prometheus"
)

// podLifetimes measures, independently of the operator, how long each agent worker pod of a
// namespace held its GPUs: from the first poll that sees it Running to the last one that does.
type podLifetimes struct {
	mu    sync.Mutex
	first map[string]time.Time
	last  map[string]time.Time
	gpus  map[string]int32
	fleet map[string]string
}

func watchLifetimes(ctx context.Context, t *testing.T, namespace string) (*podLifetimes, func()) {
	l := &podLifetimes{first: map[string]time.Time{}, last: map[string]time.Time{}, gpus: map[string]int32{}, fleet: map[string]string{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var pods corev1.PodList
			err := k8s.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{v1alpha1.LabelRole: v1alpha1.RoleAgent})
			now := time.Now()
			if err == nil {
				l.mu.Lock()
				for i := range pods.Items {
					p := &pods.Items[i]
					if p.Status.Phase != corev1.PodRunning {
						continue
					}
					if _, ok := l.first[p.Name]; !ok {
						l.first[p.Name] = now
					}
					l.last[p.Name], l.gpus[p.Name], l.fleet[p.Name] = now, cost.PodGPUs(p), p.Labels[v1alpha1.LabelFleet]
				}
				l.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return l, func() { cancel(); <-done }
}

// gpuSeconds sums each fleet's pods' GPUs × the time they were seen Running.
func (l *podLifetimes) gpuSeconds() map[string]float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]float64{}
	for pod, first := range l.first {
		out[l.fleet[pod]] += float64(l.gpus[pod]) * l.last[pod].Sub(first).Seconds()
	}
	return out
}

// jsonReport is the part of `agentfleet cost --format json` the test reads.
type jsonReport struct {
	Currency string `json:"currency"`
	PricedBy string `json:"priced_by"`
	Rows     []struct {
		Group            string   `json:"group"`
		GPUHours         float64  `json:"gpu_hours"`
		Cost             float64  `json:"cost"`
		UnpricedGPUHours float64  `json:"unpriced_gpu_hours"`
		Utilization      *float64 `json:"utilization"`
		TokensIn         float64  `json:"tokens_in"`
		TokensOut        float64  `json:"tokens_out"`
		TokenCost        float64  `json:"token_cost"`
		TotalCost        float64  `json:"total_cost"`
		TasksSucceeded   float64  `json:"tasks_succeeded"`
		CostPerTask      *float64 `json:"cost_per_succeeded_task"`
	} `json:"rows"`
}

// openCostL4 is the price per GPU-hour the test's OpenCost gives the L4 node (the table says 0.70).
const openCostL4 = 0.85

// A real Prometheus scrapes the operator and a GPU agent (over a mock NVML) every second while two
// GPU fleets run, one on an L4 node with the agent, one on the H100 nodes without; one is scaled
// down half way, then both are suspended. `agentfleet cost` must report the GPU-hours the test
// measured itself from the pods' lifetimes (within 5%), priced by the default table, utilization
// where the agent reports it and unknown where it does not; the HTML report must draw its chart in a
// real Chromium. The L4 fleet's simulated agents (the Go client) finish tasks and report tokens: the
// report's cost per succeeded task must be the test's own (the measured GPU-seconds at the table's
// price, plus the tokens the agents reported at the model's, over the tasks they reported
// succeeded), within 5%.
func TestCostReport(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	started := time.Now()
	const l4 = "NVIDIA-L4"
	node := cluster.Node{Name: "l4-cost-0", GPUs: 4, GPUProduct: l4}
	if err := c.AddNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeleteNode(context.Background(), node.Name); err != nil {
			t.Error(err)
		}
	})
	if err := c.WaitForNodes(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	agent, err := fakegpu.Start(ctx, c, fakegpu.Options{Node: node.Name, GPUs: 4, Product: "NVIDIA L4"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := agent.Stop(); err != nil {
			t.Error(err)
		}
	})
	operator, err := url.Parse(c.MetricsURL("agentfleet-operator"))
	if err != nil {
		t.Fatal(err)
	}
	// OpenCost's price of the L4 node's GPUs, as its exporter would serve it.
	openCost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE node_gpu_hourly_cost gauge\nnode_gpu_hourly_cost{node=%q,instance_type=\"g6.xlarge\",region=\"local\"} %g\n", node.Name, openCostL4)
	}))
	t.Cleanup(openCost.Close)
	prom, err := prometheus.Start(ctx, prometheus.Options{Dir: t.TempDir(), Targets: map[string][]string{
		"agentfleet-operator": {operator.Host}, "agentfleet-gpu-agent": {agent.MetricsAddress}, "opencost": {strings.TrimPrefix(openCost.URL, "http://")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Stop)
	// Prometheus scrapes its targets a few seconds after it is ready (its discovery sends them in
	// batches): the fleets start once it scrapes both.
	pc, err := promapi.NewClient(promapi.Config{Address: prom.URL})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Prometheus scraping the operator, the GPU agent and OpenCost", func(ctx context.Context) (bool, string) {
		v, _, err := promv1.NewAPI(pc).Query(ctx, `sum(up)`, time.Now())
		if err != nil {
			return false, err.Error()
		}
		vec, _ := v.(model.Vector)
		return len(vec) == 1 && vec[0].Value == 3, fmt.Sprintf("sum(up) = %v", vec)
	})

	ns := namespace(t)
	lifetimes, stopWatching := watchLifetimes(ctx, t, ns)
	// A progress deadline long enough that agents which stopped are not replaced before the suspend.
	_, l4Key := newFleet(t, builder.MakeAgentFleet("l4-coders", ns).Replicas(2).GPUs(1, l4).CostCenter("research").Heartbeat(1, 60, 5, 1000))
	agents := simulateAgents(t, ns, "l4-coders", time.Second)
	agents.mu.Lock()
	agents.tasks = true
	agents.mu.Unlock()
	_, h100Key := newFleet(t, builder.MakeAgentFleet("h100-reviewers", ns).Replicas(3).GPUs(1, "NVIDIA-H100-80GB-HBM3").CostCenter("platform"))
	for _, key := range []client.ObjectKey{l4Key, h100Key} {
		waitCondition(t, key, v1alpha1.ConditionReady, "True", "", 90*time.Second)
	}
	time.Sleep(20 * time.Second) // GPU time to account for: the point of the test
	setFleet(t, h100Key, func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = ptr.To(int32(1)) })
	time.Sleep(20 * time.Second)
	agents.quitAll() // what each reported is written
	for _, key := range []client.ObjectKey{l4Key, h100Key} {
		setFleet(t, key, func(f *v1alpha1.AgentFleet) { f.Spec.Suspend = true })
	}
	reported := agents.reported
	if reported.Succeeded == 0 {
		t.Fatalf("the L4 fleet's agents reported %+v: no succeeded task to price", reported)
	}
	eventually(t, 60*time.Second, "every worker pod gone", func(ctx context.Context) (bool, string) {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelRole: v1alpha1.RoleAgent}); err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods", len(pods.Items))
	})
	stopWatching()
	measured := lifetimes.gpuSeconds()
	t.Logf("GPU-seconds measured from pod lifetimes: %v", measured)
	// The operator's counters stand still once it has seen the last pod go; once Prometheus has
	// scraped their final values, the report can be asked. Both are read again at each look.
	operatorSeconds := func(ctx context.Context) (float64, error) {
		families, err := scrape(ctx, c.MetricsURL("agentfleet-operator"))
		if err != nil {
			return 0, err
		}
		return counterSum(families, "agentfleet_gpu_seconds_total", map[string]string{"namespace": ns}), nil
	}
	eventually(t, 30*time.Second, "Prometheus holding the operator's final GPU-seconds", func(ctx context.Context) (bool, string) {
		want, err := operatorSeconds(ctx)
		if err != nil {
			return false, err.Error()
		}
		v, _, err := promv1.NewAPI(pc).Query(ctx, fmt.Sprintf(`sum(agentfleet_gpu_seconds_total{namespace=%q})`, ns), time.Now())
		if err != nil {
			return false, err.Error()
		}
		vec, _ := v.(model.Vector)
		return len(vec) == 1 && math.Abs(float64(vec[0].Value)-want) < 1e-6, fmt.Sprintf("Prometheus %v, operator %.4f", vec, want)
	})
	until := time.Now()

	since := fmt.Sprintf("%ds", int(until.Sub(started).Seconds())+60)
	costOf := func(by, format string, more ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args := append([]string{"cost", "--prometheus", prom.URL, "--since", since, "--until", until.UTC().Format(time.RFC3339), "--by", by, "--format", format}, more...)
		if code := cli.Main(ctx, args, cli.IO{Out: &out, Err: &errOut}); code != 0 {
			t.Fatalf("agentfleet %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
		}
		return out.String()
	}
	var r jsonReport
	if err := json.Unmarshal([]byte(costOf(cost.ByFleet, "json", "--price-source", "table")), &r); err != nil {
		t.Fatal(err)
	}
	prices := cost.DefaultPrices()
	want := map[string]struct {
		product     string
		utilization *float64
	}{
		ns + "/l4-coders":      {l4, ptr.To(0.30)}, // the mock NVML's 30%
		ns + "/h100-reviewers": {"NVIDIA-H100-80GB-HBM3", nil},
	}
	if r.Currency != "USD" {
		t.Errorf("currency %q, want USD", r.Currency)
	}
	seen := 0
	for _, row := range r.Rows {
		w, ok := want[row.Group]
		if !ok {
			continue // other tests' fleets
		}
		seen++
		fleet := strings.TrimPrefix(row.Group, ns+"/")
		gotSeconds, wantSeconds := row.GPUHours*3600, measured[fleet]
		t.Logf("%s: agentfleet cost says %.1f GPU-seconds, %.4f %s; the pods' lifetimes say %.1f GPU-seconds", row.Group, gotSeconds, row.Cost, r.Currency, wantSeconds)
		if wantSeconds < 60 || math.Abs(gotSeconds-wantSeconds) > 0.05*wantSeconds {
			t.Errorf("%s: %.1f GPU-seconds reported, %.1f measured from the pods: more than 5%% apart", row.Group, gotSeconds, wantSeconds)
		}
		hourly, _ := prices.GPUHour(w.product)
		if wantCost := row.GPUHours * hourly; math.Abs(row.Cost-wantCost) > 0.05*wantCost {
			t.Errorf("%s: cost %.4f, want %.4f (%.4f GPU-hours at %.2f)", row.Group, row.Cost, wantCost, row.GPUHours, hourly)
		}
		if fleet == "l4-coders" {
			in, out, _ := prices.TokenMillion("claude-sonnet-4-5")
			tokenCost := (float64(reported.TokensIn)*in + float64(reported.TokensOut)*out) / 1e6
			own := (wantSeconds/3600*hourly + tokenCost) / float64(reported.Succeeded)
			t.Logf("%s: %.0f tasks succeeded, %.0f/%.0f tokens, token cost %.5f, cost per succeeded task %s; the agents reported %+v: %.5f a task by the test's count",
				row.Group, row.TasksSucceeded, row.TokensIn, row.TokensOut, row.TokenCost, fmtPtr(row.CostPerTask), reported, own)
			if row.CostPerTask == nil || math.Abs(*row.CostPerTask-own) > 0.05*own {
				t.Errorf("%s: cost per succeeded task %s, want %.5f (within 5%%)", row.Group, fmtPtr(row.CostPerTask), own)
			}
			if math.Abs(row.TokenCost-tokenCost) > 0.05*tokenCost || math.Abs(row.TasksSucceeded-float64(reported.Succeeded)) > 0.05*float64(reported.Succeeded) {
				t.Errorf("%s: token cost %.5f and %.0f tasks succeeded, the agents' %.5f and %d", row.Group, row.TokenCost, row.TasksSucceeded, tokenCost, reported.Succeeded)
			}
		} else if row.CostPerTask != nil {
			t.Errorf("%s: cost per succeeded task %v for a fleet without tasks, want none", row.Group, *row.CostPerTask)
		}
		switch {
		case w.utilization == nil && row.Utilization != nil:
			t.Errorf("%s: utilization %.2f, want unknown (no GPU agent on its nodes)", row.Group, *row.Utilization)
		case w.utilization != nil && (row.Utilization == nil || math.Abs(*row.Utilization-*w.utilization) > 0.01):
			t.Errorf("%s: utilization %v, want %.2f", row.Group, row.Utilization, *w.utilization)
		}
	}
	if t.Failed() {
		logSamples(ctx, t, prom.URL, fmt.Sprintf(`agentfleet_gpu_seconds_total{namespace=%q}[%s]`, ns, since), until)
	}
	if seen != len(want) {
		t.Errorf("the report has %d of this test's %d fleets: %+v", seen, len(want), r.Rows)
	}

	// Priced by OpenCost, which this Prometheus has (auto picks it): the L4 node's price for the L4
	// fleet; OpenCost has no price for the H100 nodes here, so the H100 fleet keeps the table's.
	var oc jsonReport
	if err := json.Unmarshal([]byte(costOf(cost.ByFleet, "json")), &oc); err != nil {
		t.Fatal(err)
	}
	if oc.PricedBy != cost.PricedByOpenCostAndTable {
		t.Errorf("priced by %q, want %q (OpenCost prices the L4 node only)", oc.PricedBy, cost.PricedByOpenCostAndTable)
	}
	for _, row := range oc.Rows {
		hourly := 0.0
		switch row.Group {
		case ns + "/l4-coders":
			hourly = openCostL4
		case ns + "/h100-reviewers":
			hourly, _ = prices.GPUHour("NVIDIA-H100-80GB-HBM3")
		default:
			continue
		}
		if want := row.GPUHours * hourly; math.Abs(row.Cost-want) > 0.01*want || row.UnpricedGPUHours != 0 {
			t.Errorf("OpenCost and the table: %s costs %.5f (%.5f unpriced GPU-hours), want %.5f at %.2f per GPU-hour", row.Group, row.Cost, row.UnpricedGPUHours, want, hourly)
		}
	}

	// By cost center, as a table.
	table := costOf(cost.ByCostCenter, "table")
	for _, center := range []string{"research", "platform"} {
		if !regexp.MustCompile(`(?m)^` + center + `\s+\d`).MatchString(table) {
			t.Errorf("no row for cost center %s in:\n%s", center, table)
		}
	}

	// The HTML report, in a real browser: a bar for each of this test's fleets today.
	page := filepath.Join(t.ArtifactDir(), "cost-report.html")
	if err := os.WriteFile(page, []byte(costOf(cost.ByFleet, "html", "--price-source", "table")), 0o644); err != nil {
		t.Fatal(err)
	}
	dom, err := browser.Render(ctx, page, filepath.Join(t.ArtifactDir(), "cost-report.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dom, `id="daily-cost-chart"`) || !strings.Contains(dom, `data-rendered="true"`) {
		t.Fatalf("the chart did not render; DOM:\n%s", dom)
	}
	bars := map[string]bool{}
	for _, rect := range regexp.MustCompile(`<rect[^>]*>`).FindAllString(dom, -1) {
		if g := regexp.MustCompile(`data-group="([^"]*)"`).FindStringSubmatch(rect); g != nil && strings.Contains(rect, `class="bar"`) {
			bars[g[1]] = true
		}
	}
	for group := range want {
		if !bars[group] {
			t.Errorf("no bar for %s in the rendered chart (bars: %v)", group, bars)
		}
	}
	// The cost per succeeded task, by day: a point for the L4 fleet, whose agents finished tasks, none
	// for the H100 fleet, which ran none.
	points := map[string]bool{}
	for _, circle := range regexp.MustCompile(`<circle[^>]*>`).FindAllString(dom, -1) {
		if g := regexp.MustCompile(`data-group="([^"]*)"`).FindStringSubmatch(circle); g != nil && strings.Contains(circle, `class="point"`) {
			points[g[1]] = true
		}
	}
	if !points[ns+"/l4-coders"] || points[ns+"/h100-reviewers"] {
		t.Errorf("cost-per-task points %v: want one for %s/l4-coders and none for %s/h100-reviewers", points, ns, ns)
	}
}

func fmtPtr(v *float64) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("%.5f", *v)
}

func setFleet(t *testing.T, key client.ObjectKey, mutate func(*v1alpha1.AgentFleet)) {
	t.Helper()
	eventually(t, 10*time.Second, "updating fleet "+key.String(), func(ctx context.Context) (bool, string) {
		f := &v1alpha1.AgentFleet{}
		if err := k8s.Get(ctx, key, f); err != nil {
			return false, err.Error()
		}
		mutate(f)
		if err := k8s.Update(ctx, f); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// logSamples logs what Prometheus holds of a range selector, for a failure's diagnosis.
func logSamples(ctx context.Context, t *testing.T, address, selector string, at time.Time) {
	t.Helper()
	pc, err := promapi.NewClient(promapi.Config{Address: address})
	if err != nil {
		t.Log(err)
		return
	}
	v, _, err := promv1.NewAPI(pc).Query(ctx, selector, at)
	if err != nil {
		t.Log(err)
		return
	}
	if m, ok := v.(model.Matrix); ok {
		for _, s := range m {
			t.Logf("%s: %d samples: %v", s.Metric, len(s.Values), s.Values)
		}
	}
}
