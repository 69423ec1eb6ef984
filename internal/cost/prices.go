package cost

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// PricesKey is the key of the price table in its ConfigMap.
const PricesKey = "prices.yaml"

// Prices is the price table: what a GPU of each product costs per hour, and what a million model
// tokens cost, by model and direction, in one currency. It is read from the ConfigMap the operator's
// --gpu-prices flag names (key PricesKey), written like
//
//	currency: USD
//	gpuHourly:
//	  NVIDIA-H100-80GB-HBM3: "3.50"
//	tokenPerMillion:
//	  claude-sonnet-4-5: {in: "3.00", out: "15.00"}
//
// Products are the values of the nvidia.com/gpu.product node label; models are fleets'
// spec.model.name. A product or model not in the table is unpriced: its GPU-hours or tokens are
// counted and reported as unpriced, never priced at 0.
type Prices struct {
	Currency string `json:"currency"`
	// GPUHourly is the price of one GPU for one hour, by product, as a decimal string.
	GPUHourly map[string]string `json:"gpuHourly"`
	// TokenPerMillion is the price of a million input (prompt) and output (completion) tokens, by
	// model, as decimal strings.
	TokenPerMillion map[string]TokenPrices `json:"tokenPerMillion,omitempty"`

	hourly map[string]float64
	tokens map[string][2]float64
}

// TokenPrices are a model's prices per million tokens, by direction.
type TokenPrices struct {
	In  string `json:"in"`
	Out string `json:"out"`
}

// DefaultPrices is the table used when no ConfigMap is configured: rounded on-demand list prices of
// late 2026 in USD, a placeholder for the prices a team actually pays (README, "GPU cost").
func DefaultPrices() Prices {
	p, err := ParsePrices([]byte(DefaultPricesYAML))
	if err != nil {
		panic(fmt.Sprintf("the default price table does not parse: %v", err))
	}
	return p
}

// DefaultPricesYAML is the default table, as it would be written in a ConfigMap.
const DefaultPricesYAML = `currency: USD
gpuHourly:
  NVIDIA-A100-SXM4-40GB: "1.60"
  NVIDIA-A100-SXM4-80GB: "2.00"
  NVIDIA-A10G: "1.00"
  NVIDIA-B200: "6.00"
  NVIDIA-H100-80GB-HBM3: "3.50"
  NVIDIA-H200: "4.50"
  NVIDIA-L4: "0.70"
  NVIDIA-L40S: "1.20"
  Tesla-T4: "0.35"
tokenPerMillion:
  claude-haiku-4-5: {in: "1.00", out: "5.00"}
  claude-opus-4-1: {in: "15.00", out: "75.00"}
  claude-sonnet-4-5: {in: "3.00", out: "15.00"}
  gpt-4o: {in: "2.50", out: "10.00"}
`

// ParsePrices reads a price table, strictly: an unknown field, a missing currency, or a price that
// is not a non-negative decimal is an error that names it.
func ParsePrices(data []byte) (Prices, error) {
	var p Prices
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return Prices{}, fmt.Errorf("price table: %w", err)
	}
	p.Currency = strings.TrimSpace(p.Currency)
	if p.Currency == "" {
		return Prices{}, fmt.Errorf("price table: currency is empty: name the currency of its prices, e.g. currency: USD")
	}
	p.hourly = make(map[string]float64, len(p.GPUHourly))
	for _, product := range slices.Sorted(maps.Keys(p.GPUHourly)) {
		s := p.GPUHourly[product]
		if strings.TrimSpace(product) == "" {
			return Prices{}, fmt.Errorf("price table: gpuHourly has an empty product name")
		}
		v, err := parsePrice(s)
		if err != nil {
			return Prices{}, fmt.Errorf("price table: gpuHourly[%s] = %q is not a non-negative decimal price per GPU-hour", product, s)
		}
		p.hourly[product] = v
	}
	p.tokens = make(map[string][2]float64, len(p.TokenPerMillion))
	for _, model := range slices.Sorted(maps.Keys(p.TokenPerMillion)) {
		if strings.TrimSpace(model) == "" {
			return Prices{}, fmt.Errorf("price table: tokenPerMillion has an empty model name")
		}
		var v [2]float64
		for i, d := range []struct{ name, price string }{{"in", p.TokenPerMillion[model].In}, {"out", p.TokenPerMillion[model].Out}} {
			f, err := parsePrice(d.price)
			if err != nil {
				return Prices{}, fmt.Errorf("price table: tokenPerMillion[%s].%s = %q is not a non-negative decimal price per million tokens", model, d.name, d.price)
			}
			v[i] = f
		}
		p.tokens[model] = v
	}
	return p, nil
}

// parsePrice reads a non-negative, finite decimal.
func parsePrice(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("not a non-negative decimal: %q", s)
	}
	return v, nil
}

// PricesFromConfigMap reads the table from a ConfigMap's data (key PricesKey): a missing key is an
// error that names it, as is anything ParsePrices refuses.
func PricesFromConfigMap(data map[string]string) (Prices, error) {
	table, ok := data[PricesKey]
	if !ok {
		return Prices{}, fmt.Errorf("it has no key %s", PricesKey)
	}
	return ParsePrices([]byte(table))
}

// GPUHour is the price of one GPU of a product for one hour, and whether the table has one.
func (p Prices) GPUHour(product string) (float64, bool) {
	v, ok := p.hourly[product]
	return v, ok
}

// Products are the priced products, sorted.
func (p Prices) Products() []string { return slices.Sorted(maps.Keys(p.hourly)) }

// TokenMillion is the price of a million input and output tokens of a model, and whether the table
// has one.
func (p Prices) TokenMillion(model string) (in, out float64, ok bool) {
	v, ok := p.tokens[model]
	return v[0], v[1], ok
}

// TokenCost is what tokensIn input and tokensOut output tokens of a model cost, and whether the
// model is priced.
func (p Prices) TokenCost(model string, tokensIn, tokensOut int64) (float64, bool) {
	in, out, ok := p.TokenMillion(model)
	if !ok {
		return 0, false
	}
	return (float64(tokensIn)*in + float64(tokensOut)*out) / 1e6, true
}

// Models are the models with token prices, sorted.
func (p Prices) Models() []string { return slices.Sorted(maps.Keys(p.tokens)) }
