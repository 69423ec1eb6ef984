// Package cost computes and renders the GPU cost report of `agentfleet cost`: GPU-hours, cost,
// utilization and idle cost per group (namespace, fleet or cost center), from the operator's and the
// GPU agent's Prometheus metrics.
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

// Report is one cost report: what each group's GPUs cost over [Since, Until).
type Report struct {
	Since, Until time.Time
	// By is the grouping: ByNamespace, ByFleet (the group is "namespace/fleet") or ByCostCenter (""
	// for fleets without one is shown as "(none)").
	By string
	// Currency of every cost in the report ("" if no GPU was priced).
	Currency string
	// Rows, one per group, sorted by Cost, highest first (then by Group).
	Rows []Row
	// Total sums the rows; its Group is "TOTAL".
	Total Row
	// Daily is the cost per group per UTC day of the range, for the HTML report's chart: one series
	// per group, in the order of Rows, each with a point per day (zero where nothing was spent).
	Daily []Series
	// Unpriced are the GPU products seen without a price, with their GPU-hours, sorted by product.
	Unpriced []Unpriced
	// UtilizationKnown is false when the Prometheus has no GPU agent metrics for the range at all: the
	// report then says utilization is unknown rather than 0.
	UtilizationKnown bool
	// PricedBy says where the prices came from: PricedByTable or PricedByOpenCost.
	PricedBy string
}

// Where a report's prices come from.
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
}

// Series is one group's daily cost.
type Series struct {
	Group  string
	Points []Point
}

// Point is one day's cost; Day is the start of the UTC day.
type Point struct {
	Day  time.Time
	Cost float64
}

// Unpriced is a GPU product with no price in the table, and the GPU-hours it ran.
type Unpriced struct {
	Product  string
	GPUHours float64
}
