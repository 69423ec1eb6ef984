// Package grafana checks a Grafana dashboard of Prometheus queries: that it decodes strictly into
// Grafana's own dashboard model (the Grafana Foundation SDK), that its panels are well formed and
// query through the dashboard's datasource variable, and that every query parses with Prometheus'
// own PromQL parser and selects only metrics that we export.
package grafana

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// MinSchemaVersion is Grafana 11's dashboard schema; older ones are migrated on load, which hides
// what the file really says.
const MinSchemaVersion = 39

// registerPlugins makes the SDK decode panel options, custom field config and Prometheus queries
// into their own types, strictly; without it they stay untyped maps that accept anything.
var registerPlugins = sync.OnceFunc(plugins.RegisterDefaultPlugins)

// Dashboard is a decoded dashboard: Grafana's model, and its queries parsed.
type Dashboard struct {
	// Model is the classic dashboard JSON, the one Grafana's provisioning and import take (and
	// the SDK's dashboardv2 is Grafana 12's resource format, behind a feature flag).
	Model dashboard.Dashboard //nolint:staticcheck // see above: the classic model is the file's format
	// Queries are the panels' queries and the query variables' selectors, in file order.
	Queries []Query
	// Variables are the template variables by name.
	Variables map[string]dashboard.VariableModel
}

// Query is one PromQL expression of a dashboard and where it is.
type Query struct {
	// Where names the panel and target ("panel 3 \"Workers\": target A") or the variable.
	Where string
	// Variable is the name of the template variable whose query this is; "" for a panel's.
	Variable string
	// Expr is the expression as parsed, with Grafana's variables replaced by stand-ins.
	Expr parser.Expr
}

// Selectors returns the vector selectors of q, in order.
func (q Query) Selectors() []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(q.Expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// MetricName is the metric a selector names, by name or by an equality matcher on __name__.
func MetricName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// Check decodes a dashboard and returns it with every fault found, each naming the panel (or the
// variable) it is in. Metrics are looked up in reg.
func Check(raw []byte, reg Registry) (*Dashboard, []error) {
	d, errs := Load(raw)
	if d == nil {
		return nil, errs
	}
	for _, q := range d.Queries {
		for _, vs := range q.Selectors() {
			name := MetricName(vs)
			if name == "" {
				errs = append(errs, fmt.Errorf("%s: selector %s names no metric", q.Where, vs))
				continue
			}
			if err := lookUp(reg, name); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", q.Where, err))
			}
		}
	}
	return d, errs
}

// lookUp accepts a name that reg exports, or the _bucket, _sum or _count series of a histogram it
// exports (a histogram's family carries its base name only).
func lookUp(reg Registry, name string) error {
	f, err := reg.Family(name)
	if err != nil {
		return fmt.Errorf("looking up metric %q: %w", name, err)
	}
	if f.Exported {
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		b, err := reg.Family(base)
		if err != nil {
			return fmt.Errorf("looking up metric %q: %w", base, err)
		}
		if !b.Exported {
			break
		}
		// A vector with no series yet has no type to gather; its name is all there is to go on.
		if b.Type == "" || b.Type == TypeHistogram || (b.Type == TypeSummary && suffix != "_bucket") {
			return nil
		}
		return fmt.Errorf("metric %q selects %s series of %q, which is a %s", name, suffix, base, b.Type)
	}
	return fmt.Errorf("metric %q is not exported", name)
}

