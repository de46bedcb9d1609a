// Package metrics exposes egressd's Prometheus metrics. Denied packets are
// read from the kernel's reject counters at scrape time, so they are exact
// even when deny events are rate-limited.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/egressd/egressd/internal/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every metric egressd exports. A nil *Metrics is valid and
// records nothing, so callers need no checks.
type Metrics struct {
	reg            *prometheus.Registry
	applies        *prometheus.CounterVec
	lastApply      prometheus.Gauge
	namesFailing   prometheus.Gauge
	setElements    *prometheus.GaugeVec
	driftRepairs   prometheus.Counter
	resolveSeconds prometheus.Histogram
	denyEvents     *prometheus.CounterVec
	bindsDenied    *prometheus.CounterVec
	bindLost       prometheus.Counter
	nflogPackets   prometheus.Counter
	nflogLost      prometheus.Counter
	proxyQueries   *prometheus.CounterVec
	proxySeconds   prometheus.Histogram
	proxyKernel    prometheus.Histogram
	proxyWrite     prometheus.Histogram
	proxyCacheHits prometheus.Counter
	failingSince   prometheus.Gauge
	staleGrace     prometheus.Gauge
	configInfo     *prometheus.GaugeVec
	reloadOK       prometheus.Gauge
	reloadTime     prometheus.Gauge
	auditMode      *prometheus.GaugeVec
}

// DenyCounters reads the kernel's per-allowlist denied packet counters.
type DenyCounters func() (map[string]uint64, error)

// New registers the metrics. Call SetDenyCounters to export denied packets.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_ruleset_applies_total",
			Help: "Netlink transactions, by kind (full, delta) and result (ok, error)."}, []string{"kind", "result"}),
		lastApply: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_last_apply_success_timestamp_seconds",
			Help: "Unix time of the last successful transaction."}),
		namesFailing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_names_failing",
			Help: "Lookups (name and type) whose last query failed."}),
		setElements: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "egressd_set_elements",
			Help: "Elements in each allowlist's set, by address family."}, []string{"allowlist", "family"}),
		driftRepairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "egressd_drift_repairs_total",
			Help: "Times the daemon found the kernel state changed by someone else and restored it."}),
		resolveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "egressd_resolve_duration_seconds",
			Help: "DNS lookup latency, CNAME chains and retries included.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}),
		denyEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_deny_events_total",
			Help: "Deny events logged (first packets and summaries), by allowlist."}, []string{"allowlist"}),
		bindsDenied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_binds_denied_total",
			Help: "Binds and listener connections refused (or, in audit mode, reported) because the port is not in the allowlist's listen:, by allowlist and audit."}, []string{"allowlist", "audit"}),
		bindLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "egressd_bind_reports_lost_total",
			Help: "Refused binds and dropped listener packets the BPF programs could not report (ring buffer full); refused all the same."}),
		nflogPackets: prometheus.NewCounter(prometheus.CounterOpts{Name: "egressd_nflog_packets_total",
			Help: "Packets received from the NFLOG group."}),
		proxyQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_dns_proxy_queries_total",
			Help: "Queries the DNS proxy handled, per allowlist and result (answered, refused, unlisted_answered, servfail, answer_cap, overload)."}, []string{"allowlist", "result"}),
		proxySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "egressd_dns_proxy_duration_seconds",
			Help:    "Time from a query's arrival to its answer, upstream and kernel included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
		proxyKernel: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "egressd_dns_proxy_kernel_seconds",
			Help:    "Time to put an answer's addresses in the kernel before it is released (waits included).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1}}),
		proxyWrite: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "egressd_dns_proxy_write_seconds",
			Help:    "Duration of one netlink transaction of the DNS proxy's answers (group commit: many answers each).",
			Buckets: []float64{.00002, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1}}),
		proxyCacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "egressd_dns_proxy_cache_hits_total",
			Help: "Queries the DNS proxy took from its answer cache instead of asking the resolvers (each checked and written to the kernel for its asker as a fresh answer)."}),
		nflogLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "egressd_nflog_overruns_total",
			Help: "Times the kernel dropped NFLOG messages because the daemon fell behind."}),
		failingSince: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_names_failing_since_timestamp_seconds",
			Help: "Unix time the longest-failing lookup started failing; 0 when none fails."}),
		staleGrace: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_stale_grace_seconds",
			Help: "stale_grace in force: how long last-known addresses stay allowed while DNS fails."}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "egressd_config_info",
			Help: "Always 1; hash is the digest of the configuration in force (as config_hash in state.json): two hashes across a fleet are a skew."}, []string{"hash"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_config_last_reload_successful",
			Help: "1 when the last load of the configuration succeeded; 0 when it was rejected (the last good one stays in force)."}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful load of the configuration."}),
		auditMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "egressd_allowlist_audit_mode",
			Help: "1 for an allowlist in mode: audit (denies logged, then let through), 0 in enforce."}, []string{"allowlist"}),
	}
	m.reg.MustRegister(m.applies, m.lastApply, m.namesFailing, m.setElements, m.driftRepairs, m.resolveSeconds,
		m.denyEvents, m.bindsDenied, m.bindLost, m.nflogPackets, m.nflogLost, m.proxyQueries, m.proxySeconds, m.proxyKernel, m.proxyWrite, m.proxyCacheHits,
		m.failingSince, m.staleGrace, m.configInfo, m.reloadOK, m.reloadTime, m.auditMode, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(version.Get()))
	return m
}

