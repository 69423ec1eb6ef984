package cost

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Output formats of Render, the accepted --format values.
const (
	FormatTable = "table"
	FormatCSV   = "csv"
	FormatJSON  = "json"
	FormatHTML  = "html"
)

// Formats are the accepted --format values, in the order the help lists them.
var Formats = []string{FormatTable, FormatCSV, FormatJSON, FormatHTML}

// noneGroup is how a report shows the empty cost center (fleets without one) to people; CSV and JSON
// keep "" so that scripts can tell it from a cost center named "(none)".
const noneGroup = "(none)"

// Render writes r to w in format, one of Formats:
//
//   - table: for a terminal, in the style of `kubectl get`; money with two decimals and the currency,
//     token counts shortened (12.3k, 4.5M, 1.2B).
//   - csv: a header row, a row per group and a TOTAL row; numbers as plain decimals (see JSON), the
//     currency in a column of its own, an empty cell where a figure is unknown or undefined.
//   - json: one object, below. Keys are snake_case; a figure that is unknown or undefined is null
//     (never 0); lists are [] when empty (never null); utilization is a ratio (0–1); times are RFC 3339
//     in UTC; a day is the date (YYYY-MM-DD) of a UTC day; fleets without a cost center are the group
//     "" (shown as "(none)" in the table and the page).
//   - html: one self-contained page (no external resource of any kind) with the table, a chart of the
//     daily cost per group and a chart of the daily cost per succeeded task per group, drawn by inline
//     JavaScript into SVGs.
//
// "cost" is the GPU cost (as before tokens were priced), "token_cost" the tokens', "total_cost" their
// sum; "cost_per_succeeded_task" is total_cost / tasks_succeeded (the failed tasks' cost included),
// null without a succeeded task. Tasks and tokens are whole numbers (increase() extrapolates to the
// range's edges; the report rounds each group's count).
//
// Machine-readable numbers (CSV, JSON, the charts' data) are rounded to 6 decimals, so that float
// noise (0.30000000000000004) does not reach spreadsheets and scripts.
//
// The JSON:
//
//	{
//	  "since": "2026-11-01T00:00:00Z", "until": "2026-11-08T00:00:00Z",
//	  "by": "namespace",            // namespace | fleet | cost_center
//	  "currency": "USD",            // "" when nothing was priced
//	  "utilization_known": true,    // false: no GPU agent metrics in the range
//	  "priced_by": "table",         // GPU prices: table (the operator's price table) | opencost (node_gpu_hourly_cost) | opencost+table
//	  "rows": [{"group": "team-a", "gpu_hours": 10, "cost": 25, "unpriced_gpu_hours": 0,
//	            "utilization": 0.4, "idle_cost": 15,
//	            "tokens_in": 1200000, "tokens_out": 300000, "unpriced_tokens": 0, "token_cost": 8.1,
//	            "total_cost": 33.1, "tasks_succeeded": 40, "tasks_failed": 2,
//	            "cost_per_succeeded_task": 0.8275}],   // sorted by total cost, highest first
//	  "total": {"group": "TOTAL", ...},                 // the same fields as a row
//	  "unpriced": [{"product": "NVIDIA-B200", "gpu_hours": 12}],
//	  "unpriced_models": [{"model": "llama-3-70b", "tokens_in": 5000, "tokens_out": 900}],
//	  "daily": [{"group": "team-a", "points": [{"day": "2026-11-01", "cost": 3.5, "token_cost": 1.2,
//	             "total_cost": 4.7, "tasks_succeeded": 4, "cost_per_succeeded_task": 1.175}]}]
//	}
func Render(w io.Writer, r Report, format string) error {
	var err error
	switch format {
	case FormatTable:
		err = renderTable(w, r)
	case FormatCSV:
		err = renderCSV(w, r)
	case FormatJSON:
		err = renderJSON(w, r)
	case FormatHTML:
		err = renderHTML(w, r)
	default:
		return fmt.Errorf("unknown format %q: accepted formats are %s", format, strings.Join(Formats, ", "))
	}
	if err != nil {
		return fmt.Errorf("rendering the cost report as %s: %w", format, err)
	}
	return nil
}

// groupTitle is the table's first column header for a grouping.
func groupTitle(by string) string {
	switch by {
	case ByNamespace:
		return "NAMESPACE"
	case ByFleet:
		return "FLEET"
	case ByCostCenter:
		return "COST CENTER"
	}
	return "GROUP"
}

