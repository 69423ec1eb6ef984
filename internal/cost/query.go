package cost

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
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

// ErrNoData is returned when the range holds no GPU usage, no tokens and no tasks at all.
var ErrNoData = errors.New("no GPU usage, tokens or tasks recorded")

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
	// The ledger of the agents' heartbeats: tasks by outcome, tokens by model and direction, priced
	// (always by the operator's table) and unpriced. These series have no cost_center: fleetInfo says
	// which cost center each fleet had, and for how many samples of the range.
	tasks, tokens, tokenCost, tokensUnpriced, fleetInfo string
	// At the end of each UTC day, over the day before, by fleet.
	dailyTokenCost, dailySucceeded string
	// coverage pairs a scraped series with the one recorded from it, for checkRecorded.
	coverage [][2]string
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
	tasks:           `sum by (namespace, fleet, outcome) (increase(agentfleet_tasks_total[%s]))`,
	tokens:          `sum by (namespace, fleet, model, direction) (increase(agentfleet_tokens_total[%s]))`,
	tokenCost:       `sum by (namespace, fleet, model, direction, currency) (increase(agentfleet_token_cost_total[%s]))`,
	tokensUnpriced:  `sum by (namespace, fleet, model, direction) (increase(agentfleet_tokens_unpriced_total[%s]))`,
	fleetInfo:       `sum by (namespace, fleet, cost_center) (count_over_time(agentfleet_fleet_info[%s]))`,
	dailyTokenCost:  `sum by (namespace, fleet) (increase(agentfleet_token_cost_total[1d]))`,
	dailySucceeded:  `sum by (namespace, fleet) (increase(agentfleet_tasks_total{outcome="succeeded"}[1d]))`,
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
	tasks:           `sum by (namespace, fleet, outcome) (increase(fleet:agentfleet_tasks_total:sum[%s]))`,
	tokens:          `sum by (namespace, fleet, model, direction) (increase(fleet:agentfleet_tokens_total:sum[%s]))`,
	tokenCost:       `sum by (namespace, fleet, model, direction, currency) (increase(fleet:agentfleet_token_cost_total:sum[%s]))`,
	tokensUnpriced:  `sum by (namespace, fleet, model, direction) (increase(fleet:agentfleet_tokens_unpriced_total:sum[%s]))`,
	fleetInfo:       `sum by (namespace, fleet, cost_center) (count_over_time(fleet:agentfleet_fleet_info:max[%s]))`,
	dailyTokenCost:  `sum by (namespace, fleet) (increase(fleet:agentfleet_token_cost_total:sum[1d]))`,
	dailySucceeded:  `sum by (namespace, fleet) (increase(fleet:agentfleet_tasks_total:sum{outcome="succeeded"}[1d]))`,
	// Tokens as well as GPU-seconds: fleets on a hosted model hold no GPU, and a rules file from
	// before the token rules records GPU-seconds only.
	coverage: [][2]string{
		{"agentfleet_gpu_seconds_total", "fleet:agentfleet_gpu_seconds_total:sum"},
		{"agentfleet_tokens_total", "fleet:agentfleet_tokens_total:sum"},
	},
}

// Accepted Options.Prices values, "" (auto) aside.
var PriceSources = []string{PricedByTable, PricedByOpenCost}

const day = 24 * time.Hour