// Load decodes a dashboard strictly and checks its form: everything but the metrics' names. It
// returns nil only when raw is not a JSON object.
func Load(raw []byte) (*Dashboard, []error) {
	registerPlugins()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, []error{fmt.Errorf("decoding dashboard: %w", err)}
	}
	var errs []error

	// The panels are decoded one by one so that each fault names its panel; the rest of the
	// dashboard in one piece.
	var rawPanels []json.RawMessage
	if p, ok := top["panels"]; ok {
		if err := json.Unmarshal(p, &rawPanels); err != nil {
			errs = append(errs, fmt.Errorf("panels: %w", err))
		}
	}
	rest := make(map[string]json.RawMessage, len(top))
	for k, v := range top {
		if k != "panels" {
			rest[k] = v
		}
	}
	restRaw, err := json.Marshal(rest)
	if err != nil {
		return nil, []error{fmt.Errorf("encoding dashboard without its panels: %w", err)}
	}
	d := &Dashboard{Variables: map[string]dashboard.VariableModel{}}
	errs = append(errs, buildErrors("dashboard", d.Model.UnmarshalJSONStrict(restRaw))...)
	errs = append(errs, checkHeader(d.Model)...)

	dsVar, varErrs := d.loadVariables()
	errs = append(errs, varErrs...)

	ids := map[uint32]string{}
	for i, rp := range rawPanels {
		panels, perrs := decodePanel(rp, fmt.Sprintf("panels[%d]", i))
		errs = append(errs, perrs...)
		for _, p := range panels {
			d.Model.Panels = append(d.Model.Panels, p.model)
			errs = append(errs, d.checkPanel(p, dsVar, ids)...)
		}
	}
	return d, errs
}

func checkHeader(m dashboard.Dashboard) []error { //nolint:staticcheck // the classic model, as Dashboard.Model
	var errs []error
	if m.Uid == nil || *m.Uid == "" {
		errs = append(errs, errors.New("dashboard: no uid"))
	}
	if m.Title == nil || *m.Title == "" {
		errs = append(errs, errors.New("dashboard: no title"))
	}
	if m.SchemaVersion < MinSchemaVersion {
		errs = append(errs, fmt.Errorf("dashboard: schemaVersion %d is older than %d", m.SchemaVersion, MinSchemaVersion))
	}
	return errs
}