// displayGroup is a group's name as people read it.
func displayGroup(g string) string {
	if g == "" {
		return noneGroup
	}
	return g
}

// totalRow is r.Total with its Group set, whatever the caller left there.
func totalRow(r Report) Row {
	t := r.Total
	t.Group = "TOTAL"
	return t
}

func fmtMoney(v float64, currency string) string {
	if currency == "" {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + " " + currency
}

func fmtHours(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func fmtPercent(u *float64) string {
	if u == nil {
		return "unknown"
	}
	return strconv.FormatFloat(*u*100, 'f', 0, 64) + "%"
}

func fmtOptMoney(v *float64, currency string) string {
	if v == nil {
		return "unknown"
	}
	return fmtMoney(*v, currency)
}

// noTask is the cost per succeeded task of a group without one: undefined, not unknown, and not 0.
const noTask = "-"

func fmtPerTask(v *float64, currency string) string {
	if v == nil {
		return noTask
	}
	return fmtMoney(*v, currency)
}

// fmtCount shortens a count of tokens for people: 999, 12.3k, 310k, 4.5M, 1.2B (to a tenth, halves
// up, so that a row and the total round alike).
func fmtCount(n int64) string {
	v := float64(n)
	if math.Abs(v) < 1e3 {
		return strconv.FormatInt(n, 10)
	}
	units := []struct {
		div    float64
		suffix string
	}{{1e3, "k"}, {1e6, "M"}, {1e9, "B"}}
	for i, u := range units {
		// 999,950 is 1.0M, not 1000.0k.
		if r := math.Round(v/u.div*10) / 10; math.Abs(r) < 1e3 || i == len(units)-1 {
			return strconv.FormatFloat(r, 'f', -1, 64) + u.suffix
		}
	}
	return "" // not reached: the last unit returns
}

func fmtTokens(row Row) string { return fmtCount(row.TokensIn) + "/" + fmtCount(row.TokensOut) }

func fmtTasks(row Row) string { return fmt.Sprintf("%d/%d", row.TasksSucceeded, row.TasksFailed) }

func unpricedLine(u Unpriced) string {
	return fmt.Sprintf("unpriced: %s %s GPU-hours (no price in the table; not in GPU COST)", u.Product, fmtHours(u.GPUHours))
}

func unpricedModelLine(u UnpricedModel) string {
	return fmt.Sprintf("unpriced: model %s %s tokens in, %s out (no token price in the table; not in TOKEN COST)", u.Model, fmtCount(u.TokensIn), fmtCount(u.TokensOut))
}

const utilizationUnknownNote = "utilization is unknown: no GPU agent metrics in the range"

const openCostNote = "priced by OpenCost's node_gpu_hourly_cost: each GPU product at the mean of its nodes' price over the range"

const openCostAndTableNote = "priced by OpenCost's node_gpu_hourly_cost where it prices a GPU product (the mean of its nodes' price over the range), by the price table for the others"

const tokensByTableNote = "; tokens by the operator's price table"

// pricedByNote says where the prices came from, when it is not the table alone.
func pricedByNote(r Report) string {
	var note string
	switch r.PricedBy {
	case PricedByOpenCost:
		note = openCostNote
	case PricedByOpenCostAndTable:
		note = openCostAndTableNote
	default:
		return ""
	}
	if hasTokens(r) {
		note += tokensByTableNote
	}
	return note
}

func hasTokens(r Report) bool {
	return r.Total.TokensIn != 0 || r.Total.TokensOut != 0 || r.Total.TokenCost != 0
}

func renderTable(w io.Writer, r Report) error {
	// kubectl's own tabwriter settings (k8s.io/cli-runtime printers.GetNewTabWriter).
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	fmt.Fprintf(tw, "%s\tGPU-HOURS\tGPU COST\tUTILIZATION\tIDLE COST\tTOKENS IN/OUT\tTOKEN COST\tTOTAL COST\tTASKS OK/FAILED\tCOST/TASK\n", groupTitle(r.By))
	for _, row := range append(slices.Clone(r.Rows), totalRow(r)) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", displayGroup(row.Group), fmtHours(row.GPUHours),
			fmtMoney(row.Cost, r.Currency), fmtPercent(row.Utilization), fmtOptMoney(row.IdleCost, r.Currency),
			fmtTokens(row), fmtMoney(row.TokenCost, r.Currency), fmtMoney(row.TotalCost, r.Currency),
			fmtTasks(row), fmtPerTask(row.CostPerSucceededTask, r.Currency))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes strings.Builder
	for _, u := range r.Unpriced {
		notes.WriteString(unpricedLine(u) + "\n")
	}
	for _, u := range r.UnpricedModels {
		notes.WriteString(unpricedModelLine(u) + "\n")
	}
	if !r.UtilizationKnown {
		notes.WriteString(utilizationUnknownNote + "\n")
	}
	if note := pricedByNote(r); note != "" {
		notes.WriteString(note + "\n")
	}
	_, err := io.WriteString(w, notes.String())
	return err
}

// round6 rounds a machine-readable figure to 6 decimals (a micro-unit of currency, 3.6 ms of a
// GPU-hour). Dividing the rounded integer by 1e6 gives the double nearest that decimal, whose shortest
// representation is the decimal itself.
func round6(v float64) float64 { return math.Round(v*1e6) / 1e6 }

func round6p(v *float64) *float64 {
	if v == nil {
		return nil
	}
	x := round6(*v)
	return &x
}

func fmtNum(v float64) string { return strconv.FormatFloat(round6(v), 'f', -1, 64) }

func fmtOptNum(v *float64) string {
	if v == nil {
		return ""
	}
	return fmtNum(*v)
}

func fmtInt(v int64) string { return strconv.FormatInt(v, 10) }

func renderCSV(w io.Writer, r Report) error {
	by := r.By
	if by == "" {
		by = "group"
	}
	cw := csv.NewWriter(w)
	// New columns go at the end: scripts that read the first seven by position keep working.
	records := [][]string{{by, "gpu_hours", "cost", "currency", "utilization", "idle_cost", "unpriced_gpu_hours",
		"tokens_in", "tokens_out", "unpriced_tokens", "token_cost", "total_cost", "tasks_succeeded", "tasks_failed", "cost_per_succeeded_task"}}
	for _, row := range append(slices.Clone(r.Rows), totalRow(r)) {
		records = append(records, []string{row.Group, fmtNum(row.GPUHours), fmtNum(row.Cost), r.Currency,
			fmtOptNum(row.Utilization), fmtOptNum(row.IdleCost), fmtNum(row.UnpricedGPUHours),
			fmtInt(row.TokensIn), fmtInt(row.TokensOut), fmtInt(row.UnpricedTokens), fmtNum(row.TokenCost), fmtNum(row.TotalCost),
			fmtInt(row.TasksSucceeded), fmtInt(row.TasksFailed), fmtOptNum(row.CostPerSucceededTask)})
	}
	return cw.WriteAll(records) // WriteAll flushes and returns the writer's error
}

// jsonReport is the shape of `--format json`, documented on Render: change both together.
type jsonReport struct {
	Since            string              `json:"since"`
	Until            string              `json:"until"`
	By               string              `json:"by"`
	Currency         string              `json:"currency"`
	UtilizationKnown bool                `json:"utilization_known"`
	PricedBy         string              `json:"priced_by"`
	Rows             []jsonRow           `json:"rows"`
	Total            jsonRow             `json:"total"`
	Unpriced         []jsonUnpriced      `json:"unpriced"`
	UnpricedModels   []jsonUnpricedModel `json:"unpriced_models"`
	Daily            []jsonSeries        `json:"daily"`
}

type jsonRow struct {
	Group                string   `json:"group"`
	GPUHours             float64  `json:"gpu_hours"`
	Cost                 float64  `json:"cost"`
	UnpricedGPUHours     float64  `json:"unpriced_gpu_hours"`
	Utilization          *float64 `json:"utilization"`
	IdleCost             *float64 `json:"idle_cost"`
	TokensIn             int64    `json:"tokens_in"`
	TokensOut            int64    `json:"tokens_out"`
	UnpricedTokens       int64    `json:"unpriced_tokens"`
	TokenCost            float64  `json:"token_cost"`
	TotalCost            float64  `json:"total_cost"`
	TasksSucceeded       int64    `json:"tasks_succeeded"`
	TasksFailed          int64    `json:"tasks_failed"`
	CostPerSucceededTask *float64 `json:"cost_per_succeeded_task"`
}

type jsonUnpriced struct {
	Product  string  `json:"product"`
	GPUHours float64 `json:"gpu_hours"`
}

type jsonUnpricedModel struct {
	Model     string `json:"model"`
	TokensIn  int64  `json:"tokens_in"`
	TokensOut int64  `json:"tokens_out"`
}

type jsonSeries struct {
	Group  string      `json:"group"`
	Points []jsonPoint `json:"points"`
}

type jsonPoint struct {
	Day                  string   `json:"day"`
	Cost                 float64  `json:"cost"`
	TokenCost            float64  `json:"token_cost"`
	TotalCost            float64  `json:"total_cost"`
	TasksSucceeded       int64    `json:"tasks_succeeded"`
	CostPerSucceededTask *float64 `json:"cost_per_succeeded_task"`
}

const dayLayout = "2006-01-02"

func toJSONRow(row Row) jsonRow {
	return jsonRow{
		Group:                row.Group,
		GPUHours:             round6(row.GPUHours),
		Cost:                 round6(row.Cost),
		UnpricedGPUHours:     round6(row.UnpricedGPUHours),
		Utilization:          round6p(row.Utilization),
		IdleCost:             round6p(row.IdleCost),
		TokensIn:             row.TokensIn,
		TokensOut:            row.TokensOut,
		UnpricedTokens:       row.UnpricedTokens,
		TokenCost:            round6(row.TokenCost),
		TotalCost:            round6(row.TotalCost),
		TasksSucceeded:       row.TasksSucceeded,
		TasksFailed:          row.TasksFailed,
		CostPerSucceededTask: round6p(row.CostPerSucceededTask),
	}
}

func toJSON(r Report) jsonReport {
	out := jsonReport{
		Since:            r.Since.UTC().Format(time.RFC3339),
		Until:            r.Until.UTC().Format(time.RFC3339),
		By:               r.By,
		Currency:         r.Currency,
		UtilizationKnown: r.UtilizationKnown,
		PricedBy:         r.PricedBy,
		Rows:             []jsonRow{},
		Total:            toJSONRow(totalRow(r)),
		Unpriced:         []jsonUnpriced{},
		UnpricedModels:   []jsonUnpricedModel{},
		Daily:            []jsonSeries{},
	}
	for _, row := range r.Rows {
		out.Rows = append(out.Rows, toJSONRow(row))
	}
	for _, u := range r.Unpriced {
		out.Unpriced = append(out.Unpriced, jsonUnpriced{Product: u.Product, GPUHours: round6(u.GPUHours)})
	}
	for _, u := range r.UnpricedModels {
		out.UnpricedModels = append(out.UnpricedModels, jsonUnpricedModel(u))
	}
	for _, s := range r.Daily {
		js := jsonSeries{Group: s.Group, Points: []jsonPoint{}}
		for _, p := range s.Points {
			js.Points = append(js.Points, jsonPoint{Day: p.Day.UTC().Format(dayLayout), Cost: round6(p.Cost), TokenCost: round6(p.TokenCost),
				TotalCost: round6(p.TotalCost()), TasksSucceeded: p.TasksSucceeded, CostPerSucceededTask: round6p(p.CostPerSucceededTask)})
		}
		out.Daily = append(out.Daily, js)
	}
	return out
}

func renderJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Group names are data for scripts here, not markup: keep "<" and "&" readable.
	enc.SetEscapeHTML(false)
	return enc.Encode(toJSON(r))
}