// Compute reads a report from Prometheus. Its queries run at once, in two rounds: the GPU-seconds,
// the utilization, OpenCost's prices, the tasks and the tokens; then the GPU costs, by the table or by
// OpenCost, and the daily figures.
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
		if err := checkRecorded(ctx, q, o, qs); err != nil {
			return Report{}, err
		}
	}

	var in results
	var ocPrices model.Vector
	round := []query{
		{"GPU-seconds", fmt.Sprintf(qs.seconds, rng), &in.seconds},
		{"GPU utilization", fmt.Sprintf(qs.utilSum, rng), &in.utilSum},
		{"GPU utilization samples", fmt.Sprintf(qs.utilCount, rng), &in.utilCount},
		{"tasks", fmt.Sprintf(qs.tasks, rng), &in.tasks},
		{"tokens", fmt.Sprintf(qs.tokens, rng), &in.tokens},
		{"token cost", fmt.Sprintf(qs.tokenCost, rng), &in.tokenCosts},
		{"unpriced tokens", fmt.Sprintf(qs.tokensUnpriced, rng), &in.tokensUnpriced},
	}
	if o.By == ByCostCenter {
		round = append(round, query{"fleets' cost centers", fmt.Sprintf(qs.fleetInfo, rng), &in.fleetInfo})
	}
	if o.Prices != PricedByTable {
		round = append(round, query{"OpenCost's GPU prices", fmt.Sprintf(qs.openCostPrice, rng), &ocPrices})
	}
	// The table's costs always (OpenCost may not price every product: those keep the table's price).
	var secondsByDay model.Matrix
	round2 := []query{
		{"GPU cost", fmt.Sprintf(qs.cost, rng), &in.costs},
		{"unpriced GPU-seconds", fmt.Sprintf(qs.unpriced, rng), &in.unpricedSeconds},
		{"daily GPU cost", qs.dailyCost, &in.daily},
		{"daily token cost", qs.dailyTokenCost, &in.dailyTokenCost},
		{"daily succeeded tasks", qs.dailySucceeded, &in.dailySucceeded},
	}
	p := &progress{report: o.Progress, of: len(round) + len(round2)}
	if err := runQueries(ctx, q, o, p, round); err != nil {
		return Report{}, err
	}
	if len(in.seconds) == 0 && len(in.tokens) == 0 && len(in.tasks) == 0 {
		if o.Recorded {
			return Report{}, fmt.Errorf("%w from %s to %s: no fleet:agentfleet_gpu_seconds_total:sum, fleet:agentfleet_tokens_total:sum or fleet:agentfleet_tasks_total:sum series in that range (does this Prometheus load config/prometheus/agentfleet-rules.yaml?)",
				ErrNoData, o.Since.UTC().Format(time.RFC3339), o.Until.UTC().Format(time.RFC3339))
		}
		return Report{}, fmt.Errorf("%w from %s to %s: no agentfleet_gpu_seconds_total, agentfleet_tokens_total or agentfleet_tasks_total series in that range (does this Prometheus scrape the AgentFleet operator?)",
			ErrNoData, o.Since.UTC().Format(time.RFC3339), o.Until.UTC().Format(time.RFC3339))
	}
	openCost := productPrices{}
	for _, s := range ocPrices {
		openCost[strings.ReplaceAll(string(s.Metric["product"]), " ", "-")] = float64(s.Value)
	}
	if o.Prices == PricedByOpenCost && len(openCost) == 0 {
		return Report{}, openCostMissing(ctx, q, o, qs, rng)
	}

	if len(openCost) > 0 {
		round2 = append(round2, query{"daily GPU-seconds", qs.dailySeconds, &secondsByDay})
	}
	if err := runQueries(ctx, q, o, p, round2); err != nil {
		return Report{}, err
	}
	pricedBy := PricedByTable
	if len(openCost) > 0 {
		var fromTable bool
		in.costs, in.unpricedSeconds, in.daily, fromTable = openCost.merge(in.seconds, in.costs, in.unpricedSeconds, secondsByDay, in.daily, cmp.Or(o.OpenCostCurrency, "USD"))
		pricedBy = PricedByOpenCost
		if fromTable {
			pricedBy = PricedByOpenCostAndTable
		}
	}
	r, err := assemble(o, in)
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
// It compares, 10 minutes into the range, each scraped series of qs.coverage with the recorded one.
func checkRecorded(ctx context.Context, q Querier, o Options, qs queries) error {
	at := o.Since.Add(10 * time.Minute)
	if !at.Before(o.Until) {
		return nil
	}
	for _, pair := range qs.coverage {
		raw, err := instant(ctx, q, fmt.Sprintf(`count(last_over_time(%s[10m]))`, pair[0]), at)
		if err != nil {
			return fmt.Errorf("checking the recorded series cover the range: %w", err)
		}
		recorded, err := instant(ctx, q, fmt.Sprintf(`count(last_over_time(%s[10m]))`, pair[1]), at)
		if err != nil {
			return fmt.Errorf("checking the recorded series cover the range: %w", err)
		}
		if len(raw) > 0 && raw[0].Value > 0 && (len(recorded) == 0 || recorded[0].Value == 0) {
			return fmt.Errorf("the recording rules had not recorded %s by %s, the start of the range, while %s was scraped "+
				"(rules loaded later, or a rules file from before that rule): report without --recorded, or from a later --since",
				pair[1], o.Since.UTC().Format(time.RFC3339), pair[0])
		}
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

func fleetOf(m model.Metric) fleetKey {
	return fleetKey{string(m["namespace"]), string(m["fleet"])}
}

// results are the answers to a report's queries, by series (see queries), for assemble.
type results struct {
	// GPU series: by namespace, fleet, cost_center and gpu_product.
	seconds, costs, utilSum, utilCount model.Vector
	// unpricedSeconds are the GPU-seconds accrued while unpriced, by series; nil (an operator that
	// does not export them) means a series without any cost sample is unpriced as a whole.
	unpricedSeconds model.Vector
	daily           model.Matrix
	// Ledger series: by namespace and fleet (and outcome, or model and direction).
	tasks, tokens, tokenCosts, tokensUnpriced model.Vector
	// fleetInfo counts each fleet's agentfleet_fleet_info samples by cost center; read only for
	// ByCostCenter.
	fleetInfo                      model.Vector
	dailyTokenCost, dailySucceeded model.Matrix
}

// ledger sums a group's tokens and tasks as increase() gives them (extrapolated to the range's
// edges, so fractional) until they are rounded into its Row.
type ledger struct{ in, out, unpriced, succeeded, failed float64 }

// count rounds an extrapolated count of tokens or tasks to a whole one.
func count(v float64) int64 { return int64(math.Round(v)) }

// assemble groups the per-fleet results into a report. It is pure: the tests feed it vectors.
func assemble(o Options, in results) (Report, error) {
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
	if err := checkCurrency(in.costs, in.tokenCosts, &r.Currency); err != nil {
		return Report{}, err
	}
	for _, s := range in.costs {
		m := s.Metric.Clone()
		delete(m, "currency")
		priced[m.String()] = true
		row(group(s.Metric)).Cost += float64(s.Value)
	}
	unpriced := map[string]float64{}
	addUnpriced := func(m model.Metric, hours float64) {
		row(group(m)).UnpricedGPUHours += hours
		unpriced[string(m["gpu_product"])] += hours
	}
	for _, s := range in.unpricedSeconds {
		if s.Value > 0 {
			addUnpriced(s.Metric, float64(s.Value)/3600)
		}
	}
	for _, s := range in.seconds {
		g := group(s.Metric)
		hours := float64(s.Value) / 3600
		row(g).GPUHours += hours
		if in.unpricedSeconds == nil && !priced[s.Metric.String()] {
			addUnpriced(s.Metric, hours)
		}
		k := fleetOf(s.Metric)
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
		fleetGroup[k] = mostOf(byGroup)
	}
	ledgerGroup := ledgerGrouping(o.By, in.fleetInfo, fleetGroup)
	type util struct{ sum, count float64 }
	utils := map[string]*util{}
	var total util
	counts := map[fleetKey]float64{}
	for _, s := range in.utilCount {
		counts[fleetOf(s.Metric)] = float64(s.Value)
	}
	for _, s := range in.utilSum {
		k := fleetOf(s.Metric)
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

	// The ledger: tokens, their cost and the tasks, grouped by fleet.
	ledgers := map[string]*ledger{}
	led := func(m model.Metric) *ledger {
		g := ledgerGroup(m)
		row(g) // a group with tokens or tasks and no GPU is a row too
		if ledgers[g] == nil {
			ledgers[g] = &ledger{}
		}
		return ledgers[g]
	}
	for _, s := range in.tokens {
		switch s.Metric["direction"] {
		case "in":
			led(s.Metric).in += float64(s.Value)
		case "out":
			led(s.Metric).out += float64(s.Value)
		}
	}
	for _, s := range in.tokenCosts {
		row(ledgerGroup(s.Metric)).TokenCost += float64(s.Value)
	}
	unpricedModels := map[string]*[2]float64{}
	for _, s := range in.tokensUnpriced {
		if s.Value <= 0 {
			continue
		}
		led(s.Metric).unpriced += float64(s.Value)
		mdl := string(s.Metric["model"])
		if unpricedModels[mdl] == nil {
			unpricedModels[mdl] = &[2]float64{}
		}
		if s.Metric["direction"] == "out" {
			unpricedModels[mdl][1] += float64(s.Value)
		} else {
			unpricedModels[mdl][0] += float64(s.Value)
		}
	}
	for _, s := range in.tasks {
		switch s.Metric["outcome"] {
		case "succeeded":
			led(s.Metric).succeeded += float64(s.Value)
		case "failed":
			led(s.Metric).failed += float64(s.Value)
		}
	}
	for g, l := range ledgers {
		rw := rows[g]
		rw.TokensIn, rw.TokensOut, rw.UnpricedTokens = count(l.in), count(l.out), count(l.unpriced)
		rw.TasksSucceeded, rw.TasksFailed = count(l.succeeded), count(l.failed)
	}

	r.UtilizationKnown = total.count > 0
	r.Total.Group = "TOTAL"
	for g, rw := range rows {
		if u := utils[g]; u != nil && !partial[g] {
			rw.Utilization = ptr.To(u.sum / u.count)
			rw.IdleCost = ptr.To(rw.Cost * (1 - *rw.Utilization))
			r.Total.IdleCost = ptr.To(ptr.Deref(r.Total.IdleCost, 0) + *rw.IdleCost)
		}
		rw.TotalCost = rw.Cost + rw.TokenCost
		rw.CostPerSucceededTask = perTaskPriced(rw)
		t := &r.Total
		t.GPUHours += rw.GPUHours
		t.Cost += rw.Cost
		t.UnpricedGPUHours += rw.UnpricedGPUHours
		t.TokensIn += rw.TokensIn
		t.TokensOut += rw.TokensOut
		t.UnpricedTokens += rw.UnpricedTokens
		t.TokenCost += rw.TokenCost
		t.TasksSucceeded += rw.TasksSucceeded
		t.TasksFailed += rw.TasksFailed
		r.Rows = append(r.Rows, *rw)
	}
	r.Total.TotalCost = r.Total.Cost + r.Total.TokenCost
	r.Total.CostPerSucceededTask = perTaskPriced(&r.Total)
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
		return cmp.Or(cmp.Compare(b.TotalCost, a.TotalCost), cmp.Compare(a.Group, b.Group))
	})
	for _, product := range slices.Sorted(maps.Keys(unpriced)) {
		r.Unpriced = append(r.Unpriced, Unpriced{Product: product, GPUHours: unpriced[product]})
	}
	for _, mdl := range slices.Sorted(maps.Keys(unpricedModels)) {
		t := unpricedModels[mdl]
		r.UnpricedModels = append(r.UnpricedModels, UnpricedModel{Model: mdl, TokensIn: count(t[0]), TokensOut: count(t[1])})
	}
	r.Daily = dailySeries(o, r.Rows, in, group, ledgerGroup)
	return r, nil
}

// checkCurrency sets currency to the one currency of the GPU and the token costs, and refuses
// several: a report sums one.
func checkCurrency(gpuCosts, tokenCosts model.Vector, currency *string) error {
	of := func(v model.Vector) map[string]bool {
		c := map[string]bool{}
		for _, s := range v {
			c[string(s.Metric["currency"])] = true
		}
		return c
	}
	gpu, tokens := of(gpuCosts), of(tokenCosts)
	all := maps.Clone(gpu)
	maps.Copy(all, tokens)
	switch {
	case len(gpu) > 1 || len(tokens) > 1:
		return fmt.Errorf("the costs are in several currencies (%s): a report sums one; make the price table's currency one",
			strings.Join(slices.Sorted(maps.Keys(all)), ", "))
	case len(all) > 1:
		return fmt.Errorf("the GPU costs are in %s and the token costs in %s: a report sums one currency; "+
			"token costs are always in the operator's price table's currency, so GPU prices from OpenCost must be in it too (--opencost-currency, or --price-source table)",
			slices.Collect(maps.Keys(gpu))[0], slices.Collect(maps.Keys(tokens))[0])
	}
	for c := range all {
		*currency = c
	}
	return nil
}

// mostOf is the key with the largest value; ties go to the first key by name.
func mostOf(m map[string]float64) string {
	best, most := "", -1.0
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > most {
			best, most = k, m[k]
		}
	}
	return best
}

