package cost

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"
	"k8s.io/utils/ptr"
)

// Querier is the part of Prometheus' HTTP API the report reads (v1.API has it).
type Querier interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, error)
	QueryRange(ctx context.Context, query string, r v1.Range, opts ...v1.Option) (model.Value, v1.Warnings, error)
}

// Options are what a report covers.
type Options struct {
	Since, Until time.Time
	By           string
	// Prices is where the prices come from: PricedByTable, PricedByOpenCost, or "" (auto): OpenCost's
	// node_gpu_hourly_cost when this Prometheus has it for the range and for the nodes the GPU agent
	// reports, else the table.
	Prices string
	// OpenCostCurrency is the currency of OpenCost's prices (its CURRENCY_CODE; default USD).
	OpenCostCurrency string
	// Recorded reads the series of config/prometheus/agentfleet-rules.yaml instead of the scraped
	// ones: for long ranges at short scrape intervals, where the rules ran for the whole range.
	Recorded bool
	// Progress, when set, is told before each query: its number, the number of queries, what it reads.
	Progress func(n, of int, what string)
}

// ErrNoData is returned when the range holds no GPU usage at all.
var ErrNoData = errors.New("no GPU usage recorded")

// queries are the report's PromQL. Each instant query is evaluated once, at Until, over the whole
// range (the %s), by the labels that identify a fleet's GPU series; the grouping is done here, so
// that every --by reads the same numbers. Utilization is the mean of the GPU agent's samples of the
// GPUs a fleet held (sum over count): a GPU sampled more often does not weigh more than the time it
// ran, and no scrape interval needs to be known.
type queries struct {
	seconds, cost, unpriced, utilSum, utilCount string
	// OpenCost prices a node's GPU per hour; the GPU agents say which product each node has (NVML's
	// name, which GPU feature discovery's nvidia.com/gpu.product spells with dashes for spaces). A
	// product's price is the mean over its nodes and over the range. topk by node: a node the agents
	// report under two names (mixed GPUs) is priced as one of them, rather than failing the join.
	openCostPresent, openCostPrice string
	// At the end of each UTC day, over the day before.
	dailyCost, dailySeconds string
}

// rawQueries read the series as scraped.
var rawQueries = queries{
	seconds:         `sum by (namespace, fleet, cost_center, gpu_product) (increase(agentfleet_gpu_seconds_total[%s]))`,
	cost:            `sum by (namespace, fleet, cost_center, gpu_product, currency) (increase(agentfleet_gpu_cost_total[%s]))`,
	unpriced:        `sum by (namespace, fleet, cost_center, gpu_product) (increase(agentfleet_gpu_unpriced_seconds_total[%s]))`,
	utilSum:         `sum by (namespace, fleet) (sum_over_time(agentfleet_gpu_utilization_ratio{fleet!=""}[%s]))`,
	utilCount:       `sum by (namespace, fleet) (count_over_time(agentfleet_gpu_utilization_ratio{fleet!=""}[%s]))`,
	openCostPresent: `count(count_over_time(node_gpu_hourly_cost[%s]))`,
	openCostPrice:   `avg by (product) (avg_over_time(node_gpu_hourly_cost[%[1]s]) * on (node) group_left (product) topk by (node) (1, group by (node, product) (last_over_time(agentfleet_gpu_memory_total_bytes[%[1]s]))))`,
	dailyCost:       `sum by (namespace, fleet, cost_center, gpu_product) (increase(agentfleet_gpu_cost_total[1d]))`,
	dailySeconds:    `sum by (namespace, fleet, cost_center, gpu_product) (increase(agentfleet_gpu_seconds_total[1d]))`,
}

// recordedQueries read the series config/prometheus/agentfleet-rules.yaml records every 5 minutes:
// the same figures from a sample per 5 minutes, whatever the scrape interval.
var recordedQueries = queries{
	seconds:         `sum by (namespace, fleet, cost_center, gpu_product) (increase(fleet:agentfleet_gpu_seconds_total:sum[%s]))`,
	cost:            `sum by (namespace, fleet, cost_center, gpu_product, currency) (increase(fleet:agentfleet_gpu_cost_total:sum[%s]))`,
	unpriced:        `sum by (namespace, fleet, cost_center, gpu_product) (increase(fleet:agentfleet_gpu_unpriced_seconds_total:sum[%s]))`,
	utilSum:         `sum by (namespace, fleet) (sum_over_time(fleet:agentfleet_gpu_utilization_ratio:sum_over_time5m[%s]))`,
	utilCount:       `sum by (namespace, fleet) (sum_over_time(fleet:agentfleet_gpu_utilization_ratio:count_over_time5m[%s]))`,
	openCostPresent: `count(count_over_time(node:node_gpu_hourly_cost:avg_over_time5m[%s]))`,
	openCostPrice:   `avg by (product) (avg_over_time(node:node_gpu_hourly_cost:avg_over_time5m[%[1]s]) * on (node) group_left (product) topk by (node) (1, group by (node, product) (last_over_time(node:agentfleet_gpu_product:group[%[1]s]))))`,
	dailyCost:       `sum by (namespace, fleet, cost_center, gpu_product) (increase(fleet:agentfleet_gpu_cost_total:sum[1d]))`,
	dailySeconds:    `sum by (namespace, fleet, cost_center, gpu_product) (increase(fleet:agentfleet_gpu_seconds_total:sum[1d]))`,
}

