package check

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// WritePrometheus writes the report in the Prometheus text format, for
// node_exporter's textfile collector (Debian's convention: a timer runs
// check and writes /var/lib/prometheus/node-exporter/egressd.prom).
// Every series is always present, so an alert on it cannot go silent when
// a problem kind disappears.
func (r *Report) WritePrometheus(w io.Writer) {
	fmt.Fprintln(w, "# HELP egressd_check_exit_code Exit code of the last egressd check: 0 in sync, 1 drift or problems, 2 invalid or cannot run.")
	fmt.Fprintln(w, "# TYPE egressd_check_exit_code gauge")
	fmt.Fprintf(w, "egressd_check_exit_code %d\n", r.ExitCode)
	fmt.Fprintln(w, "# HELP egressd_check_status Status of the last egressd check (1 for the status it had).")
	fmt.Fprintln(w, "# TYPE egressd_check_status gauge")
	for _, s := range []string{"ok", "problems", "invalid", "cannot_run"} {
		v := 0
		if r.Status == s {
			v = 1
		}
		fmt.Fprintf(w, "egressd_check_status{status=%q} %d\n", s, v)
	}
	fmt.Fprintln(w, "# HELP egressd_check_problems Problems the last egressd check found, by kind (docs/check.md).")
	fmt.Fprintln(w, "# TYPE egressd_check_problems gauge")
	kinds := map[string]int{}
	for _, p := range r.Problems {
		kinds[p.Kind]++
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "egressd_check_problems{kind=\"any\"} %d\n", len(r.Problems))
	for _, k := range names {
		fmt.Fprintf(w, "egressd_check_problems{kind=%q} %d\n", k, kinds[k])
	}
	fmt.Fprintln(w, "# HELP egressd_check_config_matches 1 when the daemon enforces the configuration on disk.")
	fmt.Fprintln(w, "# TYPE egressd_check_config_matches gauge")
	fmt.Fprintf(w, "egressd_check_config_matches %d\n", b2i(r.Daemon.ConfigMatches))
	fmt.Fprintln(w, "# HELP egressd_check_timestamp_seconds Unix time of the last egressd check.")
	fmt.Fprintln(w, "# TYPE egressd_check_timestamp_seconds gauge")
	fmt.Fprintf(w, "egressd_check_timestamp_seconds %.3f\n", float64(r.CheckedAt.UnixNano())/1e9)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// WriteTextfile replaces path with the report in the Prometheus text
// format atomically (a temporary file in the same directory, renamed), so
// node_exporter never reads half a file.
func WriteTextfile(path string, r *Report) error {
	var b bytes.Buffer
	r.WritePrometheus(&b)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
