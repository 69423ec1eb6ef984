package cost

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// Burn is the burn rate now: what the GPUs the fleets hold at this moment cost per hour.
type Burn struct {
	By       string    `json:"by"`
	Currency string    `json:"currency"`
	Rows     []BurnRow `json:"rows"`
	Total    BurnRow   `json:"total"`
	// UnpricedGPUs by product: GPUs held now of products with no price.
	UnpricedGPUs map[string]int32 `json:"unpriced_gpus"`
}

// BurnRow is one group's burn rate.
type BurnRow struct {
	Group string `json:"group"`
	// GPUs held by Running agent worker pods.
	GPUs int32 `json:"gpus"`
	// UnpricedGPUs are the GPUs among them with no price (not in PerHour).
	UnpricedGPUs int32   `json:"unpriced_gpus"`
	PerHour      float64 `json:"cost_per_hour"`
}

// BurnRate prices the GPUs the fleets' agent worker pods hold now (Allocation), grouped by By. pods
// are the agent worker pods of the fleets (label agentfleet.dev/fleet).
func BurnRate(fleets []v1alpha1.AgentFleet, pods []corev1.Pod, nodeProducts map[string]string, prices Prices, by string) Burn {
	b := Burn{By: by, Currency: prices.Currency, UnpricedGPUs: map[string]int32{}, Total: BurnRow{Group: "TOTAL"}}
	byFleet := map[fleetKey][]corev1.Pod{}
	for _, p := range pods {
		k := fleetKey{p.Namespace, p.Labels[v1alpha1.LabelFleet]}
		byFleet[k] = append(byFleet[k], p)
	}
	rows := map[string]*BurnRow{}
	for i := range fleets {
		f := &fleets[i]
		g := f.Namespace
		switch by {
		case ByFleet:
			g = f.Namespace + "/" + f.Name
		case ByCostCenter:
			g = f.Spec.CostCenter
		}
		alloc := Allocation(byFleet[fleetKey{f.Namespace, f.Name}], nodeProducts, f.Spec.Worker.GPUProduct)
		if rows[g] == nil {
			rows[g] = &BurnRow{Group: g}
		}
		for product, n := range alloc {
			rows[g].GPUs += n
			if hourly, ok := prices.GPUHour(product); ok {
				rows[g].PerHour += float64(n) * hourly
			} else {
				rows[g].UnpricedGPUs += n
				b.UnpricedGPUs[product] += n
			}
		}
	}
	for _, g := range slices.Sorted(maps.Keys(rows)) {
		r := *rows[g]
		b.Rows = append(b.Rows, r)
		b.Total.GPUs += r.GPUs
		b.Total.UnpricedGPUs += r.UnpricedGPUs
		b.Total.PerHour += r.PerHour
	}
	slices.SortStableFunc(b.Rows, func(x, y BurnRow) int { return cmp.Compare(y.PerHour, x.PerHour) })
	return b
}

// BurnFormats are the formats of the burn rate.
var BurnFormats = []string{FormatTable, FormatJSON}

// RenderBurn writes a burn rate as a table (kubectl style, with a line per unpriced product) or as
// JSON.
func RenderBurn(w io.Writer, b Burn, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	case FormatTable:
	default:
		return fmt.Errorf("unknown format %q: one of %s", format, strings.Join(BurnFormats, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintf(tw, "%s\tGPUS\tCOST/HOUR\tCOST/DAY\n", groupTitle(b.By))
	for _, r := range append(slices.Clone(b.Rows), b.Total) {
		gpus := fmt.Sprint(r.GPUs)
		if r.UnpricedGPUs > 0 {
			gpus += fmt.Sprintf(" (%d unpriced)", r.UnpricedGPUs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", displayGroup(r.Group), gpus, fmtMoney(r.PerHour, b.Currency), fmtMoney(r.PerHour*24, b.Currency))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, product := range slices.Sorted(maps.Keys(b.UnpricedGPUs)) {
		if _, err := fmt.Fprintf(w, "unpriced: %s %d GPUs (no price in the table; not in COST)\n", product, b.UnpricedGPUs[product]); err != nil {
			return err
		}
	}
	return nil
}