// ledgerGrouping is the group of a ledger series (tasks, tokens: labelled by namespace and fleet,
// without a cost center). By cost center, a fleet's is the one its agentfleet_fleet_info series had
// for most samples of the range (fleetInfo: samples by fleet and cost center); a fleet without one
// in the range (an operator from before it) has the cost center of most of its GPU-hours
// (gpuGroup), else "".
func ledgerGrouping(by string, fleetInfo model.Vector, gpuGroup map[fleetKey]string) func(model.Metric) string {
	switch by {
	case ByNamespace:
		return func(m model.Metric) string { return string(m["namespace"]) }
	case ByFleet:
		return func(m model.Metric) string { return string(m["namespace"]) + "/" + string(m["fleet"]) }
	}
	samples := map[fleetKey]map[string]float64{}
	for _, s := range fleetInfo {
		k := fleetOf(s.Metric)
		if samples[k] == nil {
			samples[k] = map[string]float64{}
		}
		samples[k][string(s.Metric["cost_center"])] += float64(s.Value)
	}
	costCenter := maps.Clone(gpuGroup)
	for k, byCenter := range samples {
		costCenter[k] = mostOf(byCenter)
	}
	return func(m model.Metric) string { return costCenter[fleetOf(m)] }
}

// perTask is cost divided by succeeded tasks; nil without any.
// perTaskPriced is a row's cost per succeeded task, none while the row used something unpriced (GPU
// hours or tokens): its cost, and so the figure, would be understated.
func perTaskPriced(rw *Row) *float64 {
	if rw.UnpricedGPUHours > 0 || rw.UnpricedTokens > 0 {
		return nil
	}
	return perTask(rw.TotalCost, rw.TasksSucceeded)
}