// Accepted Options.Prices values, "" (auto) aside.
var PriceSources = []string{PricedByTable, PricedByOpenCost}

const day = 24 * time.Hour

// Compute reads a report from Prometheus. Its queries run at once, in two rounds: the GPU-seconds,
// the utilization and OpenCost's prices; then the costs, by the table or by OpenCost.
func Compute(ctx context.Context, q Querier, o Options) (Report, error) {
	if !slices.Contains(GroupBys, o.By) {
		return Report{}, fmt.Errorf("unknown group %q: one of %s", o.By, strings.Join(GroupBys, ", "))
	}
	if o.Prices != "" && !slices.Contains(PriceSources, o.Prices) {
		return Report{}, fmt.Errorf("unknown price source %q: one of %s", o.Prices, strings.Join(PriceSources, ", "))
	}
	if !o.Since.Before(o.Until) {
		return Report{}, fmt.Errorf("empty range: %s is not before %s", o.Since.UTC().Format(time.RFC3339), o.Until.UTC().Format(time.RFC3339))
	}
	rng := model.Duration(o.Until.Sub(o.Since).Truncate(time.Second)).String()
	qs := rawQueries
	if o.Recorded {
		qs = recordedQueries
	}
	if o.Recorded {
		if err := checkRecorded(ctx, q, o); err != nil {
			return Report{}, err
		}
	}
	p := &progress{report: o.Progress, of: 5}
	if o.Prices != PricedByTable {
		p.of++
	}

	var seconds, utilSum, utilCount, ocPrices model.Vector
	round := []query{
		{"GPU-seconds", fmt.Sprintf(qs.seconds, rng), &seconds},
		{"GPU utilization", fmt.Sprintf(qs.utilSum, rng), &utilSum},
		{"GPU utilization samples", fmt.Sprintf(qs.utilCount, rng), &utilCount},
	}
	if o.Prices != PricedByTable {
		round = append(round, query{"OpenCost's GPU prices", fmt.Sprintf(qs.openCostPrice, rng), &ocPrices})
	}
	if err := runQueries(ctx, q, o, p, round); err != nil {
		return Report{}, err
	}
	if len(seconds) == 0 {
		if o.Recorded {
			return Report{}, fmt.Errorf("%w from %s to %s: no fleet:agentfleet_gpu_seconds_total:sum series in that range (does this Prometheus load config/prometheus/agentfleet-rules.yaml?)",
				ErrNoData, o.Since.UTC().Format(time.RFC3339), o.Until.UTC().Format(time.RFC3339))
		}
		return Report{}, fmt.Errorf("%w from %s to %s: no agentfleet_gpu_seconds_total series in that range (does this Prometheus scrape the AgentFleet operator?)",
			ErrNoData, o.Since.UTC().Format(time.RFC3339), o.Until.UTC().Format(time.RFC3339))
	}
	openCost := productPrices{}
	for _, s := range ocPrices {
		openCost[strings.ReplaceAll(string(s.Metric["product"]), " ", "-")] = float64(s.Value)
	}
	if o.Prices == PricedByOpenCost && len(openCost) == 0 {
		return Report{}, openCostMissing(ctx, q, o, qs, rng)
	}

	// The table's costs always (OpenCost may not price every product: those keep the table's price).
	var costs, unpriced model.Vector
	var daily, secondsByDay model.Matrix
	round = []query{
		{"GPU cost", fmt.Sprintf(qs.cost, rng), &costs},
		{"unpriced GPU-seconds", fmt.Sprintf(qs.unpriced, rng), &unpriced},
		{"daily cost", qs.dailyCost, &daily},
	}
	if len(openCost) > 0 {
		round = append(round, query{"daily GPU-seconds", qs.dailySeconds, &secondsByDay})
	}
	if err := runQueries(ctx, q, o, p, round); err != nil {
		return Report{}, err
	}
	pricedBy := PricedByTable
	if len(openCost) > 0 {
		var fromTable bool
		costs, unpriced, daily, fromTable = openCost.merge(seconds, costs, unpriced, secondsByDay, daily, cmp.Or(o.OpenCostCurrency, "USD"))
		pricedBy = PricedByOpenCost
		if fromTable {
			pricedBy = PricedByOpenCostAndTable
		}
	}
	r, err := assemble(o, seconds, costs, unpriced, utilSum, utilCount, daily)
	r.PricedBy = pricedBy
	return r, err
}