// SetDenyCounters registers the source of egressd_denied_packets_total.
func (m *Metrics) SetDenyCounters(read DenyCounters) {
	m.reg.MustRegister(&denyCollector{read: read})
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Applied records a transaction.
func (m *Metrics) Applied(kind string, err error, unixTime float64) {
	if m == nil {
		return
	}
	if err != nil {
		m.applies.WithLabelValues(kind, "error").Inc()
		return
	}
	m.applies.WithLabelValues(kind, "ok").Inc()
	m.lastApply.Set(unixTime)
}

// SetElements replaces the per-allowlist set sizes.
func (m *Metrics) SetElements(sizes map[[2]string]int) {
	if m == nil {
		return
	}
	m.setElements.Reset()
	for k, n := range sizes {
		m.setElements.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}

// NamesFailing sets the failing lookup count and when the longest-failing
// one started failing (zero: none).
func (m *Metrics) NamesFailing(n int, since time.Time) {
	if m == nil {
		return
	}
	m.namesFailing.Set(float64(n))
	if since.IsZero() {
		m.failingSince.Set(0)
	} else {
		m.failingSince.Set(float64(since.UnixNano()) / 1e9)
	}
}

// ConfigLoaded records a configuration put in force: its digest, its
// stale_grace, which allowlists audit.
func (m *Metrics) ConfigLoaded(hash string, staleGrace time.Duration, audit map[string]bool, at time.Time) {
	if m == nil {
		return
	}
	m.configInfo.Reset()
	m.configInfo.WithLabelValues(hash).Set(1)
	m.staleGrace.Set(staleGrace.Seconds())
	m.auditMode.Reset()
	for name, on := range audit {
		v := 0.0
		if on {
			v = 1
		}
		m.auditMode.WithLabelValues(name).Set(v)
	}
	m.reloadOK.Set(1)
	m.reloadTime.Set(float64(at.UnixNano()) / 1e9)
}

// ConfigRejected records a load that failed: the last good configuration
// (and its egressd_config_info) stays.
func (m *Metrics) ConfigRejected() {
	if m != nil {
		m.reloadOK.Set(0)
	}
}

// DriftRepaired counts a repair.
func (m *Metrics) DriftRepaired() {
	if m != nil {
		m.driftRepairs.Inc()
	}
}

// Resolved records a lookup's latency.
func (m *Metrics) Resolved(seconds float64) {
	if m != nil {
		m.resolveSeconds.Observe(seconds)
	}
}

// DenyEvent counts a deny event.
func (m *Metrics) BindDenied(allowlist string, audit bool) {
	if m != nil {
		m.bindsDenied.WithLabelValues(allowlist, strconv.FormatBool(audit)).Inc()
	}
}

// BindReportsLost counts n more reports the listen programs could not write.
func (m *Metrics) BindReportsLost(n uint64) {
	if m != nil {
		m.bindLost.Add(float64(n))
	}
}

// DenyEvent counts one deny event of allowlist.
func (m *Metrics) DenyEvent(allowlist string) {
	if m != nil {
		m.denyEvents.WithLabelValues(allowlist).Inc()
	}
}

// NFLOG counts received packets and overruns.
func (m *Metrics) NFLOG(packets int, overrun bool) {
	if m == nil {
		return
	}
	m.nflogPackets.Add(float64(packets))
	if overrun {
		m.nflogLost.Inc()
	}
}

type denyCollector struct{ read DenyCounters }

var denyDesc = prometheus.NewDesc("egressd_denied_packets_total",
	"Packets rejected for each allowlist, from the kernel's counters (exact; not rate-limited).", []string{"allowlist"}, nil)

func (d *denyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- denyDesc }

func (d *denyCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := d.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(denyDesc, err)
		return
	}
	for name, n := range counts {
		ch <- prometheus.MustNewConstMetric(denyDesc, prometheus.CounterValue, float64(n), name)
	}
}

// buildInfo is the constant egressd_build_info{version,commit,go_version} 1:
// dashboards join on it to say which release runs where.
func buildInfo(in version.Info) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "egressd_build_info",
		Help: "Always 1; the labels say which build of egressd runs."}, []string{"version", "commit", "go_version"})
	g.WithLabelValues(in.Version, in.Commit, in.GoVersion).Set(1)
	return g
}

// ProxyQuery counts a query the DNS proxy handled and its latency.
func (m *Metrics) ProxyQuery(allowlist, result string, seconds float64) {
	if m == nil {
		return
	}
	m.proxyQueries.WithLabelValues(allowlist, result).Inc()
	if result != "overload" {
		m.proxySeconds.Observe(seconds)
	}
}

// ProxyKernel records how long an answer waited for the kernel.
func (m *Metrics) ProxyKernel(seconds float64) {
	if m != nil {
		m.proxyKernel.Observe(seconds)
	}
}

// ProxyCacheHit counts a query the DNS proxy took from its answer cache.
func (m *Metrics) ProxyCacheHit() {
	if m != nil {
		m.proxyCacheHits.Inc()
	}
}

// ProxyWrite records one transaction of the DNS proxy's writer.
func (m *Metrics) ProxyWrite(seconds float64) {
	if m != nil {
		m.proxyWrite.Observe(seconds)
	}
}
