package prometheus_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentfleet/agentfleet/controllers/fleet"
	"github.com/agentfleet/agentfleet/test/prometheus"
)

// A canary check's query runs against a real Prometheus: a scalar and a one-sample vector are
// numbers; a query with no series, or several, and one Prometheus refuses are errors that say so.
func TestCanaryCheckQueries(t *testing.T) {
	ctx := context.Background()
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# TYPE agent_error_ratio gauge\n"+
			"agent_error_ratio{fleet=\"coders\",revision=\"9c1f\"} 0.04\n"+
			"agent_error_ratio{fleet=\"coders\",revision=\"54b6\"} 0.02\n")
	}))
	t.Cleanup(exporter.Close)
	prom, err := prometheus.Start(ctx, prometheus.Options{Dir: t.TempDir(), Targets: map[string][]string{"agents": {strings.TrimPrefix(exporter.URL, "http://")}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prom.Stop)
	q, err := fleet.NewPrometheusChecks(prom.URL)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var v float64
	for {
		v, err = q.Query(ctx, `agent_error_ratio{fleet="coders",revision="9c1f"}`)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // until the first scrape
	}
	if err != nil || v != 0.04 {
		t.Fatalf("the canary's error ratio: %v, %v; want 0.04", v, err)
	}
	if v, err := q.Query(ctx, `scalar(agent_error_ratio{revision="9c1f"}) - scalar(agent_error_ratio{revision="54b6"})`); err != nil || v < 0.0199 || v > 0.0201 {
		t.Errorf("a scalar: %v, %v; want 0.02", v, err)
	}
	for query, want := range map[string]string{
		`agent_error_ratio{fleet="coders"}`: "returned 2 series, want one",
		`agent_error_ratio{fleet="other"}`:  "returned 0 series, want one",
		`agent_error_ratio{`:                "parse error",
	} {
		if _, err := q.Query(ctx, query); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", query, err, want)
		}
	}
}
