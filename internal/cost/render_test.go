package cost

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func f64(v float64) *float64 { return &v }

func nov(d int) time.Time { return time.Date(2026, time.November, d, 0, 0, 0, 0, time.UTC) }

// pricedReport has two namespaces with utilization, one with unpriced GPU-hours and unpriced tokens
// and no succeeded task, and three days, one of them without a succeeded task.
func pricedReport() Report {
	return Report{
		Since:    nov(1),
		Until:    nov(4),
		By:       ByNamespace,
		Currency: "USD",
		Rows: []Row{
			{Group: "team-a", GPUHours: 48, Cost: 120, Utilization: f64(0.375), IdleCost: f64(75),
				TokensIn: 1_250_000, TokensOut: 310_000, TokenCost: 8.4, TotalCost: 128.4, TasksSucceeded: 40, TasksFailed: 2, CostPerSucceededTask: f64(3.21)},
			{Group: "team-b", GPUHours: 12.25, Cost: 30.5, UnpricedGPUHours: 2, Utilization: f64(0.5), IdleCost: f64(15.25),
				TokensIn: 999, TokensOut: 12, UnpricedTokens: 1011, TotalCost: 30.5, TasksFailed: 3},
		},
		Total: Row{Group: "TOTAL", GPUHours: 60.25, Cost: 150.5, UnpricedGPUHours: 2, Utilization: f64(0.4003), IdleCost: f64(90.25),
			TokensIn: 1_250_999, TokensOut: 310_012, UnpricedTokens: 1011, TokenCost: 8.4, TotalCost: 158.9, TasksSucceeded: 40, TasksFailed: 5, CostPerSucceededTask: f64(3.9725)},
		Daily: []Series{
			{Group: "team-a", Points: []Point{
				{Day: nov(1), Cost: 40, TokenCost: 2, TasksSucceeded: 10, CostPerSucceededTask: f64(4.2)},
				{Day: nov(2), Cost: 50, TokenCost: 4.4},
				{Day: nov(3), Cost: 30, TokenCost: 2, TasksSucceeded: 30, CostPerSucceededTask: f64(32.0 / 30)},
			}},
			{Group: "team-b", Points: []Point{{Day: nov(1), Cost: 0}, {Day: nov(2), Cost: 10.5}, {Day: nov(3), Cost: 20}}},
		},
		Unpriced:         []Unpriced{{Product: "NVIDIA-B200", GPUHours: 2}},
		UnpricedModels:   []UnpricedModel{{Model: "llama-3-70b", TokensIn: 999, TokensOut: 12}},
		UtilizationKnown: true,
	}
}

// unknownReport has no GPU agent metrics, a fleet without a cost center, float noise in its sums
// and a Since that is not in UTC.
func unknownReport() Report {
	return Report{
		Since:    time.Date(2026, time.November, 1, 1, 0, 0, 0, time.FixedZone("CET", 3600)),
		Until:    nov(2),
		By:       ByCostCenter,
		Currency: "EUR",
		Rows: []Row{
			{Group: "research", GPUHours: 0.1 + 0.2, Cost: 1.005, TotalCost: 1.005},
			{Group: "", GPUHours: 1, Cost: 1, TotalCost: 1},
		},
		Total:    Row{Group: "TOTAL", GPUHours: 1.3, Cost: 2.005, TotalCost: 2.005},
		Daily:    []Series{{Group: "research", Points: []Point{{Day: nov(1), Cost: 1.005}}}, {Group: "", Points: []Point{{Day: nov(1), Cost: 1}}}},
		Unpriced: nil,
	}
}

// emptyReport is a range where nothing ran, and no GPU was priced.
func emptyReport() Report {
	return Report{Since: nov(1), Until: nov(8), By: ByFleet, Total: Row{Group: "TOTAL"}}
}

func renderString(t *testing.T, r Report, format string) string {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, r, format); err != nil {
		t.Fatalf("Render(%s): %v", format, err)
	}
	return b.String()
}

