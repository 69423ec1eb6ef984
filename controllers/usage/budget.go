package usage

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/ptr"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// FleetObservation is what a fleet's budget verdict is made from.
type FleetObservation struct {
	Now time.Time
	// Budgets is the fleet's spec.budgets (nil: none).
	Budgets *v1alpha1.BudgetsSpec
	// Buckets are the fleet's use by minute over the last day (Windows.Buckets).
	Buckets []Bucket
	// Currency of the costs.
	Currency string
	// Unpriced names what the costs leave out (models, GPU products without a price).
	Unpriced []string
}

// FleetVerdict is the fleet's budget state now.
type FleetVerdict struct {
	// Budgeted: the fleet has a fleet budget (maxTokensPerHour or maxCostPerDay).
	Budgeted bool
	// Exceeded: a fleet budget is exceeded now; Message says which, by how much.
	Exceeded bool
	// Pause: Exceeded and onExceeded is Pause.
	Pause bool
	// Message says which budgets are exceeded and their limits: stable while the figures move, so
	// that a condition carrying it is not rewritten at every reconcile. Evidence adds the figures
	// (for the Event, written once per crossing).
	Message, Evidence string
	// Hour and Day are the use over the last hour and the last day.
	Hour, Day Use
	// RecheckAfter is when the verdict changes with time alone (the window rolling under the
	// budget); zero if it does not.
	RecheckAfter time.Duration
}

// The windows of the fleet budgets.
const (
	Hour = time.Hour
	Day  = Span
)

// DecideFleet is the fleet's budget verdict: whether the tokens of the last hour or the cost of the
// last day pass the fleet's budgets. Exceeding is "more than": a budget can be spent to the last
// token. A cost budget counts only what is priced (Unpriced is named in the message).
func DecideFleet(o FleetObservation) (FleetVerdict, error) {
	v := FleetVerdict{Hour: Sum(o.Buckets, o.Now, Hour), Day: Sum(o.Buckets, o.Now, Day)}
	b := o.Budgets
	if b == nil || (b.MaxTokensPerHour == nil && b.MaxCostPerDay == "") {
		return v, nil
	}
	v.Budgeted = true
	var over, evidence []string
	if limit := ptr.Deref(b.MaxTokensPerHour, 0); b.MaxTokensPerHour != nil && v.Hour.Tokens() > limit {
		over = append(over, fmt.Sprintf("the last hour's tokens passed maxTokensPerHour (%d)", limit))
		evidence = append(evidence, fmt.Sprintf("%d tokens in the last hour (maxTokensPerHour %d)", v.Hour.Tokens(), limit))
		v.RecheckAfter = Until(o.Buckets, o.Now, Hour, float64(limit), func(u Use) float64 { return float64(u.Tokens()) })
	}
	if b.MaxCostPerDay != "" {
		limit, err := strconv.ParseFloat(b.MaxCostPerDay, 64)
		if err != nil || limit < 0 {
			return v, fmt.Errorf("spec.budgets.maxCostPerDay %q is not a non-negative decimal", b.MaxCostPerDay)
		}
		if c := v.Day.Cost(); c > limit {
			over = append(over, fmt.Sprintf("the last 24 hours' cost passed maxCostPerDay (%s %s)", b.MaxCostPerDay, o.Currency))
			msg := fmt.Sprintf("%s %s in the last 24 hours (GPUs %s, tokens %s; maxCostPerDay %s)", Money(c), o.Currency,
				Money(v.Day.GPUCost), Money(v.Day.TokenCost), b.MaxCostPerDay)
			if len(o.Unpriced) > 0 {
				msg += ", not counting unpriced " + strings.Join(o.Unpriced, ", ")
			}
			evidence = append(evidence, msg)
			until := Until(o.Buckets, o.Now, Day, limit, Use.Cost)
			if v.RecheckAfter == 0 || until > v.RecheckAfter {
				v.RecheckAfter = until // under every budget only when under both
			}
		}
	}
	if len(over) == 0 {
		v.Message = "within the fleet's budgets"
		return v, nil
	}
	v.Exceeded = true
	v.Pause = b.OnExceeded == v1alpha1.BudgetPause
	v.Message = "over budget: " + strings.Join(over, "; ")
	v.Evidence = "over budget: " + strings.Join(evidence, "; ")
	if v.Pause {
		v.Message += ": paused (no new task or job run) until the window rolls under the budget or the budget is raised; status.usage has the figures"
		v.Evidence += ": paused"
	}
	return v, nil
}

// Money formats a cost with cents, or more digits for costs under a cent.
func Money(c float64) string {
	if c != 0 && c < 0.01 {
		return strconv.FormatFloat(c, 'f', 6, 64)
	}
	return strconv.FormatFloat(c, 'f', 2, 64)
}