// palette colours the chart's groups (Tableau 10, readable on white and for most colour-blind
// readers); groups past it get hues spread by the golden angle. Colours are #rrggbb because
// html/template lets only plain CSS values into a style attribute ("hsl(...)" becomes ZgotmplZ).
var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

func chartColor(i int) string {
	if i < len(palette) {
		return palette[i]
	}
	return hslHex(float64((i*137)%360), 0.55, 0.5)
}

// hslHex converts a hue (degrees), saturation and lightness (0–1) to #rrggbb.
func hslHex(h, s, l float64) string {
	c := (1 - math.Abs(2*l-1)) * s
	x := c * (1 - math.Abs(math.Mod(h/60, 2)-1))
	var r, g, b float64
	switch {
	case h < 60:
		r, g = c, x
	case h < 120:
		r, g = x, c
	case h < 180:
		g, b = c, x
	case h < 240:
		g, b = x, c
	case h < 300:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := l - c/2
	to8 := func(v float64) int { return int(math.Round((v + m) * 255)) }
	return fmt.Sprintf("#%02x%02x%02x", to8(r), to8(g), to8(b))
}

// chartData is what the page's script draws in the daily cost chart: a cost (GPUs and tokens) per
// series per day, days sorted, zero where a series has no point.
type chartData struct {
	Currency string        `json:"currency"`
	Days     []string      `json:"days"`
	Series   []chartSeries `json:"series"`
}

type chartSeries struct {
	Group string    `json:"group"`
	Color string    `json:"color"`
	Costs []float64 `json:"costs"`
}

// perTaskData is what the page's script draws in the cost per succeeded task chart: a value per
// series per day, null on a day without a succeeded task (no point, and a gap in the line).
type perTaskData struct {
	Currency string          `json:"currency"`
	Days     []string        `json:"days"`
	Series   []perTaskSeries `json:"series"`
}

type perTaskSeries struct {
	Group  string     `json:"group"`
	Color  string     `json:"color"`
	Values []*float64 `json:"values"`
}

// chartDays are the days of r.Daily, sorted, and each one's index.
func chartDays(r Report) ([]string, map[string]int) {
	seen := map[string]bool{}
	var days []string
	for _, s := range r.Daily {
		for _, p := range s.Points {
			if d := p.Day.UTC().Format(dayLayout); !seen[d] {
				seen[d] = true
				days = append(days, d)
			}
		}
	}
	slices.Sort(days)
	index := map[string]int{}
	for i, d := range days {
		index[d] = i
	}
	return days, index
}

// chartOf builds the daily cost chart's data from r.Daily; ok is false when no day has any cost, so
// that the page says so instead of drawing an empty chart.
func chartOf(r Report) (c chartData, ok bool) {
	hasCost := false
	for _, s := range r.Daily {
		for _, p := range s.Points {
			if round6(p.TotalCost()) != 0 {
				hasCost = true
			}
		}
	}
	if !hasCost {
		return chartData{}, false
	}
	days, index := chartDays(r)
	c = chartData{Currency: r.Currency, Days: days}
	for i, s := range r.Daily {
		cs := chartSeries{Group: displayGroup(s.Group), Color: chartColor(i), Costs: make([]float64, len(days))}
		for _, p := range s.Points {
			cs.Costs[index[p.Day.UTC().Format(dayLayout)]] += round6(p.TotalCost())
		}
		c.Series = append(c.Series, cs)
	}
	return c, true
}

// perTaskOf builds the cost per succeeded task chart's data from r.Daily: the series with at least
// one day with a succeeded task, each in the colour it has in the daily cost chart; ok is false when
// no task succeeded on any day.
func perTaskOf(r Report) (c perTaskData, ok bool) {
	days, index := chartDays(r)
	c = perTaskData{Currency: r.Currency, Days: days}
	for i, s := range r.Daily {
		ps := perTaskSeries{Group: displayGroup(s.Group), Color: chartColor(i), Values: make([]*float64, len(days))}
		hasPoint := false
		for _, p := range s.Points {
			if p.CostPerSucceededTask != nil {
				ps.Values[index[p.Day.UTC().Format(dayLayout)]] = round6p(p.CostPerSucceededTask)
				hasPoint = true
			}
		}
		if hasPoint {
			c.Series = append(c.Series, ps)
		}
	}
	if len(c.Series) == 0 {
		return perTaskData{}, false
	}
	return c, true
}

type htmlRow struct {
	Group, GPUHours, Cost, Utilization, IdleCost, Tokens, TokenCost, TotalCost, Tasks, PerTask string
}

type htmlPage struct {
	Title, Range, GroupTitle string
	// GroupName is the grouping in words, for headings ("cost center").
	GroupName          string
	Summary            string
	Rows               []htmlRow
	Total              htmlRow
	Unpriced           []string
	UnpricedModels     []string
	UtilizationUnknown string
	HasChart           bool
	Chart              chartData
	HasPerTask         bool
	PerTask            perTaskData
	YLabel             string
	PerTaskYLabel      string
}

func toHTMLRow(row Row, currency string) htmlRow {
	return htmlRow{
		Group:       displayGroup(row.Group),
		GPUHours:    fmtHours(row.GPUHours),
		Cost:        fmtMoney(row.Cost, currency),
		Utilization: fmtPercent(row.Utilization),
		IdleCost:    fmtOptMoney(row.IdleCost, currency),
		Tokens:      fmtTokens(row),
		TokenCost:   fmtMoney(row.TokenCost, currency),
		TotalCost:   fmtMoney(row.TotalCost, currency),
		Tasks:       fmtTasks(row),
		PerTask:     fmtPerTask(row.CostPerSucceededTask, currency),
	}
}

func renderHTML(w io.Writer, r Report) error {
	title := groupTitle(r.By)
	page := htmlPage{
		Title:         "Cost by " + strings.ToLower(title),
		Range:         r.Since.UTC().Format("2006-01-02 15:04") + " to " + r.Until.UTC().Format("2006-01-02 15:04") + " UTC",
		GroupTitle:    title,
		GroupName:     strings.ToLower(title),
		Total:         toHTMLRow(totalRow(r), r.Currency),
		YLabel:        "Cost",
		PerTaskYLabel: "Cost per succeeded task",
	}
	if r.Currency != "" {
		page.YLabel += " (" + r.Currency + ")"
		page.PerTaskYLabel += " (" + r.Currency + ")"
	}
	t := r.Total
	page.Summary = fmt.Sprintf("%s in all: GPUs %s for %s GPU-hours", fmtMoney(t.TotalCost, r.Currency), fmtMoney(t.Cost, r.Currency), fmtHours(t.GPUHours))
	if t.IdleCost != nil {
		page.Summary += fmt.Sprintf(" (%s utilized, %s idle)", fmtPercent(t.Utilization), fmtMoney(*t.IdleCost, r.Currency))
	}
	page.Summary += fmt.Sprintf(", tokens %s for %s in and %s out; %d tasks succeeded, %d failed", fmtMoney(t.TokenCost, r.Currency),
		fmtCount(t.TokensIn), fmtCount(t.TokensOut), t.TasksSucceeded, t.TasksFailed)
	if t.CostPerSucceededTask != nil {
		page.Summary += fmt.Sprintf(": %s per succeeded task", fmtMoney(*t.CostPerSucceededTask, r.Currency))
	}
	for _, row := range r.Rows {
		page.Rows = append(page.Rows, toHTMLRow(row, r.Currency))
	}
	for _, u := range r.Unpriced {
		page.Unpriced = append(page.Unpriced, fmt.Sprintf("%s: %s GPU-hours, no price in the table, not in the cost", u.Product, fmtHours(u.GPUHours)))
	}
	for _, u := range r.UnpricedModels {
		page.UnpricedModels = append(page.UnpricedModels, fmt.Sprintf("%s: %s tokens in, %s out, no token price in the table, not in the cost",
			u.Model, fmtCount(u.TokensIn), fmtCount(u.TokensOut)))
	}
	if !r.UtilizationKnown {
		page.UtilizationUnknown = utilizationUnknownNote + "."
	}
	if note := pricedByNote(r); note != "" {
		page.Range += "; " + note
	}
	page.Chart, page.HasChart = chartOf(r)
	page.PerTask, page.HasPerTask = perTaskOf(r)
	return htmlTemplate.Execute(w, page)
}

// htmlTemplate is the page. It must stay self-contained (no URL of any kind, not even the SVG
// namespace: the script takes it from the <svg> element the HTML parser made) and the script uses
// no // comments, so that a test can check the page for "//". The charts' hooks (the SVGs' ids and
// data-rendered, each bar's and point's class and data-*) are what the browser test checks. One
// script draws both charts, each in its own try, so that one failing leaves the other drawn.
var htmlTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
.range { color: #555; margin-top: 0; }
.summary { font-size: 1.2rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.total td { font-weight: bold; border-top: 2px solid #222; }
.note { color: #8a5a00; }
.explain { color: #555; }
.empty { color: #555; font-style: italic; font-size: 1.1rem; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1.2rem; }
.swatch { display: inline-block; width: 0.9rem; height: 0.9rem; margin-right: 0.4rem; vertical-align: middle; }
svg.chart { max-width: 100%; height: auto; }
svg.chart text { font-size: 11px; fill: #333; }
svg.chart .grid { stroke: #e5e5e5; }
svg.chart .axis { stroke: #333; }
svg.chart .line { fill: none; stroke-width: 2; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="range">{{.Range}}</p>
<p class="summary">{{.Summary}}</p>
{{- if .UtilizationUnknown}}
<p class="note" id="utilization-unknown">{{.UtilizationUnknown}}</p>
{{- end}}
<h2>Daily cost (GPUs and tokens), by whole UTC day</h2>
{{- if .HasChart}}
<svg id="daily-cost-chart" class="chart" width="960" height="380" viewBox="0 0 960 380" role="img" aria-label="{{.Title}}, per day"></svg>
<ul class="legend" id="daily-cost-legend">
{{- range .Chart.Series}}
<li><span class="swatch" style="background-color: {{.Color}}"></span>{{.Group}}</li>
{{- end}}
</ul>
{{- else}}
<p class="empty" id="daily-cost-empty">no cost in this range</p>
{{- end}}
<h2>Cost per succeeded task, by whole UTC day</h2>
<p class="explain">Each day's cost (GPUs and tokens) divided by the tasks that succeeded that day, the failed ones' cost included; a day without a succeeded task has no point.</p>
{{- if .HasPerTask}}
<svg id="cost-per-task-chart" class="chart" width="960" height="380" viewBox="0 0 960 380" role="img" aria-label="Cost per succeeded task by {{.GroupName}}, per day"></svg>
<ul class="legend" id="cost-per-task-legend">
{{- range .PerTask.Series}}
<li><span class="swatch" style="background-color: {{.Color}}"></span>{{.Group}}</li>
{{- end}}
</ul>
{{- else}}
<p class="empty" id="cost-per-task-empty">no task succeeded in this range</p>
{{- end}}
{{- if or .HasChart .HasPerTask}}
<noscript><p class="note">The charts need JavaScript; the table below has the figures.</p></noscript>
<script>
(function () {
  "use strict";
  var W = 960, H = 380, left = 80, right = 20, top = 20, bottom = 60;
  var plotW = W - left - right, plotH = H - top - bottom;
  function maker(svg) {
    var ns = svg.namespaceURI;
    return function (name, attrs, text, parent) {
      var e = document.createElementNS(ns, name);
      for (var k in attrs) { e.setAttribute(k, String(attrs[k])); }
      if (text !== undefined) { e.textContent = text; }
      (parent || svg).appendChild(e);
      return e;
    };
  }
  function axes(el, days, max, yLabel) {
    if (!(max > 0)) { max = 1; }
    var raw = max / 5, pow = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / pow;
    var step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * pow;
    var yTop = Math.ceil(max / step) * step;
    var decimals = Math.max(0, -Math.floor(Math.log10(step)));
    function y(v) { return top + plotH - v / yTop * plotH; }
    for (var v = 0; v <= yTop + step / 2; v += step) {
      el("line", {"class": "grid", x1: left, x2: left + plotW, y1: y(v), y2: y(v)});
      el("text", {x: left - 6, y: y(v) + 4, "text-anchor": "end"}, v.toFixed(decimals));
    }
    el("line", {"class": "axis", x1: left, x2: left, y1: top, y2: top + plotH});
    el("line", {"class": "axis", x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH});
    var n = days.length, band = plotW / n;
    var every = Math.max(1, Math.ceil(n / Math.floor(plotW / 75)));
    for (var d = 0; d < n; d++) {
      if (d % every === 0) {
        el("text", {x: left + d * band + band / 2, y: top + plotH + 16, "text-anchor": "middle"}, days[d]);
      }
    }
    el("text", {x: left + plotW / 2, y: H - 12, "text-anchor": "middle"}, "Day (UTC)");
    el("text", {x: 16, y: top + plotH / 2, "text-anchor": "middle", transform: "rotate(-90 16 " + (top + plotH / 2) + ")"}, yLabel);
    return {y: y, band: band};
  }
  function money(v, currency) { return v.toFixed(2) + (currency ? " " + currency : ""); }
  function drawDaily(svg, data, yLabel) {
    var el = maker(svg), n = data.days.length, max = 0, d, s;
    for (d = 0; d < n; d++) {
      var sum = 0;
      for (s = 0; s < data.series.length; s++) { sum += data.series[s].costs[d]; }
      if (sum > max) { max = sum; }
    }
    var ax = axes(el, data.days, max, yLabel), y = ax.y, band = ax.band, barW = Math.max(1, band * 0.7);
    for (d = 0; d < n; d++) {
      var x = left + d * band + (band - barW) / 2, base = 0;
      for (s = 0; s < data.series.length; s++) {
        var ser = data.series[s], c = ser.costs[d];
        if (c === 0) { continue; }
        var bar = el("rect", {"class": "bar", x: x, y: y(base + c), width: barW, height: y(base) - y(base + c),
          fill: ser.color, "data-group": ser.group, "data-day": data.days[d], "data-cost": String(c)});
        el("title", {}, ser.group + ", " + data.days[d] + ": " + money(c, data.currency), bar);
        base += c;
      }
    }
  }
  function drawPerTask(svg, data, yLabel) {
    var el = maker(svg), n = data.days.length, max = 0, d, s;
    for (s = 0; s < data.series.length; s++) {
      for (d = 0; d < n; d++) {
        var v = data.series[s].values[d];
        if (v !== null && v > max) { max = v; }
      }
    }
    var ax = axes(el, data.days, max, yLabel), y = ax.y, band = ax.band;
    function x(d) { return left + d * band + band / 2; }
    for (s = 0; s < data.series.length; s++) {
      var ser = data.series[s], path = "", prev = false;
      for (d = 0; d < n; d++) {
        var val = ser.values[d];
        if (val === null) { prev = false; continue; }
        path += (prev ? " L " : " M ") + x(d) + " " + y(val);
        prev = true;
      }
      el("path", {"class": "line", d: path.trim(), stroke: ser.color, "data-group": ser.group});
      for (d = 0; d < n; d++) {
        var pv = ser.values[d];
        if (pv === null) { continue; }
        var pt = el("circle", {"class": "point", cx: x(d), cy: y(pv), r: 4, fill: ser.color,
          "data-group": ser.group, "data-day": data.days[d], "data-cost-per-task": String(pv)});
        el("title", {}, ser.group + ", " + data.days[d] + ": " + money(pv, data.currency) + " per succeeded task", pt);
      }
    }
  }
  function run(id, draw, data, yLabel) {
    var svg = document.getElementById(id);
    if (!svg) { return; }
    try {
      draw(svg, data, yLabel);
    } catch (e) {
      /* Say so on the page (a browser test prints it from the DOM), then fail loudly. */
      var p = document.createElement("p");
      p.className = "note";
      p.id = id + "-error";
      p.textContent = "The chart could not be drawn: " + e;
      svg.parentNode.insertBefore(p, svg);
      setTimeout(function () { throw e; });
      return;
    }
    svg.setAttribute("data-rendered", "true");
  }
  {{- if .HasChart}}
  run("daily-cost-chart", drawDaily, {{.Chart}}, {{.YLabel}});
  {{- end}}
  {{- if .HasPerTask}}
  run("cost-per-task-chart", drawPerTask, {{.PerTask}}, {{.PerTaskYLabel}});
  {{- end}}
})();
</script>
{{- end}}
<h2>By {{.GroupName}}</h2>
<table id="cost-table">
<thead><tr><th>{{.GroupTitle}}</th><th>GPU-hours</th><th>GPU cost</th><th>Utilization</th><th>Idle cost</th><th>Tokens in/out</th><th>Token cost</th><th>Total cost</th><th>Tasks succeeded/failed</th><th>Cost per succeeded task</th></tr></thead>
<tbody>
{{- range .Rows}}
<tr><td>{{.Group}}</td><td>{{.GPUHours}}</td><td>{{.Cost}}</td><td>{{.Utilization}}</td><td>{{.IdleCost}}</td><td>{{.Tokens}}</td><td>{{.TokenCost}}</td><td>{{.TotalCost}}</td><td>{{.Tasks}}</td><td>{{.PerTask}}</td></tr>
{{- end}}
</tbody>
<tfoot>
<tr class="total"><td>{{.Total.Group}}</td><td>{{.Total.GPUHours}}</td><td>{{.Total.Cost}}</td><td>{{.Total.Utilization}}</td><td>{{.Total.IdleCost}}</td><td>{{.Total.Tokens}}</td><td>{{.Total.TokenCost}}</td><td>{{.Total.TotalCost}}</td><td>{{.Total.Tasks}}</td><td>{{.Total.PerTask}}</td></tr>
</tfoot>
</table>
{{- if .Unpriced}}
<h2>Unpriced GPUs</h2>
<p class="note">These GPU products have no price in the price table: their GPU-hours are counted, their cost is not.</p>
<ul id="unpriced">
{{- range .Unpriced}}
<li>{{.}}</li>
{{- end}}
</ul>
{{- end}}
{{- if .UnpricedModels}}
<h2>Unpriced models</h2>
<p class="note">These models have no token price in the price table: their tokens are counted, their cost is not (nor in the cost per succeeded task).</p>
<ul id="unpriced-models">
{{- range .UnpricedModels}}
<li>{{.}}</li>
{{- end}}
</ul>
{{- end}}
</body>
</html>
`))