func perTask(cost float64, succeeded int64) *float64 {
	if succeeded <= 0 {
		return nil
	}
	return ptr.To(cost / float64(succeeded))
}

// dailySeries is a series per row, in the rows' order, with a point for every UTC day the range
// touches. Each daily matrix has a point at the end of each day, for the day before it.
func dailySeries(o Options, rows []Row, in results, group, ledgerGroup func(model.Metric) string) []Series {
	var days []time.Time
	for d := o.Since.UTC().Truncate(day); d.Before(o.Until); d = d.Add(day) {
		days = append(days, d)
	}
	byDay := func(m model.Matrix, group func(model.Metric) string) map[string]map[time.Time]float64 {
		out := map[string]map[time.Time]float64{}
		for _, s := range m {
			g := group(s.Metric)
			if out[g] == nil {
				out[g] = map[time.Time]float64{}
			}
			for _, p := range s.Values {
				out[g][p.Timestamp.Time().UTC().Add(-day)] += float64(p.Value) // several series of a group add up
			}
		}
		return out
	}
	costs := byDay(in.daily, group)
	tokenCosts := byDay(in.dailyTokenCost, ledgerGroup)
	succeeded := byDay(in.dailySucceeded, ledgerGroup)
	series := make([]Series, 0, len(rows))
	for _, rw := range rows {
		s := Series{Group: rw.Group, Points: make([]Point, len(days))}
		for i, d := range days {
			p := Point{Day: d, Cost: costs[rw.Group][d], TokenCost: tokenCosts[rw.Group][d], TasksSucceeded: count(succeeded[rw.Group][d])}
			p.CostPerSucceededTask = perTask(p.TotalCost(), p.TasksSucceeded)
			s.Points[i] = p
		}
		series = append(series, s)
	}
	return series
}
