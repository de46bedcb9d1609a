package logs

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"

	"go.uber.org/zap"
)

// run --once buffers its lines: every one reaches the stream, whole and in
// order, once flush has run; before it, an error is written at once.
func TestBufferedCoreLosesNothing(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Setenv("JOURNAL_STREAM", "")
	core, flush := NewBufferedCore(encoder(), f, zap.InfoLevel)
	log := zap.New(core)
	const n = 20000 // more than one 256 KiB block
	for i := 0; i < n; i++ {
		log.Info("resolved", zap.Int("i", i), zap.String("name", "n.bench.test"))
	}
	log.Error("apply failed")
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	i := 0
	for ; sc.Scan(); i++ {
		var line struct {
			Msg string `json:"msg"`
			I   *int   `json:"i"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %d: %v: %q", i, err, sc.Text())
		}
		if i < n && (line.I == nil || *line.I != i) {
			t.Fatalf("line %d: %q, want entry %d", i, sc.Text(), i)
		}
		if i == n && line.Msg != "apply failed" {
			t.Fatalf("last line %q", sc.Text())
		}
	}
	if i != n+1 {
		t.Fatalf("%d lines, want %d", i, n+1)
	}
}
