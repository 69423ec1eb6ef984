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

// Prices is the price table: what a GPU of each product costs per hour, in one currency. It is read
// from the ConfigMap the operator's --gpu-prices flag names (key PricesKey), written like
//
//	currency: USD
//	gpuHourly:
//	  NVIDIA-H100-80GB-HBM3: "3.50"
//
// Products are the values of the nvidia.com/gpu.product node label. A product not in the table is
// unpriced: its GPU-hours are counted and reported as unpriced, never priced at 0.
type Prices struct {
	Currency string `json:"currency"`
	// GPUHourly is the price of one GPU for one hour, by product, as a decimal string.
	GPUHourly map[string]string `json:"gpuHourly"`

	hourly map[string]float64
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
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return Prices{}, fmt.Errorf("price table: gpuHourly[%s] = %q is not a non-negative decimal price per GPU-hour", product, s)
		}
		p.hourly[product] = v
	}
	return p, nil
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
