package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentfleet/agentfleet/internal/cost"
)

// closedAddress is a loopback port nothing listens on.
func closedAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// The command line's mistakes exit 2 and say what is wrong; an unreachable Prometheus exits 1 and
// says what to check. Nothing is written to stdout either way.
func TestCostCommandLineErrors(t *testing.T) {
	unreachable := "http://" + closedAddress(t)
	cases := map[string]struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		"no command":                    {nil, 2, "name a command: status or cost"},
		"an unknown command":            {[]string{"costs"}, 2, `unknown command "costs"`},
		"an unknown group":              {[]string{"cost", "--prometheus", unreachable, "--by", "team"}, 2, `--by "team": one of namespace, fleet, cost_center`},
		"a malformed duration":          {[]string{"cost", "--prometheus", unreachable, "--since", "7days"}, 2, `--since "7days"`},
		"an empty range":                {[]string{"cost", "--prometheus", unreachable, "--since", "0s"}, 2, `--since "0s": the range is empty`},
		"a bad --until":                 {[]string{"cost", "--prometheus", unreachable, "--until", "yesterday"}, 2, `--until "yesterday": not RFC 3339`},
		"an unknown format":             {[]string{"cost", "--prometheus", unreachable, "--format", "pdf"}, 2, `--format "pdf": one of table, csv, json, html`},
		"an unknown source":             {[]string{"cost", "--prometheus", unreachable, "--price-source", "kubecost"}, 2, `--price-source "kubecost"`},
		"not a URL":                     {[]string{"cost", "--prometheus", "prometheus:9090"}, 2, `--prometheus "prometheus:9090": an http(s) URL`},
		"an argument":                   {[]string{"cost", "--prometheus", unreachable, "coders"}, 2, "cost takes no arguments"},
		"html is not for the burn rate": {[]string{"cost", "--format", "html"}, 2, `--format "html": one of table, json`},
		"an unreachable Prometheus": {[]string{"cost", "--prometheus", unreachable, "--timeout", "5s"}, 1,
			"cannot reach Prometheus at " + unreachable},
		"status -o xml":         {[]string{"status", "-o", "xml"}, 2, `--output "xml"`},
		"status: a name and -A": {[]string{"status", "coders", "-A"}, 2, "a fleet cannot be named across all namespaces"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), tc.args, IO{Out: &out, Err: &errOut})
			if code != tc.wantCode || !strings.Contains(errOut.String(), tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut.String(), tc.wantCode, tc.wantErr)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

func TestCostRange(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	cases := map[string]struct {
		f    costFlags
		want cost.Options
	}{
		"the default week until now": {costFlags{since: "7d", by: cost.ByFleet, source: "auto", currency: "USD"},
			cost.Options{Since: now.Add(-7 * 24 * time.Hour), Until: now, By: cost.ByFleet, OpenCostCurrency: "USD"}},
		"a month until a given time, priced by the table": {costFlags{since: "4w", until: "2026-11-01T00:00:00Z", by: cost.ByCostCenter, source: "table"},
			cost.Options{Since: time.Date(2026, 10, 4, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), By: cost.ByCostCenter, Prices: cost.PricedByTable}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := tc.f.reportOptions(now)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}