// loadVariables indexes the template variables, finds the Prometheus datasource variable and
// parses the selectors of the query variables.
func (d *Dashboard) loadVariables() (dsVar string, errs []error) {
	for _, v := range d.Model.Templating.List {
		if _, dup := d.Variables[v.Name]; dup {
			errs = append(errs, fmt.Errorf("variable %q: defined twice", v.Name))
		}
		d.Variables[v.Name] = v
		if v.Type == dashboard.VariableTypeDatasource && v.Query != nil && v.Query.String != nil && *v.Query.String == "prometheus" && dsVar == "" {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		return "", append(errs, errors.New("dashboard: no datasource variable of type prometheus"))
	}
	for _, v := range d.Model.Templating.List {
		if v.Type != dashboard.VariableTypeQuery {
			continue
		}
		where := fmt.Sprintf("variable %q", v.Name)
		if err := usesVariable(v.Datasource, dsVar); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		q := variableQuery(v)
		sel, ok := labelValuesSelector(q)
		if !ok {
			continue // label_names() and the like select no series
		}
		expr, err := d.parse(sel)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		d.Queries = append(d.Queries, Query{Where: where, Variable: v.Name, Expr: expr})
	}
	return dsVar, errs
}

// variableQuery is a query variable's query, which Grafana stores as a string or, since Grafana
// 10, as an object whose "query" field holds it.
func variableQuery(v dashboard.VariableModel) string {
	switch {
	case v.Query == nil:
		return ""
	case v.Query.String != nil:
		return *v.Query.String
	case v.Query.Map != nil:
		s, _ := v.Query.Map["query"].(string)
		return s
	}
	return ""
}

// labelValuesRE matches Grafana's label_values(selector, label) and query_result(expr).
var labelValuesRE = regexp.MustCompile(`^\s*(?:label_values\(\s*(.+)\s*,\s*[\w.]+\s*\)|query_result\(\s*(.+)\s*\))\s*$`)

func labelValuesSelector(q string) (string, bool) {
	m := labelValuesRE.FindStringSubmatch(q)
	switch {
	case m == nil:
		return "", false
	case m[1] != "":
		return m[1], true
	default:
		return m[2], true
	}
}

type decodedPanel struct {
	where string
	model dashboard.PanelOrRowPanel
	// targets are the panel's queries, decoded strictly as Prometheus queries; nil where a
	// target does not decode.
	targets []*prometheus.Dataquery
	// rawFieldConfig is decoded again here: the SDK decodes it leniently.
	rawFieldConfig json.RawMessage
}

// decodePanel decodes a panel strictly, and a row's panels with it.
func decodePanel(raw json.RawMessage, path string) ([]decodedPanel, []error) {
	var head struct {
		ID          *int64            `json:"id"`
		Title       string            `json:"title"`
		Type        string            `json:"type"`
		FieldConfig json.RawMessage   `json:"fieldConfig"`
		Targets     []json.RawMessage `json:"targets"`
		Panels      []json.RawMessage `json:"panels"`
	}
	// Only to name the panel and find its parts: a field of a wrong type is reported by the
	// strict decoding below, and json.Unmarshal goes on past one.
	_ = json.Unmarshal(raw, &head)
	where := path
	if head.ID != nil {
		where = fmt.Sprintf("panel %d", *head.ID)
	}
	where += " " + strconv.Quote(head.Title)

	p := decodedPanel{where: where, rawFieldConfig: head.FieldConfig}
	var errs []error
	// The SDK's own strict decoders return their error list typed, as an error, even when it is
	// empty: PanelOrRowPanel and Panel then drop the panel, and the panel's queries, as if they
	// had failed. So the panel is decoded here as a Panel or a RowPanel, and its targets one by
	// one as Prometheus queries (which the SDK would also do only for a target that names the
	// prometheus type, taking any other as an unchecked map).
	if head.Type == "row" {
		row := &dashboard.RowPanel{}
		errs = append(errs, buildErrors(where, row.UnmarshalJSONStrict(raw))...)
		p.model.RowPanel = row
	} else {
		withoutTargets, err := withoutField(raw, "targets")
		if err != nil {
			return nil, []error{fmt.Errorf("%s: %w", where, err)}
		}
		panel := &dashboard.Panel{}
		errs = append(errs, buildErrors(where, panel.UnmarshalJSONStrict(withoutTargets))...)
		p.model.Panel = panel
		for i, rt := range head.Targets {
			q := &prometheus.Dataquery{}
			terrs := buildErrors(fmt.Sprintf("%s: targets[%d]", where, i), q.UnmarshalJSONStrict(rt))
			errs = append(errs, terrs...)
			if len(terrs) > 0 {
				q = nil
			}
			p.targets = append(p.targets, q)
			if q != nil {
				panel.Targets = append(panel.Targets, q)
			}
		}
	}
	out := []decodedPanel{p}
	if head.Type == "row" {
		for i, child := range head.Panels {
			cs, cerrs := decodePanel(child, fmt.Sprintf("%s.panels[%d]", path, i))
			out = append(out, cs...)
			errs = append(errs, cerrs...)
		}
	}
	return out, errs
}

// withoutField returns the JSON object raw less its field name.
func withoutField(raw json.RawMessage, name string) (json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("decoding panel: %w", err)
	}
	delete(fields, name)
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encoding panel: %w", err)
	}
	return out, nil
}

// buildErrors splits the SDK's decoding errors, one per field, each prefixed with where. The SDK
// returns its error list typed even when it is empty: no error then.
func buildErrors(where string, err error) []error {
	if err == nil {
		return nil
	}
	var be cog.BuildErrors
	if !errors.As(err, &be) {
		return []error{fmt.Errorf("%s: %w", where, err)}
	}
	var out []error
	for _, e := range be {
		out = append(out, fmt.Errorf("%s: %w", where, e))
	}
	return out
}

