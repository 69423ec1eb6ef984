package grafana

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/client_golang/prometheus"
)

// testFamilies stands for what we export, in the checker's tests.
var testFamilies = Families{
	"requests_total":  TypeCounter,
	"latency_seconds": TypeHistogram,
	"temperature":     TypeGauge,
	"fleets":          TypeGauge,
}

var testDatasource = map[string]any{"type": "prometheus", "uid": "${datasource}"}

func testPanel(id int, title, expr string) map[string]any {
	return map[string]any{
		"type": "timeseries", "id": id, "title": title, "datasource": testDatasource,
		"gridPos":     map[string]any{"h": 8, "w": 12, "x": 0, "y": 0},
		"fieldConfig": map[string]any{"defaults": map[string]any{"unit": "s"}, "overrides": []any{}},
		"options": map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []any{}},
			"tooltip": map[string]any{"mode": "multi", "sort": "none"},
		},
		"targets": []any{map[string]any{"datasource": testDatasource, "refId": "A", "expr": expr}},
	}
}

// testDashboard is a small valid dashboard: panel 1 "Good", panel 2 "Bad" (which the cases spoil),
// and a row holding panel 4.
func testDashboard() map[string]any {
	return map[string]any{
		"uid": "test", "title": "Test", "schemaVersion": 39,
		"annotations": map[string]any{"list": []any{}},
		"templating": map[string]any{"list": []any{
			map[string]any{"type": "datasource", "name": "datasource", "query": "prometheus"},
			map[string]any{
				"type": "query", "name": "fleet", "datasource": testDatasource,
				"query": map[string]any{"query": "label_values(fleets, fleet)", "refId": "A"},
			},
			map[string]any{"type": "interval", "name": "window", "query": "1m,5m"},
		}},
		"panels": []any{
			testPanel(1, "Good", `sum by (le) (rate(latency_seconds_bucket{fleet=~"$fleet"}[$__rate_interval]))`),
			testPanel(2, "Bad", `increase(requests_total{fleet=~"${fleet:regex}"}[$window])`),
			map[string]any{
				"type": "row", "id": 3, "title": "More", "collapsed": true,
				"gridPos": map[string]any{"h": 1, "w": 24, "x": 0, "y": 8},
				"panels":  []any{testPanel(4, "Inside", `max(temperature)`)},
			},
		},
	}
}

func panelOf(d map[string]any, i int) map[string]any { return d["panels"].([]any)[i].(map[string]any) }

func targetOf(d map[string]any, i int) map[string]any {
	return panelOf(d, i)["targets"].([]any)[0].(map[string]any)
}

