package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
)

// A reload applies deny_log and metrics_listen at once (issue 23): the
// deny log reader moves to the new NFLOG group, so a denied connect after
// the edit is a deny event, and the metrics endpoint moves to the new
// address; nothing is left waiting for a restart. Before, both kept their
// start-time settings (restart_required) and the denies went unreported.
func TestReloadAppliesDenyLogAndMetrics(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", mainConfig+"deny_log: { mode: none }\nmetrics_listen: 127.0.0.1:9464\n")
	w.start()
	if _, err := w.metricsGet("127.0.0.1:9464"); err != nil {
		t.Fatalf("metrics at start: %v", err)
	}
	m := w.mark()
	edited := time.Now()
	w.write("egressd.yaml", mainConfig+"deny_log: { mode: nflog, group: 101 }\nmetrics_listen: 127.0.0.1:9465\n")
	for _, part := range []string{"deny_log", "metrics"} {
		deadline := time.Now().Add(10 * time.Second)
		for !applied(w.eventsSince(event.SettingsApplied, m), part) {
			if time.Now().After(deadline) {
				t.Fatalf("no settings_applied for %s; restart_required: %v", part, w.eventsSince(event.RestartRequired, m))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("both parts restarted with their new settings %v after the edit (the watch waits 200 ms for a burst to end)", time.Since(edited).Round(time.Millisecond))
	if es := w.eventsSince(event.RestartRequired, m); len(es) > 0 {
		t.Errorf("restart_required for settings a reload applies: %v", es)
	}
	// The control: the edit is enforced as before (the connect is refused),
	// and now reported.
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okRefused, 5*time.Second)
	ev, err := w.waitEvent(event.Deny, m, 5*time.Second)
	if err != nil {
		t.Fatalf("no deny event from the new group: %v", err)
	}
	if ev["dst"] != "198.51.100.20" || ev["dport"] != float64(4444) {
		t.Errorf("deny event %v", ev)
	}
	if body, err := w.metricsGet("127.0.0.1:9465"); err != nil || !strings.Contains(body, "egressd_") {
		t.Errorf("metrics at the new address: %v", err)
	}
	if _, err := w.metricsGet("127.0.0.1:9464"); err == nil {
		t.Error("the old metrics address still answers")
	}
}

func applied(es []map[string]any, part string) bool {
	for _, e := range es {
		if fmt.Sprint(e["part"]) == part {
			return true
		}
	}
	return false
}
