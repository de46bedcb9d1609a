package phase

import (
	"strings"
	"testing"
)

func TestOffRecordsNothing(t *testing.T) {
	on.Store(false)
	spans = nil
	Start("x")()
	var b strings.Builder
	if err := Write(&b); err != nil || b.Len() != 0 {
		t.Fatalf("off: wrote %q, %v", b.String(), err)
	}
}

func TestOnRecordsInStartOrder(t *testing.T) {
	defer on.Store(false)
	spans = nil
	Enable()
	endA := Start("a")
	endB := Start("b")
	endB()
	endA()
	var b strings.Builder
	if err := Write(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "a ") || !strings.HasPrefix(lines[1], "b ") {
		t.Fatalf("got %q, want a then b", lines)
	}
}