// query is one PromQL query and where its result goes: a *model.Vector is an instant query at Until,
// a *model.Matrix a query at the end of each UTC day of the range (dailyRange).
type query struct {
	what, promql string
	into         any
}

// progress tells how many of the report's queries are done.
type progress struct {
	mu       sync.Mutex
	report   func(n, of int, what string)
	done, of int
}

func (p *progress) finished(what string) {
	if p.report == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	p.report(p.done, max(p.of, p.done), what)
}

// runQueries runs queries at once; the first error cancels the others.
func runQueries(ctx context.Context, q Querier, o Options, p *progress, queries []query) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, qr := range queries {
		g.Go(func() error {
			var err error
			switch into := qr.into.(type) {
			case *model.Vector:
				*into, err = instant(ctx, q, qr.promql, o.Until)
			case *model.Matrix:
				*into, err = dailyRange(ctx, q, qr.promql, o)
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", qr.what, err)
			}
			p.finished(qr.what)
			return nil
		})
	}
	return g.Wait()
}

// checkRecorded refuses a recorded report whose range starts before the recording rules ran: the
// recorded series would miss the start of the range, and the report would say less than was spent.
// It compares, 10 minutes into the range, the scraped GPU-seconds with the recorded ones.
func checkRecorded(ctx context.Context, q Querier, o Options) error {
	at := o.Since.Add(10 * time.Minute)
	if !at.Before(o.Until) {
		return nil
	}
	raw, err := instant(ctx, q, `count(last_over_time(agentfleet_gpu_seconds_total[10m]))`, at)
	if err != nil {
		return fmt.Errorf("checking the recorded series cover the range: %w", err)
	}
	recorded, err := instant(ctx, q, `count(last_over_time(fleet:agentfleet_gpu_seconds_total:sum[10m]))`, at)
	if err != nil {
		return fmt.Errorf("checking the recorded series cover the range: %w", err)
	}
	if len(raw) > 0 && raw[0].Value > 0 && (len(recorded) == 0 || recorded[0].Value == 0) {
		return fmt.Errorf("the recording rules had not run by %s, the start of the range, while GPU-seconds were scraped: "+
			"report without --recorded, or from a later --since", o.Since.UTC().Format(time.RFC3339))
	}
	return nil
}

// openCostMissing says why OpenCost, asked for, priced nothing.
func openCostMissing(ctx context.Context, q Querier, o Options, qs queries, rng string) error {
	present, err := instant(ctx, q, fmt.Sprintf(qs.openCostPresent, rng), o.Until)
	if err != nil {
		return fmt.Errorf("reading OpenCost's node_gpu_hourly_cost: %w", err)
	}
	if len(present) == 0 || present[0].Value == 0 {
		return fmt.Errorf("no OpenCost node_gpu_hourly_cost in the range: does this Prometheus scrape OpenCost?")
	}
	return fmt.Errorf("OpenCost's node_gpu_hourly_cost names no node the GPU agents report (agentfleet_gpu_memory_total_bytes): the GPU product of its nodes is unknown")
}

// productPrices are GPU products' prices per GPU-hour.
type productPrices map[string]float64

