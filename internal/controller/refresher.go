package controller

import (
	"context"
	"net/netip"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/phase"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/resolver"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// refresher keeps the names' addresses: the resolver cache, the hosts
// file looked up before DNS, the outcome of each DNS round and the set of
// failing names. The loop's goroutine owns it; a round's queries run in the
// background (policy.Query touches only the querier) and their outcomes are
// observed back on the loop.
type refresher struct {
	o       *Options
	querier resolver.Querier
	hosts   *resolver.Hosts
	// hostsGen counts the changes of the hosts file's table (reloadHosts):
	// what hosts.Has says.
	hostsGen uint64
	cache    *resolver.Cache
	failing  map[resolver.Key]time.Time // when each failing lookup started failing
	// changed is told each name whose allowed addresses changed.
	changed func(name string)
}

func cachePolicy(cfg *config.Config) resolver.Policy {
	return resolver.Policy{MinTTL: cfg.MinTTL, MaxTTL: cfg.MaxTTL, Linger: cfg.Linger, StaleGrace: cfg.StaleGrace, MaxAddrs: cfg.MaxAddressesPerName}
}

// newRefresher reads the hosts file of cfg; setConfig must follow.
func newRefresher(o *Options, cfg *config.Config, changed func(string)) *refresher {
	r := &refresher{o: o, failing: map[resolver.Key]time.Time{}, changed: changed, cache: resolver.NewCache(cachePolicy(cfg), o.Now)}
	var err error
	if r.hosts, err = resolver.NewHostsWith(cfg.HostsFile, o.Trust.ReadFile); err != nil {
		o.Log.Error("cannot read the hosts file; names are looked up in DNS only", event.Field(event.ConfigRejected), zap.String("file", cfg.HostsFile), zap.Error(err))
	}
	return r
}

// setConfig follows a configuration: its resolvers, timing and names.
func (r *refresher) setConfig(cfg *config.Config) {
	r.querier = &resolver.HostsFirst{Hosts: r.hosts, Next: r.o.NewQuerier(cfg)}
	r.cache.SetPolicy(cachePolicy(cfg))
	r.cache.Sync(policy.CacheNames(cfg))
}

// forgetFailing drops names that left the configuration from the failing set.
func (r *refresher) forgetFailing() {
	for k := range r.failing {
		if _, ok := r.cache.Status(k); !ok {
			delete(r.failing, k)
		}
	}
	r.o.Metrics.NamesFailing(len(r.failing), r.failingSince())
}

// round is one DNS round: the keys looked up and their outcomes.
type round struct {
	keys []resolver.Key
	out  []policy.Outcome
}

// startRound claims the keys that are due and looks them up in the
// background (the goroutine touches only the querier); the round arrives on
// done, to be observed by the loop. False when nothing is due.
func (r *refresher) startRound(ctx context.Context, done chan<- round) bool {
	due := r.cache.Due()
	if len(due) == 0 {
		return false
	}
	r.cache.Claim(due)
	q, conc := r.querier, r.o.Concurrency
	go func() { done <- round{due, policy.Query(ctx, q, due, conc)} }()
	return true
}

// resolve queries keys and records the outcomes (used by Once and tests),
// each as it comes: the loop's goroutine waits for the round anyway, and
// records the first answers while the rest are asked.
func (r *refresher) resolve(ctx context.Context, keys []resolver.Key) map[string]error {
	endDNS := phase.Start("dns")
	failed := map[string]error{}
	policy.QueryEach(ctx, r.querier, keys, r.o.Concurrency, func(i int, o policy.Outcome) { r.observeOne(keys[i], o, failed) })
	endDNS() // the answers were recorded as they came: no "observe" phase after the last
	r.o.Metrics.NamesFailing(len(r.failing), r.failingSince())
	return failed
}

// observe records outcomes in the cache and logs what changed. Names that
// failed are returned.
func (r *refresher) observe(keys []resolver.Key, out []policy.Outcome) map[string]error {
	failed := map[string]error{}
	for i, k := range keys {
		r.observeOne(k, out[i], failed)
	}
	r.o.Metrics.NamesFailing(len(r.failing), r.failingSince())
	return failed
}

// observeOne records the outcome o of k; a failed name goes in failed.
func (r *refresher) observeOne(k resolver.Key, o policy.Outcome, failed map[string]error) {
	prevOK, known := r.cache.LastOK(k)
	if !known {
		return // the name left the configuration while it was being looked up
	}
	if o.Cancelled {
		// Stopping, or the start deadline: not a DNS failure; the key
		// is asked again.
		failed[k.Name] = o.Err
		r.cache.Release(k)
		return
	}
	r.o.Metrics.Resolved(o.Dur.Seconds())
	ch := r.cache.Observe(k, o.Res, o.Err)
	if len(ch.Added) > 0 || len(ch.Removed) > 0 {
		r.changed(k.Name)
	}
	if o.Err != nil {
		if _, ok := r.failing[k]; !ok {
			r.failing[k] = r.o.Now()
		}
	} else {
		delete(r.failing, k)
	}
	switch {
	case o.Err != nil:
		failed[k.Name] = o.Err
		st, _ := r.cache.Status(k)
		r.o.Log.Warn("resolution failed", event.Field(event.ResolveFailed), zap.String("name", k.Name), zap.String("type", typeName(k)),
			zap.Error(o.Err), zap.Bool("serving_stale", st.ServingStale), zap.Int("addresses", len(st.Addrs)),
			zap.Duration("retry_in", ch.TTL), zap.Stringers("removed", ch.Removed))
	// Info when something changed, or on a name's first answer (even a
	// negative one); a refresh that changes nothing is debug.
	case len(ch.Added) > 0 || len(ch.Removed) > 0 || ch.Dropped > 0 || prevOK.IsZero():
		level := r.o.Log.Info
		if ch.Dropped > 0 {
			level = r.o.Log.Warn
		}
		level("resolved", event.Field(event.Resolved), zap.String("name", k.Name), zap.String("type", typeName(k)),
			zap.Stringers("added", ch.Added), zap.Stringers("removed", ch.Removed),
			zap.Duration("ttl", ch.TTL), zap.Int("dropped", ch.Dropped), zap.Bool("negative", o.Res.Negative))
	default:
		r.o.Log.Debug("resolved, unchanged", event.Field(event.Resolved), zap.String("name", k.Name), zap.String("type", typeName(k)), zap.Duration("ttl", ch.TTL))
	}
}

// expire drops addresses whose lifetime ran out.
func (r *refresher) expire() {
	for k, lost := range r.cache.Expire() {
		r.changed(k.Name)
		r.o.Log.Info("addresses expired", event.Field(event.Resolved), zap.String("name", k.Name), zap.String("type", typeName(k)),
			zap.Stringers("added", []netip.Addr{}), zap.Stringers("removed", lost), zap.String("reason", "ttl+linger or stale_grace ran out"))
	}
}

// reloadHosts re-reads the hosts file (after a watch event, a SIGHUP or a
// configuration change) and makes the names it changed due at once. An
// unreadable file keeps its last contents: names must not silently move to
// DNS answers. A read that failed for a reason that passes
// (config.Transient) is returned, unlogged, for the caller to retry.
func (r *refresher) reloadHosts(file string) error {
	changed, err := r.hosts.Load(file)
	if _, again := config.Transient(err); again {
		return err
	}
	if err != nil {
		r.o.Log.Error("cannot read the hosts file; keeping its last contents", event.Field(event.ConfigRejected),
			zap.String("file", file), zap.Error(err))
		return nil
	}
	if len(changed) == 0 {
		return nil
	}
	r.hostsGen++ // Load replaced the table only now, and says what changed
	r.o.Log.Info("hosts file changed", event.Field(event.ConfigLoaded), zap.String("file", file), zap.Strings("changed", changed))
	r.cache.Refresh(changed)
	return nil
}

func typeName(k resolver.Key) string {
	if k.Type == dns.TypeAAAA {
		return "AAAA"
	}
	return "A"
}

// failingSince is when the longest-failing lookup started failing; zero
// when none fails.
func (r *refresher) failingSince() time.Time {
	var oldest time.Time
	for _, t := range r.failing {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest
}
