// Package event owns every event name egressd logs: the "event" key of each
// JSON line, the contract that log pipelines alert on (SPEC.md "Events").
// docs/events.md lists exactly these names; a test keeps the two in step.
// Rename one only with a note: someone's alert matches on it.
package event

import (
	"crypto/sha256"
	"encoding/hex"

	"go.uber.org/zap"
)

// The events, in the order docs/events.md lists them.
const (
	Started            = "started"
	ConfigLoaded       = "config_loaded"
	ConfigRejected     = "config_rejected"
	ConfigRecovered    = "config_recovered"
	ConfigReloaded     = "config_reloaded"
	ConfigReadFailed   = "config_read_failed"
	ConfigFileSkipped  = "config_file_skipped"
	ConfigFallback     = "config_fallback"
	RestartRequired    = "restart_required"
	SettingsApplied    = "settings_applied"
	WatchFailed        = "watch_failed"
	Resolved           = "resolved"
	ResolveFailed      = "resolve_failed"
	ResolveFailing     = "resolve_failing"
	ResolveRecovered   = "resolve_recovered"
	RulesetApplied     = "ruleset_applied"
	ApplyFailed        = "apply_failed"
	UserMissing        = "user_missing"
	UserConflict       = "user_conflict"
	UnitCgroup         = "unit_cgroup"
	DriftRepaired      = "drift_repaired"
	DriftRepeating     = "drift_repeating"
	VerifyFailed       = "verify_failed"
	TableUnowned       = "table_unowned"
	Deny               = "deny"
	DenyOverflow       = "deny_overflow"
	DenyLogFailed      = "deny_log_failed"
	BindDenied         = "bind_denied"
	BindReportsLost    = "bind_reports_lost"
	ListenUnenforced   = "listen_unenforced"
	DNSRefused         = "dns_refused"
	DNSRefusedOverflow = "dns_refused_overflow"
	DNSProxyListening  = "dns_proxy_listening"
	DNSProxyFailed     = "dns_proxy_failed"
	DNSProxyRevoked    = "dns_proxy_revoked"
	MetricsListening   = "metrics_listening"
	MetricsFailed      = "metrics_failed"
	StateFailed        = "state_failed"
	NotifyFailed       = "notify_failed"
	DescriptorLimitLow = "descriptor_limit_low"
	StartRefused       = "start_refused"
	RunFailed          = "run_failed"
	Stopping           = "stopping"
)

// All lists every event name, in the order of docs/events.md.
var All = []string{
	Started, ConfigLoaded, ConfigRejected, ConfigRecovered, ConfigReloaded, ConfigReadFailed, ConfigFileSkipped, ConfigFallback, RestartRequired, SettingsApplied, WatchFailed,
	Resolved, ResolveFailed, ResolveFailing, ResolveRecovered,
	RulesetApplied, ApplyFailed, UserMissing, UserConflict, UnitCgroup,
	DriftRepaired, DriftRepeating, VerifyFailed, TableUnowned,
	Deny, DenyOverflow, DenyLogFailed, BindDenied, BindReportsLost, ListenUnenforced,
	DNSRefused, DNSRefusedOverflow, DNSProxyListening, DNSProxyFailed, DNSProxyRevoked,
	MetricsListening, MetricsFailed, StateFailed, NotifyFailed, DescriptorLimitLow, StartRefused, RunFailed, Stopping,
}

// Field is the "event" field of a log line.
func Field(name string) zap.Field { return zap.String("event", name) }

// MessageID is the journal MESSAGE_ID of an event (128 bits, hex, as
// systemd's catalog uses): the first 16 bytes of SHA-256("egressd event
// "+name). Derived from the name, it is as stable as the name and needs no
// table to keep in step; docs/alerting.md shows how to compute it.
func MessageID(name string) string {
	sum := sha256.Sum256([]byte("egressd event " + name))
	return hex.EncodeToString(sum[:16])
}