// TestCheck: each spoilt dashboard is rejected with messages that name where the fault is.
func TestCheck(t *testing.T) {
	for name, tc := range map[string]struct {
		spoil func(d map[string]any)
		want  []string
	}{
		"valid": {
			spoil: func(map[string]any) {},
		},
		"bad expr": {
			spoil: func(d map[string]any) { targetOf(d, 1)["expr"] = `sum(rate(requests_total[5m])` },
			want:  []string{`panel 2 "Bad": target A: expr "sum(rate(requests_total[5m])": 1:29: parse error: unclosed left parenthesis`},
		},
		"unknown metric": {
			spoil: func(d map[string]any) { targetOf(d, 1)["expr"] = `rate(requests_totl[5m])` },
			want:  []string{`panel 2 "Bad": target A: metric "requests_totl" is not exported`},
		},
		"unknown metric in a row": {
			spoil: func(d map[string]any) {
				panelOf(d, 2)["panels"] = []any{testPanel(4, "Inside", `max(temperatur)`)}
			},
			want: []string{`panel 4 "Inside": target A: metric "temperatur" is not exported`},
		},
		"unknown metric in a variable": {
			spoil: func(d map[string]any) {
				d["templating"].(map[string]any)["list"].([]any)[1].(map[string]any)["query"] = "label_values(flets, fleet)"
			},
			want: []string{`variable "fleet": metric "flets" is not exported`},
		},
		"bucket of a gauge": {
			spoil: func(d map[string]any) { targetOf(d, 1)["expr"] = `temperature_bucket` },
			want:  []string{`panel 2 "Bad": target A: metric "temperature_bucket" selects _bucket series of "temperature", which is a gauge`},
		},
		"selector without a name": {
			spoil: func(d map[string]any) { targetOf(d, 1)["expr"] = `count({fleet="a"})` },
			want:  []string{`panel 2 "Bad": target A: selector {fleet="a"} names no metric`},
		},
		"unknown variable": {
			spoil: func(d map[string]any) { targetOf(d, 1)["expr"] = `requests_total{fleet=~"$flet"}` },
			want:  []string{`panel 2 "Bad": target A: expr "requests_total{fleet=~\"$flet\"}": unknown variables $flet`},
		},
		"duplicate id": {
			spoil: func(d map[string]any) { panelOf(d, 1)["id"] = 1 },
			want:  []string{`panel 1 "Bad": id 1 is also the id of panel 1 "Good"`},
		},
		"duplicate id in a row": {
			spoil: func(d map[string]any) { panelOf(d, 2)["panels"] = []any{testPanel(2, "Inside", `max(temperature)`)} },
			want:  []string{`panel 2 "Inside": id 2 is also the id of panel 2 "Bad"`},
		},
		"no id": {
			spoil: func(d map[string]any) { delete(panelOf(d, 1), "id") },
			want:  []string{`panels[1] "Bad": no id`},
		},
		"target without datasource": {
			spoil: func(d map[string]any) { delete(targetOf(d, 1), "datasource") },
			want:  []string{`panel 2 "Bad": target A: no datasource: it must be ${datasource}`},
		},
		"target with a fixed datasource": {
			spoil: func(d map[string]any) {
				targetOf(d, 1)["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
			},
			want: []string{`panel 2 "Bad": target A: datasource "P1809F7CD0C75ACF3" is not the variable ${datasource}`},
		},
		"panel with a fixed datasource": {
			spoil: func(d map[string]any) {
				panelOf(d, 1)["datasource"] = map[string]any{"type": "prometheus", "uid": "prom"}
			},
			want: []string{`panel 2 "Bad": datasource "prom" is not the variable ${datasource}`},
		},
		"no datasource variable": {
			spoil: func(d map[string]any) {
				vars := d["templating"].(map[string]any)
				vars["list"] = vars["list"].([]any)[1:]
			},
			want: []string{`dashboard: no datasource variable of type prometheus`},
		},
		"no targets": {
			spoil: func(d map[string]any) { delete(panelOf(d, 1), "targets") },
			want:  []string{`panel 2 "Bad": no targets`},
		},
		"no gridPos": {
			spoil: func(d map[string]any) { delete(panelOf(d, 1), "gridPos") },
			want:  []string{`panel 2 "Bad": no gridPos with a width and a height`},
		},
		"refId twice": {
			spoil: func(d map[string]any) {
				p := panelOf(d, 1)
				p["targets"] = append(p["targets"].([]any), map[string]any{"datasource": testDatasource, "refId": "A", "expr": "fleets"})
			},
			want: []string{`panel 2 "Bad": target A: refId used twice`},
		},
		"misspelt panel field": {
			spoil: func(d map[string]any) { panelOf(d, 1)["maxDataPoint"] = 100 },
			want:  []string{`panel 2 "Bad": Panel: unexpected field 'maxDataPoint'`},
		},
		"misspelt target field": {
			spoil: func(d map[string]any) { targetOf(d, 1)["legendFromat"] = "{{fleet}}" },
			want:  []string{`panel 2 "Bad": targets[0]: Dataquery: unexpected field 'legendFromat'`},
		},
		"misspelt option": {
			spoil: func(d map[string]any) { panelOf(d, 1)["options"].(map[string]any)["legnd"] = map[string]any{} },
			want:  []string{`panel 2 "Bad": options.Options: unexpected field 'legnd'`},
		},
		"misspelt field config": {
			spoil: func(d map[string]any) {
				panelOf(d, 1)["fieldConfig"].(map[string]any)["defaults"] = map[string]any{"unti": "s"}
			},
			want: []string{`panel 2 "Bad": fieldConfig: defaults.FieldConfig: unexpected field 'unti'`},
		},
		"misspelt custom field config": {
			spoil: func(d map[string]any) {
				panelOf(d, 1)["fieldConfig"].(map[string]any)["defaults"] = map[string]any{"custom": map[string]any{"lineWidht": 2}}
			},
			want: []string{`panel 2 "Bad": fieldConfig.defaults.custom.GraphFieldConfig: unexpected field 'lineWidht'`},
		},
		"wrong type": {
			spoil: func(d map[string]any) { panelOf(d, 1)["gridPos"].(map[string]any)["h"] = "8" },
			want: []string{
				`panel 2 "Bad": gridPos.h: json: cannot unmarshal string into Go value of type uint32`,
				`panel 2 "Bad": no gridPos with a width and a height`,
			},
		},
		"misspelt dashboard field": {
			spoil: func(d map[string]any) { d["refesh"] = "1m" },
			want:  []string{`dashboard: Dashboard: unexpected field 'refesh'`},
		},
		"no uid": {
			spoil: func(d map[string]any) { delete(d, "uid") },
			want:  []string{`dashboard: no uid`},
		},
		"old schema": {
			spoil: func(d map[string]any) { d["schemaVersion"] = 27 },
			want:  []string{`dashboard: schemaVersion 27 is older than 39`},
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := testDashboard()
			tc.spoil(d)
			raw, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			_, errs := Check(raw, testFamilies)
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckFindsAllQueries: the queries of panels, of panels in rows and of query variables are
// all checked.
func TestCheckFindsAllQueries(t *testing.T) {
	raw, err := json.Marshal(testDashboard())
	if err != nil {
		t.Fatal(err)
	}
	d, errs := Check(raw, testFamilies)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	type found struct{ Where, Metric string }
	var got []found
	for _, q := range d.Queries {
		for _, vs := range q.Selectors() {
			got = append(got, found{q.Where, MetricName(vs)})
		}
	}
	want := []found{
		{`variable "fleet"`, "fleets"},
		{`panel 1 "Good": target A`, "latency_seconds_bucket"},
		{`panel 2 "Bad": target A`, "requests_total"},
		{`panel 4 "Inside": target A`, "temperature"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}

func TestSubstitute(t *testing.T) {
	vars := map[string]dashboard.VariableModel{
		"fleet":  {Type: dashboard.VariableTypeQuery, Name: "fleet"},
		"window": {Type: dashboard.VariableTypeInterval, Name: "window"},
	}
	for in, want := range map[string]string{
		`rate(x[$__rate_interval])`:                          `rate(x[5m])`,
		`increase(x[$__range]) / $__range_s`:                 `increase(x[5m]) / 300`,
		`rate(x[${__interval}])`:                             `rate(x[5m])`,
		`x{fleet=~"$fleet"}`:                                 `x{fleet=~"var_fleet"}`,
		`x{fleet=~"${fleet:regex}"}`:                         `x{fleet=~"var_fleet"}`,
		`x{fleet=~"[[fleet]]"}`:                              `x{fleet=~"var_fleet"}`,
		`sum by ($fleet) (x)`:                                `sum by (var_fleet) (x)`,
		`rate(x[$window])`:                                   `rate(x[5m])`,
		`label_replace(x, "a", "$1", "b", "(.*)")`:           `label_replace(x, "a", "$1", "b", "(.*)")`,
		`x{fleet=~"a$"}`:                                     `x{fleet=~"a$"}`,
		`sum(x{fleet=~"$fleet"}) / sum(y[$__rate_interval])`: `sum(x{fleet=~"var_fleet"}) / sum(y[5m])`,
	} {
		got, err := Substitute(in, vars)
		if err != nil {
			t.Errorf("Substitute(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("Substitute(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := Substitute(`x{a="$nope", b="${also_not}"}`, vars); err == nil || err.Error() != "unknown variables $nope, ${also_not}" {
		t.Errorf("Substitute with unknown variables: error %v, want unknown variables $nope, ${also_not}", err)
	}
}

// TestProbe: a Prometheus registry is asked by registering a clashing descriptor, and left as it
// was.
func TestProbe(t *testing.T) {
	reg := prometheus.NewRegistry()
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobs_total", Help: "Jobs."}, []string{"fleet"})
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wait_seconds", Help: "Waits."}, []string{"reason"})
	untouched := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "idle_seconds", Help: "Idle."})
	reg.MustRegister(counter, hist, untouched)
	hist.WithLabelValues("Crashed").Observe(1) // a vector has a type to gather only once it has a series
	p := Probe{Registerer: reg, Gatherer: reg}

	got := map[string]Family{}
	for _, name := range []string{"jobs_total", "wait_seconds", "idle_seconds", "nope", "jobs"} {
		f, err := p.Family(name)
		if err != nil {
			t.Fatalf("Family(%q): %v", name, err)
		}
		got[name] = f
	}
	want := map[string]Family{
		"jobs_total":   {Exported: true},
		"wait_seconds": {Exported: true, Type: TypeHistogram},
		"idle_seconds": {Exported: true, Type: TypeHistogram},
		"nope":         {},
		"jobs":         {},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("families (-want +got):\n%s", diff)
	}
	if _, err := p.Family("not a name"); err == nil {
		t.Error(`Family("not a name"): no error`)
	}
	// The probe of an unknown name is not left registered.
	if reg.Unregister(probeCollector{prometheus.NewDesc("nope", probeHelp, nil, nil)}) {
		t.Error("the probe of nope is still registered")
	}

	for name, want := range map[string]string{
		"wait_seconds_bucket": "",
		"wait_seconds_count":  "",
		"idle_seconds_bucket": "", // a histogram without labels has its series from the start
		// The limit of a probe: a vector with no series has no type to tell, so its name is
		// all there is to go on.
		"jobs_total_bucket": "",
		"jobs_bucket":       `metric "jobs_bucket" is not exported`,
	} {
		got := ""
		if err := lookUp(p, name); err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("lookUp(%q) = %q, want %q", name, got, want)
		}
	}
}
