package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrapeT(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func wantLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(body, "\n"+l+"\n") {
			t.Errorf("metrics lack the line %s", l)
		}
	}
}

// Each recorder shows up in the exposition with the labels and values the
// docs and the Prometheus rules (deploy/prometheus) rely on.
func TestRecorders(t *testing.T) {
	m := New()
	m.Applied("full", nil, 1700000000)
	m.Applied("delta", errors.New("netlink: busy"), 1700000001) // an error leaves the success time alone
	m.Applied("delta", nil, 1700000002)
	m.SetElements(map[[2]string]int{{"web", "ipv4"}: 3, {"web", "ipv6"}: 1})
	m.SetElements(map[[2]string]int{{"web", "ipv4"}: 4}) // replaces: ipv6 is gone
	m.NamesFailing(2, time.Unix(1700000100, 500000000))
	m.ConfigLoaded("abc123", 90*time.Second, map[string]bool{"web": false, "ci": true}, time.Unix(1700000200, 0))
	m.ConfigLoaded("def456", 30*time.Second, map[string]bool{"web": true}, time.Unix(1700000300, 0)) // the old hash and ci go
	m.ConfigRejected()
	m.DriftRepaired()
	m.DriftRepaired()
	m.Resolved(0.002)
	m.BindDenied("web", true)
	m.BindDenied("web", false)
	m.BindDenied("web", false)
	m.DenyEvent("web")
	m.NFLOG(5, false)
	m.NFLOG(2, true)
	m.ProxyQuery("web", "answered", 0.001)
	m.ProxyQuery("web", "overload", 9) // not a latency: the query was never handled
	m.ProxyKernel(0.0003)
	m.ProxyWrite(0.0001)
	m.SetDenyCounters(func() (map[string]uint64, error) { return map[string]uint64{"web": 7, "ci": 0}, nil })

	body := scrapeT(t, m)
	wantLines(t, body,
		`egressd_ruleset_applies_total{kind="full",result="ok"} 1`,
		`egressd_ruleset_applies_total{kind="delta",result="error"} 1`,
		`egressd_ruleset_applies_total{kind="delta",result="ok"} 1`,
		`egressd_last_apply_success_timestamp_seconds 1.700000002e+09`,
		`egressd_set_elements{allowlist="web",family="ipv4"} 4`,
		`egressd_names_failing 2`,
		`egressd_names_failing_since_timestamp_seconds 1.7000001005e+09`,
		`egressd_config_info{hash="def456"} 1`,
		`egressd_stale_grace_seconds 30`,
		`egressd_allowlist_audit_mode{allowlist="web"} 1`,
		`egressd_config_last_reload_successful 0`,
		`egressd_config_last_reload_success_timestamp_seconds 1.7000003e+09`,
		`egressd_drift_repairs_total 2`,
		`egressd_resolve_duration_seconds_count 1`,
		`egressd_binds_denied_total{allowlist="web",audit="true"} 1`,
		`egressd_binds_denied_total{allowlist="web",audit="false"} 2`,
		`egressd_deny_events_total{allowlist="web"} 1`,
		`egressd_nflog_packets_total 7`,
		`egressd_nflog_overruns_total 1`,
		`egressd_dns_proxy_queries_total{allowlist="web",result="answered"} 1`,
		`egressd_dns_proxy_queries_total{allowlist="web",result="overload"} 1`,
		`egressd_dns_proxy_duration_seconds_count 1`,
		`egressd_dns_proxy_kernel_seconds_count 1`,
		`egressd_dns_proxy_write_seconds_count 1`,
		`egressd_denied_packets_total{allowlist="web"} 7`,
		`egressd_denied_packets_total{allowlist="ci"} 0`,
	)
	for _, gone := range []string{`family="ipv6"`, `hash="abc123"`, `egressd_allowlist_audit_mode{allowlist="ci"}`} {
		if strings.Contains(body, gone) {
			t.Errorf("metrics still hold %s after it was replaced", gone)
		}
	}

	m.NamesFailing(0, time.Time{})
	wantLines(t, scrapeT(t, m), `egressd_names_failing 0`, `egressd_names_failing_since_timestamp_seconds 0`)
}

// A kernel counter that cannot be read fails the scrape of that metric
// (an invalid metric: the handler answers 500) instead of reporting zero
// denies.
func TestDenyCountersError(t *testing.T) {
	m := New()
	m.SetDenyCounters(func() (map[string]uint64, error) { return nil, errors.New("netlink: no table") })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 500 || !strings.Contains(string(body), "netlink: no table") {
		t.Errorf("scrape with a failing counter read: %d\n%s\nwant 500 naming the error", rec.Code, body)
	}
	if strings.Contains(string(body), "egressd_denied_packets_total{") {
		t.Errorf("a failed read still reported denied packets:\n%s", body)
	}
}

// A nil *Metrics records nothing and does not panic: callers need no checks.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Applied("full", nil, 1)
	m.SetElements(map[[2]string]int{{"a", "ipv4"}: 1})
	m.NamesFailing(1, time.Now())
	m.ConfigLoaded("h", time.Second, nil, time.Now())
	m.ConfigRejected()
	m.DriftRepaired()
	m.Resolved(1)
	m.BindDenied("a", false)
	m.DenyEvent("a")
	m.NFLOG(1, true)
	m.ProxyQuery("a", "answered", 1)
	m.ProxyKernel(1)
	m.ProxyWrite(1)
}
