package fleet

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// CheckQuerier runs a canary check's query: an instant PromQL query whose result is one number.
type CheckQuerier interface {
	Query(ctx context.Context, query string) (float64, error)
}

// PrometheusChecks queries a Prometheus (the operator's --prometheus-url).
type PrometheusChecks struct {
	API     promv1.API
	Timeout time.Duration
}

// NewPrometheusChecks returns a CheckQuerier of the Prometheus at url.
func NewPrometheusChecks(url string) (*PrometheusChecks, error) {
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return nil, fmt.Errorf("the Prometheus of the canary checks, %s: %w", url, err)
	}
	return &PrometheusChecks{API: promv1.NewAPI(c), Timeout: 10 * time.Second}, nil
}

// Query runs query now: a scalar, or a vector of exactly one sample.
func (p *PrometheusChecks) Query(ctx context.Context, query string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	v, _, err := p.API.Query(ctx, query, time.Now())
	if err != nil {
		return 0, err
	}
	switch r := v.(type) {
	case *model.Scalar:
		return float64(r.Value), nil
	case model.Vector:
		if len(r) != 1 {
			return 0, fmt.Errorf("the query returned %d series, want one", len(r))
		}
		return float64(r[0].Value), nil
	}
	return 0, fmt.Errorf("the query returned a %s, want a number", v.Type())
}

// checkResult is a canary check run: its value, or why it has none.
type checkResult struct {
	Name, Condition string
	Value           float64
	Err             string
}

// expandCheck fills a check's placeholders: {{namespace}}, {{fleet}}, {{revision}} (the canary's)
// and {{stable}} (the stable revision).
func expandCheck(query, namespace, fleet, revision, stable string) string {
	return strings.NewReplacer("{{namespace}}", namespace, "{{fleet}}", fleet, "{{revision}}", revision, "{{stable}}", stable).Replace(query)
}

var conditionRE = regexp.MustCompile(`^\s*result\s*(<=|>=|==|!=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$`)

// checkPasses evaluates a success condition, "result < 0.1" (<, <=, >, >=, ==, !=), on a value.
func checkPasses(condition string, v float64) (bool, error) {
	m := conditionRE.FindStringSubmatch(condition)
	if m == nil {
		return false, fmt.Errorf("successCondition %q is not `result OP NUMBER` (OP one of < <= > >= == !=)", condition)
	}
	limit, err := strconv.ParseFloat(m[2], 64)
	if err != nil {
		return false, fmt.Errorf("successCondition %q: %w", condition, err)
	}
	switch m[1] {
	case "<":
		return v < limit, nil
	case "<=":
		return v <= limit, nil
	case ">":
		return v > limit, nil
	case ">=":
		return v >= limit, nil
	case "==":
		return v == limit, nil
	}
	return v != limit, nil
}

// runChecks runs a canary's checks (none without a querier: each says so).
func runChecks(ctx context.Context, q CheckQuerier, checks []v1alpha1.CanaryCheck, namespace, fleet, revision, stable string) []checkResult {
	var out []checkResult
	for _, c := range checks {
		r := checkResult{Name: c.Name, Condition: c.SuccessCondition}
		if q == nil {
			r.Err = "the operator has no --prometheus-url to run it"
		} else if v, err := q.Query(ctx, expandCheck(c.Query, namespace, fleet, revision, stable)); err != nil {
			r.Err = err.Error()
		} else {
			r.Value = v
		}
		out = append(out, r)
	}
	return out
}
