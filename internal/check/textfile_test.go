package check

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTextfile(t *testing.T) {
	r := &Report{Status: "problems", ExitCode: ExitProblem, CheckedAt: time.Unix(1765000000, 0),
		Problems: []Problem{{Kind: "drift_elements"}, {Kind: "drift_elements"}, {Kind: "name_failed"}}}
	path := filepath.Join(t.TempDir(), "egressd.prom")
	os.WriteFile(path, []byte("old\n"), 0o644) //nolint:errcheck
	if err := WriteTextfile(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	for _, want := range []string{
		"egressd_check_exit_code 1\n", `egressd_check_status{status="problems"} 1`, `egressd_check_status{status="ok"} 0`,
		`egressd_check_problems{kind="any"} 3`, `egressd_check_problems{kind="drift_elements"} 2`,
		"egressd_check_config_matches 0\n", "egressd_check_timestamp_seconds 1765000000.000\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	// The format is what Prometheus parses (promtool, when installed).
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(got)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
}
