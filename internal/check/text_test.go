package check

import (
	"strings"
	"testing"
)

// Multi-line details stay indented under their problem; each error once.
func TestWriteTextIndentsMultiLine(t *testing.T) {
	r := &Report{Status: "invalid", Config: ConfigReport{File: "/etc/egressd/egressd.yaml", Errors: []string{"a: one"}},
		Problems: []Problem{{Kind: "config_invalid", Object: "a", Detail: "first\nsecond", Fix: "do\nthis"}}}
	var b strings.Builder
	r.WriteText(&b)
	out := b.String()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if line != "" && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "config:") && !strings.HasPrefix(line, "problems:") {
			t.Errorf("line not indented: %q\n%s", line, out)
		}
	}
	if strings.Count(out, "first") != 1 {
		t.Errorf("error printed %d times\n%s", strings.Count(out, "first"), out)
	}
}
