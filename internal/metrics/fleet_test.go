package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrape(m *Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// What the fleet's alerts and dashboards read: the configuration's hash
// (skew is two hashes), whether the last load was rejected, which
// allowlists audit, how long DNS has failed against stale_grace.
func TestFleetMetrics(t *testing.T) {
	m := New()
	at := time.Unix(1765000000, 0)
	m.ConfigLoaded("abc123", time.Hour, map[string]bool{"billing": false, "web": true}, at)
	m.NamesFailing(2, at.Add(-90*time.Second))
	for _, want := range []string{
		`egressd_config_info{hash="abc123"} 1`,
		`egressd_config_last_reload_successful 1`,
		`egressd_config_last_reload_success_timestamp_seconds 1.765e+09`,
		`egressd_allowlist_audit_mode{allowlist="billing"} 0`,
		`egressd_allowlist_audit_mode{allowlist="web"} 1`,
		`egressd_stale_grace_seconds 3600`,
		`egressd_names_failing 2`,
		`egressd_names_failing_since_timestamp_seconds 1.76499991e+09`,
	} {
		if got := scrape(m); !strings.Contains(got, want) {
			t.Errorf("no %s", want)
		}
	}
	// A rejected reload: the hash in force stays, the flag drops.
	m.ConfigRejected()
	m.NamesFailing(0, time.Time{})
	got := scrape(m)
	for _, want := range []string{`egressd_config_info{hash="abc123"} 1`, `egressd_config_last_reload_successful 0`, `egressd_names_failing_since_timestamp_seconds 0`} {
		if !strings.Contains(got, want) {
			t.Errorf("after a rejection: no %s", want)
		}
	}
	// A new configuration replaces the hash and the allowlists.
	m.ConfigLoaded("def456", time.Hour, map[string]bool{"billing": false}, at)
	got = scrape(m)
	if strings.Contains(got, "abc123") || strings.Contains(got, `allowlist="web"`) || !strings.Contains(got, `egressd_config_info{hash="def456"} 1`) {
		t.Errorf("the previous configuration's series remain:\n%s", got)
	}
}
