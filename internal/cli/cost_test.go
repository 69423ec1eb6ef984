package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
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
		"no command":                    {nil, 2, "name a command: status, cost or promote"},
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

// promServer answers Prometheus' query API from canned vectors, chosen by a substring of the query:
// the first that matches; anything else, and every range query, is empty.
func promServer(t *testing.T, answers [][2]string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("query form: %v", err)
		}
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/query_range") {
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
			return
		}
		result := "[]"
		for _, a := range answers {
			if strings.Contains(r.Form.Get("query"), a[0]) {
				result = a[1]
				break
			}
		}
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":%s}}`, result)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// `cost --prometheus` reports a fleet on a hosted model (tokens and tasks, no GPU): its token cost,
// its tasks and what a succeeded task cost, in JSON and in the table.
func TestCostReportsTokensAndTasks(t *testing.T) {
	url := promServer(t, [][2]string{
		{"increase(agentfleet_tasks_total[", `[{"metric":{"namespace":"a","fleet":"x","outcome":"succeeded"},"value":[1795780800,"4"]},
			{"metric":{"namespace":"a","fleet":"x","outcome":"failed"},"value":[1795780800,"1"]}]`},
		{"increase(agentfleet_tokens_total[", `[{"metric":{"namespace":"a","fleet":"x","model":"gpt-4o","direction":"in"},"value":[1795780800,"400000"]},
			{"metric":{"namespace":"a","fleet":"x","model":"gpt-4o","direction":"out"},"value":[1795780800,"100000"]}]`},
		{"increase(agentfleet_token_cost_total[", `[{"metric":{"namespace":"a","fleet":"x","model":"gpt-4o","direction":"in","currency":"USD"},"value":[1795780800,"1"]},
			{"metric":{"namespace":"a","fleet":"x","model":"gpt-4o","direction":"out","currency":"USD"},"value":[1795780800,"1"]}]`},
	})
	run := func(format string) string {
		var out, errOut bytes.Buffer
		args := []string{"cost", "--prometheus", url, "--since", "1d", "--until", "2026-11-27T00:00:00Z", "--price-source", "table", "--format", format}
		if code := Main(context.Background(), args, IO{Out: &out, Err: &errOut}); code != 0 {
			t.Fatalf("cost --format %s: exit %d: %s", format, code, errOut.String())
		}
		return out.String()
	}
	var got struct {
		Currency string `json:"currency"`
		Rows     []struct {
			Group                string   `json:"group"`
			TokensIn             int64    `json:"tokens_in"`
			TokensOut            int64    `json:"tokens_out"`
			TokenCost            float64  `json:"token_cost"`
			TotalCost            float64  `json:"total_cost"`
			TasksSucceeded       int64    `json:"tasks_succeeded"`
			TasksFailed          int64    `json:"tasks_failed"`
			CostPerSucceededTask *float64 `json:"cost_per_succeeded_task"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(run(cost.FormatJSON)), &got); err != nil {
		t.Fatal(err)
	}
	type row struct {
		Group                         string
		TokensIn, TokensOut           int64
		TokenCost, TotalCost, PerTask float64
		TasksSucceeded, TasksFailed   int64
	}
	var rows []row
	for _, r := range got.Rows {
		if r.CostPerSucceededTask == nil {
			t.Fatalf("row %s: no cost per succeeded task", r.Group)
		}
		rows = append(rows, row{r.Group, r.TokensIn, r.TokensOut, r.TokenCost, r.TotalCost, *r.CostPerSucceededTask, r.TasksSucceeded, r.TasksFailed})
	}
	want := []row{{Group: "a/x", TokensIn: 400000, TokensOut: 100000, TokenCost: 2, TotalCost: 2, PerTask: 0.5, TasksSucceeded: 4, TasksFailed: 1}}
	if diff := cmp.Diff(want, rows); diff != "" || got.Currency != "USD" {
		t.Errorf("rows (-want +got):\n%s\ncurrency %q, want USD", diff, got.Currency)
	}
	table := run(cost.FormatTable)
	for _, w := range []string{"COST/TASK", "a/x", "400k/100k", "2.00 USD", "4/1", "0.50 USD"} {
		if !strings.Contains(table, w) {
			t.Errorf("table lacks %q:\n%s", w, table)
		}
	}
}
