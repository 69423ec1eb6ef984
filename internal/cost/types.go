// Package cost computes and renders the cost report of `agentfleet cost`: GPU-hours, GPU cost,
// utilization and idle cost, model tokens and their cost, tasks and the cost per succeeded task per
// group (namespace, fleet or cost center), from the operator's and the GPU agent's Prometheus
// metrics.
package cost

import "time"

// Group keys a report may be grouped by: the label names of the operator's GPU metrics.
const (
	ByNamespace  = "namespace"
	ByFleet      = "fleet"
	ByCostCenter = "cost_center"
)

// GroupBys are the accepted --by values, in the order the help lists them.
var GroupBys = []string{ByNamespace, ByFleet, ByCostCenter}

// Report is one cost report: what each group's GPUs and model tokens cost over [Since, Until), and
// the tasks its agents finished.
type Report struct {
	Since, Until time.Time
	// By is the grouping: ByNamespace, ByFleet (the group is "namespace/fleet") or ByCostCenter (""
	// for fleets without one is shown as "(none)"). The token and task series carry no cost center:
	// a fleet's are grouped under the cost center of its agentfleet_fleet_info series for most of the
	// range, else of most of its GPU-hours, else "".
	By string
	// Currency of every cost in the report ("" if nothing was priced).
	Currency string
	// Rows, one per group, sorted by TotalCost, highest first (then by Group).
	Rows []Row
	// Total sums the rows; its Group is "TOTAL".
	Total Row
	// Daily is the cost and the succeeded tasks per group per UTC day of the range, for the HTML
	// report's charts: one series per group, in the order of Rows, each with a point per day.
	Daily []Series
	// Unpriced are the GPU products seen without a price, with their GPU-hours, sorted by product.
	Unpriced []Unpriced
	// UnpricedModels are the models whose tokens had no price, with those tokens, sorted by model.
	UnpricedModels []UnpricedModel
	// UtilizationKnown is false when the Prometheus has no GPU agent metrics for the range at all: the
	// report then says utilization is unknown rather than 0.
	UtilizationKnown bool
	// PricedBy says where the GPU prices came from: PricedByTable or PricedByOpenCost. Token prices
	// always come from the operator's table (agentfleet_token_cost_total).
	PricedBy string
}

// Where a report's GPU prices come from.
const (
	// PricedByTable: the operator's agentfleet_gpu_cost_total, priced by its price table.
	PricedByTable = "table"
	// PricedByOpenCost: OpenCost's node_gpu_hourly_cost, averaged per GPU product over the range.
	PricedByOpenCost = "opencost"
	// PricedByOpenCostAndTable: OpenCost where it prices a product, the table for the others.
	PricedByOpenCostAndTable = "opencost+table"
)

// Row is one group's figures.
type Row struct {
	Group string
	// GPUHours allocated: GPUs held by Running agent worker pods × hours.
	GPUHours float64
	// Cost of the priced GPU-hours.
	Cost float64
	// UnpricedGPUHours are GPU-hours of products with no price (not in Cost).
	UnpricedGPUHours float64
	// Utilization is the average GPU utilization (0–1) over the GPU agent's samples of the group's
	// GPUs; nil when unknown (no samples).
	Utilization *float64
	// IdleCost is Cost × (1 − Utilization): paid for, not used; nil when Utilization is.
	IdleCost *float64
	// TokensIn and TokensOut are the model tokens the agents used (prompt, completion), priced or not.
	TokensIn, TokensOut int64
	// UnpricedTokens are those of models with no token price (not in TokenCost).
	UnpricedTokens int64
	// TokenCost is the cost of the priced tokens, at the operator's price table.
	TokenCost float64
	// TotalCost is Cost + TokenCost.
	TotalCost float64
	// TasksSucceeded and TasksFailed are the tasks the agents finished, by outcome.
	TasksSucceeded, TasksFailed int64
	// CostPerSucceededTask is TotalCost / TasksSucceeded: what a successful task cost, the failed
	// ones' cost included; nil when no task succeeded.
	CostPerSucceededTask *float64
}

// Series is one group's daily figures.
type Series struct {
	Group  string
	Points []Point
}

// Point is one UTC day of a group; Day is the start of the day.
type Point struct {
	Day time.Time
	// Cost of the GPUs, TokenCost of the tokens that day.
	Cost, TokenCost float64
	// TasksSucceeded that day.
	TasksSucceeded int64
	// CostPerSucceededTask is (Cost + TokenCost) / TasksSucceeded; nil on a day without a succeeded
	// task (no point on the chart, rather than 0).
	CostPerSucceededTask *float64
}

// TotalCost is what the day cost, GPUs and tokens.
func (p Point) TotalCost() float64 { return p.Cost + p.TokenCost }

// Unpriced is a GPU product with no price in the table, and the GPU-hours it ran.
type Unpriced struct {
	Product  string
	GPUHours float64
}

// UnpricedModel is a model with no token price in the table, and the tokens it used.
type UnpricedModel struct {
	Model               string
	TokensIn, TokensOut int64
}