// checkPanel checks a panel's form and parses its queries. ids holds the ids seen so far.
func (d *Dashboard) checkPanel(p decodedPanel, dsVar string, ids map[uint32]string) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{p.where}, args...)...))
	}
	var id *uint32
	var gridPos *dashboard.GridPos
	switch {
	case p.model.RowPanel != nil:
		id, gridPos = &p.model.RowPanel.Id, p.model.RowPanel.GridPos
	case p.model.Panel != nil:
		id, gridPos = p.model.Panel.Id, p.model.Panel.GridPos
	default:
		return nil // not decoded: reported already
	}
	switch {
	case id == nil:
		fail("no id")
	case ids[*id] != "":
		fail("id %d is also the id of %s", *id, ids[*id])
	default:
		ids[*id] = p.where
	}
	if gridPos == nil || gridPos.W <= 0 || gridPos.H <= 0 {
		fail("no gridPos with a width and a height")
	}
	panel := p.model.Panel
	if panel == nil {
		return errs
	}
	// The SDK decodes fieldConfig leniently, all but its "custom" part: decode it strictly here.
	if len(p.rawFieldConfig) > 0 {
		var fc dashboard.FieldConfigSource
		errs = append(errs, buildErrors(p.where+": fieldConfig", fc.UnmarshalJSONStrict(p.rawFieldConfig))...)
	}
	if panel.Datasource != nil && dsVar != "" {
		if err := usesVariable(panel.Datasource, dsVar); err != nil {
			fail("%v", err)
		}
	}
	if len(p.targets) == 0 {
		fail("no targets")
	}
	refIDs := map[string]bool{}
	for i, q := range p.targets {
		if q == nil {
			continue // did not decode: reported already
		}
		ref := fmt.Sprintf("targets[%d]", i)
		if q.RefId != nil && *q.RefId != "" {
			ref = "target " + *q.RefId
			if refIDs[*q.RefId] {
				fail("%s: refId used twice", ref)
			}
			refIDs[*q.RefId] = true
		}
		if dsVar != "" { // else reported for the dashboard
			if err := usesVariable(q.Datasource, dsVar); err != nil {
				fail("%s: %v", ref, err)
			}
		}
		if strings.TrimSpace(q.Expr) == "" {
			fail("%s: no expr", ref)
			continue
		}
		expr, err := d.parse(q.Expr)
		if err != nil {
			fail("%s: %v", ref, err)
			continue
		}
		d.Queries = append(d.Queries, Query{Where: p.where + ": " + ref, Expr: expr})
	}
	return errs
}

// usesVariable says whether ds is the datasource variable dsVar.
func usesVariable(ds *common.DataSourceRef, dsVar string) error {
	if ds == nil || ds.Uid == nil {
		return fmt.Errorf("no datasource: it must be ${%s}", dsVar)
	}
	if uid := *ds.Uid; uid != "${"+dsVar+"}" && uid != "$"+dsVar {
		return fmt.Errorf("datasource %q is not the variable ${%s}", uid, dsVar)
	}
	if ds.Type != nil && *ds.Type != "prometheus" {
		return fmt.Errorf("datasource type %q is not prometheus", *ds.Type)
	}
	return nil
}

// variableRE matches Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]] and
// [[name:format]]. Grafana leaves a name it does not know as it is, so "$1" of label_replace is no
// variable; neither is a name that starts with a digit here.
var variableRE = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]`)

// Grafana's global variables that stand for a duration, and those that stand for a number.
var (
	durationGlobals = map[string]bool{"__interval": true, "__rate_interval": true, "__range": true}
	numberGlobals   = map[string]bool{"__interval_ms": true, "__range_s": true, "__range_ms": true}
)

// Substitute replaces Grafana's variables in expr by stand-ins the PromQL parser accepts where
// the variable may stand: a duration for the interval globals and interval variables, a number
// for the numeric globals, an identifier (which is also a valid string and regular expression)
// for the others. A variable the dashboard does not define is an error: Grafana would send it
// to Prometheus as it is.
func Substitute(expr string, variables map[string]dashboard.VariableModel) (string, error) {
	var unknown []string
	out := variableRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := variableRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		switch v, defined := variables[name]; {
		case name[0] >= '0' && name[0] <= '9':
			return m
		case durationGlobals[name]:
			return "5m"
		case numberGlobals[name]:
			return "300"
		case !defined:
			unknown = append(unknown, m)
			return m
		case v.Type == dashboard.VariableTypeInterval:
			return "5m"
		default:
			return "var_" + name
		}
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variables %s", strings.Join(unknown, ", "))
	}
	return out, nil
}

func (d *Dashboard) parse(expr string) (parser.Expr, error) {
	s, err := Substitute(expr, d.Variables)
	if err != nil {
		return nil, fmt.Errorf("expr %q: %w", expr, err)
	}
	e, err := parser.ParseExpr(s)
	if err != nil {
		return nil, fmt.Errorf("expr %q: %w", expr, err)
	}
	return e, nil
}
