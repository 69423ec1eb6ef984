package heartbeat_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/agentfleet/agentfleet/api/heartbeat"
)

// pythonClient is the Python heartbeat client, which keeps a copy of the contract.
const pythonClient = "../../sdk/python/agentfleet_heartbeat.py"

// notInPython are the constants the Python client has no copy of, and why.
var notInPython = map[string]string{
	"TimeFormat": "a Go layout; the Python client writes the same RFC 3339 form with strftime",
}

// The Python client defines each constant of the contract under its name in UPPER_SNAKE_CASE
// (LabelFleet: LABEL_FLEET), with the same value.
func TestPythonClientHasTheContract(t *testing.T) {
	contract := contractConstants(t)
	if contract["LabelFleet"] != heartbeat.LabelFleet || contract["AnnotationState"] != heartbeat.AnnotationState {
		t.Fatalf("reading this package's constants from its source went wrong: %v", contract)
	}
	src, err := os.ReadFile(pythonClient)
	if err != nil {
		t.Fatal(err)
	}
	python := pythonConstants(string(src))
	for name, want := range contract {
		pyName := upperSnake(name)
		got, ok := python[pyName]
		switch {
		case !ok:
			t.Errorf("%s: %s (%s = %q) is missing", pythonClient, pyName, name, want)
		case got != want:
			t.Errorf("%s: %s = %q, the contract's %s is %q", pythonClient, pyName, got, name, want)
		}
	}
}

// contractConstants reads this package's exported constants, by name, from its source: a new
// constant is checked without anyone listing it here.
func contractConstants(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if _, skip := notInPython[name.Name]; skip || !name.IsExported() {
						continue
					}
					lit, ok := valueAt(vs, i).(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Errorf("%s is not a string literal: give its value to the Python client, or say in notInPython why not", name.Name)
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					consts[name.Name] = v
				}
			}
		}
	}
	return consts
}

func valueAt(vs *ast.ValueSpec, i int) ast.Expr {
	if i < len(vs.Values) {
		return vs.Values[i]
	}
	return nil
}

// pythonConstants reads the module-level assignments of string literals: NAME = "value".
func pythonConstants(src string) map[string]string {
	re := regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)\s*=\s*"([^"\\]*)"\s*(?:#.*)?$`)
	consts := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(src, -1) {
		consts[m[1]] = m[2]
	}
	return consts
}

// upperSnake turns a Go name into Python's name for a constant: AnnotationLastStepTime is
// ANNOTATION_LAST_STEP_TIME.
func upperSnake(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