func TestRenderGolden(t *testing.T) {
	cases := map[string]struct {
		report Report
		format string
		want   string
	}{
		"table, priced, with an unpriced product": {
			report: pricedReport(),
			format: FormatTable,
			want: `NAMESPACE   GPU-HOURS   GPU COST     UTILIZATION   IDLE COST   TOKENS IN/OUT   TOKEN COST   TOTAL COST   TASKS OK/FAILED   COST/TASK
team-a      48.0        120.00 USD   38%           75.00 USD   1.3M/310k       8.40 USD     128.40 USD   40/2              3.21 USD
team-b      12.2        30.50 USD    50%           15.25 USD   999/12          0.00 USD     30.50 USD    0/3               -
TOTAL       60.2        150.50 USD   40%           90.25 USD   1.3M/310k       8.40 USD     158.90 USD   40/5              3.97 USD
unpriced: NVIDIA-B200 2.0 GPU-hours (no price in the table; not in GPU COST)
unpriced: model llama-3-70b 999 tokens in, 12 out (no token price in the table; not in TOKEN COST)
`,
		},
		"table, utilization unknown": {
			report: unknownReport(),
			format: FormatTable,
			want: `COST CENTER   GPU-HOURS   GPU COST   UTILIZATION   IDLE COST   TOKENS IN/OUT   TOKEN COST   TOTAL COST   TASKS OK/FAILED   COST/TASK
research      0.3         1.00 EUR   unknown       unknown     0/0             0.00 EUR     1.00 EUR     0/0               -
(none)        1.0         1.00 EUR   unknown       unknown     0/0             0.00 EUR     1.00 EUR     0/0               -
TOTAL         1.3         2.00 EUR   unknown       unknown     0/0             0.00 EUR     2.00 EUR     0/0               -
utilization is unknown: no GPU agent metrics in the range
`,
		},
		"table, empty": {
			report: emptyReport(),
			format: FormatTable,
			want: `FLEET   GPU-HOURS   GPU COST   UTILIZATION   IDLE COST   TOKENS IN/OUT   TOKEN COST   TOTAL COST   TASKS OK/FAILED   COST/TASK
TOTAL   0.0         0.00       unknown       unknown     0/0             0.00         0.00         0/0               -
utilization is unknown: no GPU agent metrics in the range
`,
		},
		"csv, priced": {
			report: pricedReport(),
			format: FormatCSV,
			want: `namespace,gpu_hours,cost,currency,utilization,idle_cost,unpriced_gpu_hours,tokens_in,tokens_out,unpriced_tokens,token_cost,total_cost,tasks_succeeded,tasks_failed,cost_per_succeeded_task
team-a,48,120,USD,0.375,75,0,1250000,310000,0,8.4,128.4,40,2,3.21
team-b,12.25,30.5,USD,0.5,15.25,2,999,12,1011,0,30.5,0,3,
TOTAL,60.25,150.5,USD,0.4003,90.25,2,1250999,310012,1011,8.4,158.9,40,5,3.9725
`,
		},
		"csv, utilization unknown: empty cells, no float noise": {
			report: unknownReport(),
			format: FormatCSV,
			want: `cost_center,gpu_hours,cost,currency,utilization,idle_cost,unpriced_gpu_hours,tokens_in,tokens_out,unpriced_tokens,token_cost,total_cost,tasks_succeeded,tasks_failed,cost_per_succeeded_task
research,0.3,1.005,EUR,,,0,0,0,0,0,1.005,0,0,
,1,1,EUR,,,0,0,0,0,0,1,0,0,
TOTAL,1.3,2.005,EUR,,,0,0,0,0,0,2.005,0,0,
`,
		},
		"json, priced": {
			report: pricedReport(),
			format: FormatJSON,
			want: `{
  "since": "2026-11-01T00:00:00Z",
  "until": "2026-11-04T00:00:00Z",
  "by": "namespace",
  "currency": "USD",
  "utilization_known": true,
  "priced_by": "",
  "rows": [
    {
      "group": "team-a",
      "gpu_hours": 48,
      "cost": 120,
      "unpriced_gpu_hours": 0,
      "utilization": 0.375,
      "idle_cost": 75,
      "tokens_in": 1250000,
      "tokens_out": 310000,
      "unpriced_tokens": 0,
      "token_cost": 8.4,
      "total_cost": 128.4,
      "tasks_succeeded": 40,
      "tasks_failed": 2,
      "cost_per_succeeded_task": 3.21
    },
    {
      "group": "team-b",
      "gpu_hours": 12.25,
      "cost": 30.5,
      "unpriced_gpu_hours": 2,
      "utilization": 0.5,
      "idle_cost": 15.25,
      "tokens_in": 999,
      "tokens_out": 12,
      "unpriced_tokens": 1011,
      "token_cost": 0,
      "total_cost": 30.5,
      "tasks_succeeded": 0,
      "tasks_failed": 3,
      "cost_per_succeeded_task": null
    }
  ],
  "total": {
    "group": "TOTAL",
    "gpu_hours": 60.25,
    "cost": 150.5,
    "unpriced_gpu_hours": 2,
    "utilization": 0.4003,
    "idle_cost": 90.25,
    "tokens_in": 1250999,
    "tokens_out": 310012,
    "unpriced_tokens": 1011,
    "token_cost": 8.4,
    "total_cost": 158.9,
    "tasks_succeeded": 40,
    "tasks_failed": 5,
    "cost_per_succeeded_task": 3.9725
  },
  "unpriced": [
    {
      "product": "NVIDIA-B200",
      "gpu_hours": 2
    }
  ],
  "unpriced_models": [
    {
      "model": "llama-3-70b",
      "tokens_in": 999,
      "tokens_out": 12
    }
  ],
  "daily": [
    {
      "group": "team-a",
      "points": [
        {
          "day": "2026-11-01",
          "cost": 40,
          "token_cost": 2,
          "total_cost": 42,
          "tasks_succeeded": 10,
          "cost_per_succeeded_task": 4.2
        },
        {
          "day": "2026-11-02",
          "cost": 50,
          "token_cost": 4.4,
          "total_cost": 54.4,
          "tasks_succeeded": 0,
          "cost_per_succeeded_task": null
        },
        {
          "day": "2026-11-03",
          "cost": 30,
          "token_cost": 2,
          "total_cost": 32,
          "tasks_succeeded": 30,
          "cost_per_succeeded_task": 1.066667
        }
      ]
    },
    {
      "group": "team-b",
      "points": [
        {
          "day": "2026-11-01",
          "cost": 0,
          "token_cost": 0,
          "total_cost": 0,
          "tasks_succeeded": 0,
          "cost_per_succeeded_task": null
        },
        {
          "day": "2026-11-02",
          "cost": 10.5,
          "token_cost": 0,
          "total_cost": 10.5,
          "tasks_succeeded": 0,
          "cost_per_succeeded_task": null
        },
        {
          "day": "2026-11-03",
          "cost": 20,
          "token_cost": 0,
          "total_cost": 20,
          "tasks_succeeded": 0,
          "cost_per_succeeded_task": null
        }
      ]
    }
  ]
}
`,
		},
		"json, empty: lists are [], unknown is null, times in UTC": {
			report: func() Report { r := emptyReport(); r.Since = unknownReport().Since; return r }(),
			format: FormatJSON,
			want: `{
  "since": "2026-11-01T00:00:00Z",
  "until": "2026-11-08T00:00:00Z",
  "by": "fleet",
  "currency": "",
  "utilization_known": false,
  "priced_by": "",
  "rows": [],
  "total": {
    "group": "TOTAL",
    "gpu_hours": 0,
    "cost": 0,
    "unpriced_gpu_hours": 0,
    "utilization": null,
    "idle_cost": null,
    "tokens_in": 0,
    "tokens_out": 0,
    "unpriced_tokens": 0,
    "token_cost": 0,
    "total_cost": 0,
    "tasks_succeeded": 0,
    "tasks_failed": 0,
    "cost_per_succeeded_task": null
  },
  "unpriced": [],
  "unpriced_models": [],
  "daily": []
}
`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := renderString(t, tc.report, tc.format)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Render(%s) (-want +got):\n%s", tc.format, diff)
			}
		})
	}
}

