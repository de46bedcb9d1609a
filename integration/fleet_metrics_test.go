package integration

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/state"
)

var configInfoRE = regexp.MustCompile(`(?m)^egressd_config_info\{hash="([0-9a-f]+)"\} 1$`)

// What a fleet's Prometheus reads from the real daemon: the hash of the
// configuration in force (state.json's config_hash), the rejected reload
// that keeps it, the allowlist in audit mode, stale_grace.
func TestFleetMetrics(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", mainConfig+"metrics_listen: 127.0.0.1:9464\n")
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [192.0.2.12:443]\ndns: none\nmode: audit\n", uidB))
	w.start()
	scrape := func() (string, string) {
		t.Helper()
		body, err := w.metricsGet("127.0.0.1:9464")
		if err != nil {
			t.Fatal(err)
		}
		m := configInfoRE.FindAllStringSubmatch(body, -1)
		if len(m) != 1 {
			t.Fatalf("%d egressd_config_info series, want 1:\n%s", len(m), body)
		}
		return body, m[0][1]
	}
	body, hash := scrape()
	st, err := state.Read(w.runDir())
	if err != nil || st.ConfigHash != hash {
		t.Errorf("egressd_config_info hash %s, state.json config_hash %v (%v)", hash, st, err)
	}
	for series, want := range map[string]float64{
		"egressd_config_last_reload_successful": 1, `egressd_allowlist_audit_mode{allowlist="web"}`: 1,
		`egressd_allowlist_audit_mode{allowlist="billing"}`: 0, "egressd_stale_grace_seconds": 30,
	} {
		if v, ok := metricValue(body, series); !ok || v != want {
			t.Errorf("%s = %v (found %v), want %v", series, v, ok, want)
		}
	}

	// A bad edit: rejected, the hash in force stays, the flag says so.
	m := w.mark()
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [192.0.2.12:99999]\n", uidB))
	if _, err := w.waitEvent(event.ConfigRejected, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	body, after := scrape()
	if v, _ := metricValue(body, "egressd_config_last_reload_successful"); v != 0 || after != hash {
		t.Errorf("after a rejected edit: reload_successful %v, hash %s (was %s)", v, after, hash)
	}

	// The fix: a new hash, the flag back, web enforced.
	m = w.mark()
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [192.0.2.12:443]\ndns: none\n", uidB))
	if _, err := w.waitEvent(event.ConfigLoaded, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	body, fixed := scrape()
	if v, _ := metricValue(body, "egressd_config_last_reload_successful"); v != 1 || fixed == hash {
		t.Errorf("after the fix: reload_successful %v, hash %s (was %s)", v, fixed, hash)
	}
	if v, _ := metricValue(body, `egressd_allowlist_audit_mode{allowlist="web"}`); v != 0 {
		t.Errorf("web enforces now, yet egressd_allowlist_audit_mode = %v", v)
	}
}
