package metrics

import (
	"os"
	"regexp"
	"testing"
)

// Every metric egressd exports is in docs/alerting.md's table (issue 25:
// the DNS proxy's were missing).
func TestMetricsDocumented(t *testing.T) {
	src, err := os.ReadFile("metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/alerting.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`(?:Name: |NewDesc\()"(egressd_[a-z_]+)"`).FindAllSubmatch(src, -1)
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in metrics.go", len(names))
	}
	for _, n := range names {
		if !regexp.MustCompile("(?m)^\\|[^\\n|]*`" + string(n[1]) + "[`{]").Match(doc) {
			t.Errorf("%s is not in docs/alerting.md's metrics table", n[1])
		}
	}
}
