// Package event owns every event name egressd logs: the "event" key of each
// JSON line, the contract that log pipelines alert on (SPEC.md "Events").
// docs/events.md lists exactly these names; a test keeps the two in step.
// Rename one only with a note: someone's alert matches on it.
package event

import "go.uber.org/zap"

// The events, in the order docs/events.md lists them.
const (
	Started            = "started"
	ConfigLoaded       = "config_loaded"
	ConfigRejected     = "config_rejected"
	ConfigFileSkipped  = "config_file_skipped"
	ConfigFallback     = "config_fallback"
	RestartRequired    = "restart_required"
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
	ListenUnenforced   = "listen_unenforced"
	DNSRefused         = "dns_refused"
	DNSRefusedOverflow = "dns_refused_overflow"
	DNSProxyListening  = "dns_proxy_listening"
	DNSProxyFailed     = "dns_proxy_failed"
	MetricsListening   = "metrics_listening"
	MetricsFailed      = "metrics_failed"
	StateFailed        = "state_failed"
	StartRefused       = "start_refused"
	RunFailed          = "run_failed"
	Stopping           = "stopping"
)

// All lists every event name, in the order of docs/events.md.
var All = []string{
	Started, ConfigLoaded, ConfigRejected, ConfigFileSkipped, ConfigFallback, RestartRequired, WatchFailed,
	Resolved, ResolveFailed, ResolveFailing, ResolveRecovered,
	RulesetApplied, ApplyFailed, UserMissing, UserConflict, UnitCgroup,
	DriftRepaired, DriftRepeating, VerifyFailed, TableUnowned,
	Deny, DenyOverflow, DenyLogFailed, BindDenied, ListenUnenforced,
	DNSRefused, DNSRefusedOverflow, DNSProxyListening, DNSProxyFailed,
	MetricsListening, MetricsFailed, StateFailed, StartRefused, RunFailed, Stopping,
}

// Field is the "event" field of a log line.
func Field(name string) zap.Field { return zap.String("event", name) }
