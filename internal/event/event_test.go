package event

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// docs/events.md lists exactly the events of this package, in its order.
func TestDocsListEveryEvent(t *testing.T) {
	b, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, "|"); len(f) > 2 && strings.HasPrefix(strings.TrimSpace(f[1]), "`") {
			documented = append(documented, strings.Trim(strings.TrimSpace(f[1]), "`"))
		}
	}
	if strings.Join(documented, " ") != strings.Join(All, " ") {
		t.Errorf("docs/events.md lists\n  %v\nthe package\n  %v", documented, All)
	}
	seen := map[string]bool{}
	for _, n := range All {
		if seen[n] {
			t.Errorf("%s listed twice", n)
		}
		seen[n] = true
	}
}

// Every constant of event.go is in All (a name added without it would be
// missing from the docs check above).
func TestAllHasEveryConstant(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "event.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]bool{}
	for _, n := range All {
		in[n] = true
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			for _, v := range sp.(*ast.ValueSpec).Values {
				if lit, ok := v.(*ast.BasicLit); ok && !in[strings.Trim(lit.Value, `"`)] {
					t.Errorf("event %s is not in All", lit.Value)
				}
			}
		}
	}
}