// A script reads the JSON with the same keys the documentation gives, and round-trips the numbers.
func TestRenderJSONDecodes(t *testing.T) {
	var got struct {
		Rows []struct {
			Group       string   `json:"group"`
			Utilization *float64 `json:"utilization"`
		} `json:"rows"`
		UtilizationKnown bool `json:"utilization_known"`
	}
	if err := json.Unmarshal([]byte(renderString(t, unknownReport(), FormatJSON)), &got); err != nil {
		t.Fatal(err)
	}
	if got.UtilizationKnown || len(got.Rows) != 2 || got.Rows[0].Utilization != nil || got.Rows[1].Group != "" {
		t.Errorf("decoded %+v: want utilization unknown, 2 rows, null utilization, the empty cost center as \"\"", got)
	}
}

func TestRenderUnknownFormat(t *testing.T) {
	var b bytes.Buffer
	err := Render(&b, pricedReport(), "xml")
	if err == nil {
		t.Fatal("Render(xml): no error")
	}
	for _, want := range []string{`"xml"`, "table, csv, json, html"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if b.Len() != 0 {
		t.Errorf("Render(xml) wrote %q before failing", b.String())
	}
}

func TestRenderHTML(t *testing.T) {
	hostile := `</script><script>alert("x")</script><img src=x onerror=alert(1)>&amp;`
	withHostile := pricedReport()
	withHostile.Rows[0].Group = hostile
	withHostile.Daily[0].Group = hostile
	withHostile.Unpriced[0].Product = hostile

	cases := map[string]struct {
		report  Report
		want    []string // substrings the page must have
		notWant []string // and must not
	}{
		"charts, table, totals, unpriced": {
			report: pricedReport(),
			want: []string{
				"<title>Cost by namespace</title>",
				"2026-11-01 00:00 to 2026-11-04 00:00 UTC",
				`<svg id="daily-cost-chart"`,
				`<ul class="legend" id="daily-cost-legend">`,
				`<li><span class="swatch" style="background-color: #4e79a7"></span>team-a</li>`,
				`<tr><td>team-b</td><td>12.2</td><td>30.50 USD</td><td>50%</td><td>15.25 USD</td><td>999/12</td><td>0.00 USD</td><td>30.50 USD</td><td>0/3</td><td>-</td></tr>`,
				`<tr class="total"><td>TOTAL</td><td>60.2</td><td>150.50 USD</td><td>40%</td><td>90.25 USD</td><td>1.3M/310k</td><td>8.40 USD</td><td>158.90 USD</td><td>40/5</td><td>3.97 USD</td></tr>`,
				"<li>NVIDIA-B200: 2.0 GPU-hours, no price in the table, not in the cost</li>",
				`<ul id="unpriced-models">`,
				"<li>llama-3-70b: 999 tokens in, 12 out, no token price in the table, not in the cost</li>",
				"158.90 USD in all: GPUs 150.50 USD for 60.2 GPU-hours",
				": 3.97 USD per succeeded task",
				// The daily cost is GPUs and tokens together.
				`"days":["2026-11-01","2026-11-02","2026-11-03"]`,
				`{"group":"team-a","color":"#4e79a7","costs":[42,54.4,32]}`,
				`{"group":"team-b","color":"#f28e2b","costs":[0,10.5,20]}`,
				`"Cost (USD)"`,
				// Cost per succeeded task: null (no point) on the day without one, team-b (none at all)
				// not drawn; team-a keeps its colour.
				`<svg id="cost-per-task-chart"`,
				`{"group":"team-a","color":"#4e79a7","values":[4.2,null,1.066667]}`,
				`<ul class="legend" id="cost-per-task-legend">` + "\n" + `<li><span class="swatch" style="background-color: #4e79a7"></span>team-a</li>` + "\n</ul>",
				`"Cost per succeeded task (USD)"`,
			},
			notWant: []string{"no cost in this range", "no task succeeded in this range", "utilization is unknown", `data-rendered="true"`, `"group":"team-b","color":"#f28e2b","values"`},
		},
		"utilization unknown, cost center (none)": {
			report: unknownReport(),
			want: []string{
				"<title>Cost by cost center</title>",
				"<h2>By cost center</h2>",
				`<p class="note" id="utilization-unknown">utilization is unknown: no GPU agent metrics in the range.</p>`,
				`<tr><td>(none)</td><td>1.0</td><td>1.00 EUR</td><td>unknown</td><td>unknown</td><td>0/0</td><td>0.00 EUR</td><td>1.00 EUR</td><td>0/0</td><td>-</td></tr>`,
				`{"group":"(none)","color":"#f28e2b","costs":[1]}`,
				// Cost, but no task succeeded: the daily chart, and a message for the other.
				`<p class="empty" id="cost-per-task-empty">no task succeeded in this range</p>`,
			},
			notWant: []string{"Unpriced GPUs", "Unpriced models", `<svg id="cost-per-task-chart"`, `run("cost-per-task-chart"`},
		},
		"no cost: a message instead of each chart": {
			report: emptyReport(),
			want: []string{`<p class="empty" id="daily-cost-empty">no cost in this range</p>`,
				`<p class="empty" id="cost-per-task-empty">no task succeeded in this range</p>`},
			notWant: []string{`<svg id="daily-cost-chart"`, `<svg id="cost-per-task-chart"`, "<script"},
		},
		"tasks that cost nothing: a point at 0, and no daily cost chart": {
			report: func() Report {
				r := emptyReport()
				r.Daily = []Series{{Group: "a/b", Points: []Point{{Day: nov(1), TasksSucceeded: 3, CostPerSucceededTask: f64(0)}, {Day: nov(2)}}}}
				return r
			}(),
			want: []string{`<p class="empty" id="daily-cost-empty">no cost in this range</p>`,
				`run("cost-per-task-chart", drawPerTask, {"currency":"","days":["2026-11-01","2026-11-02"],"series":[{"group":"a/b","color":"#4e79a7","values":[0,null]}]}, "Cost per succeeded task");`},
			notWant: []string{`<svg id="daily-cost-chart"`, `run("daily-cost-chart"`},
		},
		"only zero days: a message instead of the chart": {
			report: func() Report {
				r := emptyReport()
				r.Daily = []Series{{Group: "a/b", Points: []Point{{Day: nov(1)}, {Day: nov(2)}}}}
				return r
			}(),
			want:    []string{"no cost in this range"},
			notWant: []string{`<svg id="daily-cost-chart"`},
		},
		"hostile group and product names are escaped": {
			report: withHostile,
			want: []string{
				`<tr><td>&lt;/script&gt;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;</td>`,
				// In the script, as JSON with <, > and & escaped: it cannot close the <script>.
				`\u003c/script\u003e\u003cscript\u003ealert(\"x\")\u003c/script\u003e\u003cimg src=x onerror=alert(1)\u003e\u0026amp;`,
			},
			notWant: []string{"<img", `<script>alert`, "</script><script>", "onerror=alert(1)>"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := renderString(t, tc.report, FormatHTML)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("page lacks %s\npage:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("page has %s\npage:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "<script"); n > 1 {
				t.Errorf("page has %d <script elements, want at most the chart's one", n)
			}
		})
	}
}

func TestChartColor(t *testing.T) {
	got := map[int]string{}
	for _, i := range []int{0, 9, 10, 11, 12, 500} {
		got[i] = chartColor(i)
	}
	// Past the palette: hsl((i×137) mod 360, 55%, 50%), checked against Python's colorsys.
	want := map[int]string{0: "#4e79a7", 9: "#bab0ac", 10: "#ae39c6", 11: "#b5c639", 12: "#398ec6", 500: "#68c639"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chartColor (-want +got):\n%s", diff)
	}
}

// Past the palette, the legend's swatches still get a colour html/template lets through.
func TestRenderHTMLManyGroups(t *testing.T) {
	r := pricedReport()
	for i := range 15 {
		r.Daily = append(r.Daily, Series{Group: fmt.Sprint("g", i), Points: []Point{{Day: nov(1), Cost: 1}}})
	}
	got := renderString(t, r, FormatHTML)
	if strings.Contains(got, "ZgotmplZ") {
		t.Errorf("html/template refused a value of the page:\n%s", got)
	}
	// 17 in the daily cost chart's legend, team-a's in the cost per succeeded task chart's.
	if n := strings.Count(got, `<span class="swatch" style="background-color: #`); n != 18 {
		t.Errorf("%d legend swatches with a colour, want 18", n)
	}
}

// The page is opened from a file, offline, by people who were sent it: nothing in it may point
// outside it (no URL, no protocol-relative //, no src or href, no @import).
func TestRenderHTMLSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)https?:|//|\bsrc\s*=|\bhref\s*=|@import|url\(`)
	for name, r := range map[string]Report{"priced": pricedReport(), "unknown": unknownReport(), "empty": emptyReport()} {
		t.Run(name, func(t *testing.T) {
			got := renderString(t, r, FormatHTML)
			if m := external.FindAllString(got, -1); len(m) > 0 {
				t.Errorf("page refers outside itself: %q\npage:\n%s", m, got)
			}
		})
	}
}