// merge prices the GPU-seconds of the products OpenCost prices at its price (none of them unpriced),
// and keeps the table's cost, unpriced seconds and daily cost for the others; fromTable says whether
// any GPU-seconds were priced by the table. A report has one currency: the table's costs for the
// other products must be in OpenCost's (assemble refuses two).
func (p productPrices) merge(seconds, tableCosts, tableUnpriced model.Vector, secondsByDay, tableDaily model.Matrix, currency string) (costs, unpriced model.Vector, daily model.Matrix, fromTable bool) {
	priced := func(m model.Metric) (float64, bool) {
		hourly, ok := p[string(m["gpu_product"])]
		return hourly, ok
	}
	for _, s := range seconds {
		if hourly, ok := priced(s.Metric); ok {
			m := s.Metric.Clone()
			m["currency"] = model.LabelValue(currency)
			costs = append(costs, &model.Sample{Metric: m, Value: model.SampleValue(float64(s.Value) / 3600 * hourly), Timestamp: s.Timestamp})
		}
	}
	for _, s := range tableCosts {
		if _, ok := priced(s.Metric); !ok {
			costs = append(costs, s)
			fromTable = fromTable || s.Value > 0
		}
	}
	for _, s := range tableUnpriced {
		if _, ok := priced(s.Metric); !ok {
			unpriced = append(unpriced, s)
		}
	}
	for _, s := range secondsByDay {
		if hourly, ok := priced(s.Metric); ok {
			c := &model.SampleStream{Metric: s.Metric}
			for _, v := range s.Values {
				c.Values = append(c.Values, model.SamplePair{Timestamp: v.Timestamp, Value: model.SampleValue(float64(v.Value) / 3600 * hourly)})
			}
			daily = append(daily, c)
		}
	}
	for _, s := range tableDaily {
		if _, ok := priced(s.Metric); !ok {
			daily = append(daily, s)
		}
	}
	if unpriced == nil && tableUnpriced != nil {
		unpriced = model.Vector{} // OpenCost priced every product: none unpriced, not unknown
	}
	return costs, unpriced, daily, fromTable
}

func instant(ctx context.Context, q Querier, query string, at time.Time) (model.Vector, error) {
	v, _, err := q.Query(ctx, query, at)
	if err != nil {
		return nil, err
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s: got a %s, want a vector", query, v.Type())
	}
	return vec, nil
}

// dailyRange evaluates a query at the end of each whole UTC day the range touches: with a [1d]
// range, each point is the day before it.
func dailyRange(ctx context.Context, q Querier, query string, o Options) (model.Matrix, error) {
	first := o.Since.UTC().Truncate(day)
	last := o.Until.Add(-time.Nanosecond).UTC().Truncate(day)
	v, _, err := q.QueryRange(ctx, query, v1.Range{Start: first.Add(day), End: last.Add(day), Step: day})
	if err != nil {
		return nil, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("got a %s, want a matrix", v.Type())
	}
	return m, nil
}

type fleetKey struct{ namespace, fleet string }

