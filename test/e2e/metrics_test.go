package e2e

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// scrape reads an operator's Prometheus endpoint.
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// gaugeOf is the value of the gauge series of a family whose labels include want (-1 if none).
func gaugeOf(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	for _, m := range families[name].GetMetric() {
		if hasLabels(m, want) {
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// counterSum sums the counter series of a family whose labels include want.
func counterSum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	total := 0.0
	for _, m := range families[name].GetMetric() {
		if hasLabels(m, want) {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// fleetLabels are a fleet's namespace and fleet labels, and the name-value pairs kv.
func fleetLabels(key client.ObjectKey, kv ...string) map[string]string {
	l := map[string]string{"namespace": key.Namespace, "fleet": key.Name}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			found++
		}
	}
	return found == len(want)
}