func TestFmtCount(t *testing.T) {
	got := map[int64]string{}
	for _, n := range []int64{0, 999, 1000, 1050, 12_345, 310_000, 999_949, 999_950, 1_250_000, 4_560_000_000, 2_000_000_000_000} {
		got[n] = fmtCount(n)
	}
	want := map[int64]string{0: "0", 999: "999", 1000: "1k", 1050: "1.1k", 12_345: "12.3k", 310_000: "310k", 999_949: "999.9k",
		999_950: "1M", 1_250_000: "1.3M", 4_560_000_000: "4.6B", 2_000_000_000_000: "2000B"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fmtCount (-want +got):\n%s", diff)
	}
}

// With GPUs priced by OpenCost, a report with tokens says that these are priced by the operator's
// table; without tokens it does not mention them.
func TestRenderSaysTokensByTable(t *testing.T) {
	r := Report{By: ByFleet, Currency: "USD", PricedBy: PricedByOpenCost, UtilizationKnown: true,
		Total: Row{Group: "TOTAL", TokensIn: 10, TokenCost: 1, TotalCost: 1}}
	want := openCostNote + "; tokens by the operator's price table\n"
	if got := renderString(t, r, FormatTable); !strings.HasSuffix(got, want) {
		t.Errorf("table ends %q, want %q", got, want)
	}
	r.Total = Row{Group: "TOTAL"}
	if got := renderString(t, r, FormatTable); strings.Contains(got, "tokens by") {
		t.Errorf("a report without tokens mentions their prices:\n%s", got)
	}
}