// assemble groups the per-fleet results into a report. It is pure: the tests feed it vectors.
//
// unpricedSeconds are the GPU-seconds accrued while unpriced, by series; nil (an operator that does
// not export them) means a series without any cost sample is unpriced as a whole.
func assemble(o Options, seconds, costs, unpricedSeconds, utilSum, utilCount model.Vector, daily model.Matrix) (Report, error) {
	r := Report{Since: o.Since, Until: o.Until, By: o.By}
	rows := map[string]*Row{}
	row := func(g string) *Row {
		if rows[g] == nil {
			rows[g] = &Row{Group: g}
		}
		return rows[g]
	}
	group := func(m model.Metric) string {
		switch o.By {
		case ByNamespace:
			return string(m["namespace"])
		case ByFleet:
			return string(m["namespace"]) + "/" + string(m["fleet"])
		}
		return string(m["cost_center"])
	}
	fleetGroup := map[fleetKey]string{}
	fleetGroupSeconds := map[fleetKey]map[string]float64{}
	fleetSeconds := map[fleetKey]float64{}
	priced := map[string]bool{} // series (without currency) that have a cost
	currencies := map[string]bool{}
	for _, s := range costs {
		currencies[string(s.Metric["currency"])] = true
		m := s.Metric.Clone()
		delete(m, "currency")
		priced[m.String()] = true
		row(group(s.Metric)).Cost += float64(s.Value)
	}
	if len(currencies) > 1 {
		return Report{}, fmt.Errorf("the costs are in several currencies (%s): a report sums one; make the price table's currency one",
			strings.Join(slices.Sorted(maps.Keys(currencies)), ", "))
	}
	for c := range currencies {
		r.Currency = c
	}
	unpriced := map[string]float64{}
	addUnpriced := func(m model.Metric, hours float64) {
		row(group(m)).UnpricedGPUHours += hours
		unpriced[string(m["gpu_product"])] += hours
	}
	for _, s := range unpricedSeconds {
		if s.Value > 0 {
			addUnpriced(s.Metric, float64(s.Value)/3600)
		}
	}
	for _, s := range seconds {
		g := group(s.Metric)
		hours := float64(s.Value) / 3600
		row(g).GPUHours += hours
		if unpricedSeconds == nil && !priced[s.Metric.String()] {
			addUnpriced(s.Metric, hours)
		}
		k := fleetKey{string(s.Metric["namespace"]), string(s.Metric["fleet"])}
		fleetSeconds[k] += float64(s.Value)
		if fleetGroupSeconds[k] == nil {
			fleetGroupSeconds[k] = map[string]float64{}
		}
		fleetGroupSeconds[k][g] += float64(s.Value)
	}
	// A fleet's utilization goes to the group that held most of its GPU-hours, summed over its
	// series (a fleet that changed cost center within the range counts under the one it spent
	// longest in); ties go to the first group by name.
	for k, byGroup := range fleetGroupSeconds {
		best, most := "", -1.0
		for _, g := range slices.Sorted(maps.Keys(byGroup)) {
			if byGroup[g] > most {
				best, most = g, byGroup[g]
			}
		}
		fleetGroup[k] = best
	}
	type util struct{ sum, count float64 }
	utils := map[string]*util{}
	var total util
	counts := map[fleetKey]float64{}
	for _, s := range utilCount {
		counts[fleetKey{string(s.Metric["namespace"]), string(s.Metric["fleet"])}] = float64(s.Value)
	}
	for _, s := range utilSum {
		k := fleetKey{string(s.Metric["namespace"]), string(s.Metric["fleet"])}
		g, ok := fleetGroup[k]
		if !ok || counts[k] == 0 {
			continue // samples of a fleet with no GPU-seconds in range: nothing to compare them with
		}
		if utils[g] == nil {
			utils[g] = &util{}
		}
		utils[g].sum += float64(s.Value)
		utils[g].count += counts[k]
		total.sum += float64(s.Value)
		total.count += counts[k]
	}
	// A group's utilization is known only when the agent reports every GPU fleet in it: the mean of
	// some of its fleets would pass for the group's.
	partial := map[string]bool{}
	for k, g := range fleetGroup {
		if counts[k] == 0 && fleetSeconds[k] > 0 {
			partial[g] = true
		}
	}
	r.UtilizationKnown = total.count > 0
	r.Total.Group = "TOTAL"
	for g, rw := range rows {
		if u := utils[g]; u != nil && !partial[g] {
			rw.Utilization = ptr.To(u.sum / u.count)
			rw.IdleCost = ptr.To(rw.Cost * (1 - *rw.Utilization))
			r.Total.IdleCost = ptr.To(ptr.Deref(r.Total.IdleCost, 0) + *rw.IdleCost)
		}
		r.Total.GPUHours += rw.GPUHours
		r.Total.Cost += rw.Cost
		r.Total.UnpricedGPUHours += rw.UnpricedGPUHours
		r.Rows = append(r.Rows, *rw)
	}
	// The total's utilization and idle cost are known only when every group's are: a total of the
	// known groups alone would pass for the whole.
	allKnown := total.count > 0
	for _, rw := range r.Rows {
		if rw.GPUHours > 0 && rw.Utilization == nil {
			allKnown = false
		}
	}
	if allKnown {
		r.Total.Utilization = ptr.To(total.sum / total.count)
	} else {
		r.Total.IdleCost = nil
	}
	slices.SortFunc(r.Rows, func(a, b Row) int {
		return cmp.Or(cmp.Compare(b.Cost, a.Cost), cmp.Compare(a.Group, b.Group))
	})
	for _, product := range slices.Sorted(maps.Keys(unpriced)) {
		r.Unpriced = append(r.Unpriced, Unpriced{Product: product, GPUHours: unpriced[product]})
	}
	r.Daily = dailySeries(o, r.Rows, daily, group)
	return r, nil
}

// dailySeries is a series per row, in the rows' order, with a point for every UTC day the range
// touches.
func dailySeries(o Options, rows []Row, daily model.Matrix, group func(model.Metric) string) []Series {
	var days []time.Time
	for d := o.Since.UTC().Truncate(day); d.Before(o.Until); d = d.Add(day) {
		days = append(days, d)
	}
	costs := map[string]map[time.Time]float64{}
	for _, s := range daily {
		g := group(s.Metric)
		if costs[g] == nil {
			costs[g] = map[time.Time]float64{}
		}
		for _, p := range s.Values {
			costs[g][p.Timestamp.Time().UTC().Add(-day)] += float64(p.Value) // several products of a group add up
		}
	}
	series := make([]Series, 0, len(rows))
	for _, rw := range rows {
		s := Series{Group: rw.Group, Points: make([]Point, len(days))}
		for i, d := range days {
			s.Points[i] = Point{Day: d, Cost: costs[rw.Group][d]}
		}
		series = append(series, s)
	}
	return series
}
