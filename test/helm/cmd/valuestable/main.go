// Command valuestable writes the values table of a Helm chart's README.md from the comments in its
// values.yaml, the way helm-docs does: a key whose comment starts with "# --" gets a row with its
// type, default and the comment's text. The table replaces what README.md has between the lines
// <!-- values:begin --> and <!-- values:end -->.
//
//	go run ./cmd/valuestable ../../charts/agentfleet
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

const (
	begin = "<!-- values:begin -->"
	end   = "<!-- values:end -->"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: valuestable CHART_DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "valuestable:", err)
		os.Exit(1)
	}
}

func run(chart string) error {
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return err
	}
	table, err := Table(values)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(chart, "values.yaml"), err)
	}
	readme := filepath.Join(chart, "README.md")
	old, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	updated, err := Splice(old, table)
	if err != nil {
		return fmt.Errorf("%s: %w", readme, err)
	}
	if bytes.Equal(old, updated) {
		return nil
	}
	return os.WriteFile(readme, updated, 0o644)
}

// Splice puts table between the begin and end markers of readme.
func Splice(readme []byte, table string) ([]byte, error) {
	s := string(readme)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return nil, fmt.Errorf("no %s ... %s lines to put the values table between", begin, end)
	}
	return []byte(s[:i+len(begin)] + "\n" + table + s[j:]), nil
}

// A Row is one documented value.
type Row struct{ Key, Type, Default, Description string }

// Table returns the Markdown table of the documented keys of values (a values.yaml).
func Table(values []byte) (string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(values, &doc); err != nil {
		return "", err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return "", errors.New("not a map of values")
	}
	var rows []Row
	if err := walk(doc.Content[0], "", &rows); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Key, r.Type, r.Default, cell(r.Description))
	}
	return b.String(), nil
}

// walk appends a row for each documented key under m; a documented map is one row, not one per key.
func walk(m *yaml.Node, prefix string, rows *[]Row) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		if desc, ok := description(k.HeadComment); ok {
			def, err := defaultOf(v)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			*rows = append(*rows, Row{Key: key, Type: typeOf(v), Default: def, Description: desc})
			continue
		}
		if v.Kind == yaml.MappingNode {
			if err := walk(v, key+".", rows); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("%s has no \"# --\" comment: document it", key)
	}
	return nil
}

// description is the text of the "# --" comment in a key's head comment (the lines after it join it).
func description(head string) (string, bool) {
	var parts []string
	found := false
	for _, line := range strings.Split(head, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		switch {
		case strings.HasPrefix(line, "-- "):
			found, parts = true, []string{strings.TrimPrefix(line, "-- ")}
		case found && line != "":
			parts = append(parts, line)
		case found:
			parts = nil
			found = false
		}
	}
	return strings.Join(parts, " "), found
}

func typeOf(v *yaml.Node) string {
	switch {
	case v.Kind == yaml.MappingNode:
		return "object"
	case v.Kind == yaml.SequenceNode:
		return "list"
	case v.Tag == "!!int":
		return "int"
	case v.Tag == "!!float":
		return "float"
	case v.Tag == "!!bool":
		return "bool"
	default:
		return "string"
	}
}

// defaultOf is a value as compact JSON in backticks, as helm-docs writes it.
func defaultOf(v *yaml.Node) (string, error) {
	var x any
	if err := v.Decode(&x); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return "", err
	}
	return "`" + strings.TrimSpace(b.String()) + "`", nil
}

// cell escapes what would end a table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
