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

// pricedReport has two namespaces with utilization, one with unpriced GPU-hours, and three days.
func pricedReport() Report {
	return Report{
		Since:    nov(1),
		Until:    nov(4),
		By:       ByNamespace,
		Currency: "USD",
		Rows: []Row{
			{Group: "team-a", GPUHours: 48, Cost: 120, Utilization: f64(0.375), IdleCost: f64(75)},
			{Group: "team-b", GPUHours: 12.25, Cost: 30.5, UnpricedGPUHours: 2, Utilization: f64(0.5), IdleCost: f64(15.25)},
		},
		Total: Row{Group: "TOTAL", GPUHours: 60.25, Cost: 150.5, UnpricedGPUHours: 2, Utilization: f64(0.4003), IdleCost: f64(90.25)},
		Daily: []Series{
			{Group: "team-a", Points: []Point{{Day: nov(1), Cost: 40}, {Day: nov(2), Cost: 50}, {Day: nov(3), Cost: 30}}},
			{Group: "team-b", Points: []Point{{Day: nov(1), Cost: 0}, {Day: nov(2), Cost: 10.5}, {Day: nov(3), Cost: 20}}},
		},
		Unpriced:         []Unpriced{{Product: "NVIDIA-B200", GPUHours: 2}},
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
			{Group: "research", GPUHours: 0.1 + 0.2, Cost: 1.005},
			{Group: "", GPUHours: 1, Cost: 1},
		},
		Total:    Row{Group: "TOTAL", GPUHours: 1.3, Cost: 2.005},
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
			want: `NAMESPACE   GPU-HOURS   COST         UTILIZATION   IDLE COST
team-a      48.0        120.00 USD   38%           75.00 USD
team-b      12.2        30.50 USD    50%           15.25 USD
TOTAL       60.2        150.50 USD   40%           90.25 USD
unpriced: NVIDIA-B200 2.0 GPU-hours (no price in the table; not in COST)
`,
		},
		"table, utilization unknown": {
			report: unknownReport(),
			format: FormatTable,
			want: `COST CENTER   GPU-HOURS   COST       UTILIZATION   IDLE COST
research      0.3         1.00 EUR   unknown       unknown
(none)        1.0         1.00 EUR   unknown       unknown
TOTAL         1.3         2.00 EUR   unknown       unknown
utilization is unknown: no GPU agent metrics in the range
`,
		},
		"table, empty": {
			report: emptyReport(),
			format: FormatTable,
			want: `FLEET   GPU-HOURS   COST   UTILIZATION   IDLE COST
TOTAL   0.0         0.00   unknown       unknown
utilization is unknown: no GPU agent metrics in the range
`,
		},
		"csv, priced": {
			report: pricedReport(),
			format: FormatCSV,
			want: `namespace,gpu_hours,cost,currency,utilization,idle_cost,unpriced_gpu_hours
team-a,48,120,USD,0.375,75,0
team-b,12.25,30.5,USD,0.5,15.25,2
TOTAL,60.25,150.5,USD,0.4003,90.25,2
`,
		},
		"csv, utilization unknown: empty cells, no float noise": {
			report: unknownReport(),
			format: FormatCSV,
			want: `cost_center,gpu_hours,cost,currency,utilization,idle_cost,unpriced_gpu_hours
research,0.3,1.005,EUR,,,0
,1,1,EUR,,,0
TOTAL,1.3,2.005,EUR,,,0
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
      "idle_cost": 75
    },
    {
      "group": "team-b",
      "gpu_hours": 12.25,
      "cost": 30.5,
      "unpriced_gpu_hours": 2,
      "utilization": 0.5,
      "idle_cost": 15.25
    }
  ],
  "total": {
    "group": "TOTAL",
    "gpu_hours": 60.25,
    "cost": 150.5,
    "unpriced_gpu_hours": 2,
    "utilization": 0.4003,
    "idle_cost": 90.25
  },
  "unpriced": [
    {
      "product": "NVIDIA-B200",
      "gpu_hours": 2
    }
  ],
  "daily": [
    {
      "group": "team-a",
      "points": [
        {
          "day": "2026-11-01",
          "cost": 40
        },
        {
          "day": "2026-11-02",
          "cost": 50
        },
        {
          "day": "2026-11-03",
          "cost": 30
        }
      ]
    },
    {
      "group": "team-b",
      "points": [
        {
          "day": "2026-11-01",
          "cost": 0
        },
        {
          "day": "2026-11-02",
          "cost": 10.5
        },
        {
          "day": "2026-11-03",
          "cost": 20
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
    "idle_cost": null
  },
  "unpriced": [],
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
		"chart, table, totals, unpriced": {
			report: pricedReport(),
			want: []string{
				"<title>GPU cost by namespace</title>",
				"2026-11-01 00:00 to 2026-11-04 00:00 UTC",
				`<svg id="daily-cost-chart"`,
				`<ul class="legend" id="daily-cost-legend">`,
				`<li><span class="swatch" style="background-color: #4e79a7"></span>team-a</li>`,
				`<tr><td>team-b</td><td>12.2</td><td>30.50 USD</td><td>50%</td><td>15.25 USD</td></tr>`,
				`<tr class="total"><td>TOTAL</td><td>60.2</td><td>150.50 USD</td><td>40%</td><td>90.25 USD</td></tr>`,
				"<li>NVIDIA-B200: 2.0 GPU-hours, no price in the table, not in the cost</li>",
				`"days":["2026-11-01","2026-11-02","2026-11-03"]`,
				`{"group":"team-b","color":"#f28e2b","costs":[0,10.5,20]}`,
				`var yLabel = "Cost (USD)";`,
			},
			notWant: []string{"no cost in this range", "utilization is unknown", `data-rendered="true"`},
		},
		"utilization unknown, cost center (none)": {
			report: unknownReport(),
			want: []string{
				"<title>GPU cost by cost center</title>",
				"<h2>By cost center</h2>",
				`<p class="note" id="utilization-unknown">utilization is unknown: no GPU agent metrics in the range.</p>`,
				`<tr><td>(none)</td><td>1.0</td><td>1.00 EUR</td><td>unknown</td><td>unknown</td></tr>`,
				`{"group":"(none)","color":"#f28e2b","costs":[1]}`,
			},
			notWant: []string{"Unpriced GPUs"},
		},
		"no cost: a message instead of the chart": {
			report:  emptyReport(),
			want:    []string{`<p class="empty" id="daily-cost-empty">no cost in this range</p>`},
			notWant: []string{`<svg id="daily-cost-chart"`, "<script"},
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
	if n := strings.Count(got, `<span class="swatch" style="background-color: #`); n != 17 {
		t.Errorf("%d legend swatches with a colour, want 17", n)
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
