package controller

import (
	"errors"
	"reflect"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/backoff"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/state"
	"go.uber.org/zap"
)

// configRetry spaces the reads of a configuration whose read failed for a
// reason that passes (config.Transient: descriptors exhausted, a file
// mid-replace). The cap is short: the edit should land within seconds of
// the cause going away, and a read is cheap.
var configRetry = backoff.Exp{Base: 200 * time.Millisecond, Max: 2 * time.Second}

// load reads the configuration. A read that failed for a reason that
// passes is logged as config_read_failed (with the reason), not as a
// rejection, and retry schedules the next read: again is true then. The
// caller resets retry once every read of the reload succeeded.
func (c *Controller) load(retry *backoff.Retry) (cfg *config.Config, again bool, err error) {
	cfg, err = config.LoadTrusted(c.o.ConfigPath, c.o.ConfigRequired, c.o.Trust)
	if _, transient := config.Transient(err); !transient {
		return cfg, false, err
	}
	c.readFailed(retry, err)
	return nil, true, err
}

// readFailed logs a read that failed for a reason that passes and
// schedules the next on retry.
func (c *Controller) readFailed(retry *backoff.Retry, err error) {
	reason, _ := config.Transient(err)
	wait := retry.Fail()
	// The first failure and then about once a minute: the reads go on
	// every 2 s for as long as the cause lasts.
	if n := retry.Failures(); n == 1 || n%30 == 0 {
		c.o.Log.Warn("the configuration could not be read, for a reason that passes (not its contents); "+
			"the last good configuration stays in force; reading it again", event.Field(event.ConfigReadFailed),
			zap.String("reason", reason), zap.Int("attempt", n), zap.Duration("retry_in", wait), zap.Error(err))
	}
}

// setConfig puts cfg in force: every part follows it.
func (c *Controller) setConfig(cfg *config.Config) {
	c.cfg = cfg
	c.dns.setConfig(cfg)
	c.lookupUsers(true)
	// A configuration change that only changes elements is applied as a
	// delta like DNS churn; one that changes chains, users or logging
	// rebuilds the table (sync compares structures). Rebuilding on every
	// edit would reset the rate limits and counters for nothing.
	entries := 0
	for _, a := range cfg.Allowlists {
		entries += len(a.Entries)
	}
	c.attr.configChanged(cfg)
	// Published at once, not a second later, even when the kernel needs no
	// change (a comment, a reordering, a user that does not exist yet):
	// check compares the configuration the daemon enforces with the files.
	c.pub.changed(true)
	for _, f := range cfg.Skipped {
		c.o.Log.Warn("file in the allow directory ignored: allowlists are NAME.yaml or NAME.yml", event.Field(event.ConfigFileSkipped),
			zap.String("file", f), zap.String("allow_dir", cfg.AllowDir))
	}
	c.keepLastGood(cfg)
	c.dns.forgetFailing()
	if c.o.Metrics != nil { // the digest costs a JSON encoding of the whole configuration
		audit := map[string]bool{}
		for _, a := range cfg.Allowlists {
			audit[a.Name] = a.Mode == config.ModeAudit
		}
		c.o.Metrics.ConfigLoaded(state.Hash(cfg), cfg.StaleGrace, audit, c.o.Now())
	}
	c.o.Log.Info("configuration loaded", event.Field(event.ConfigLoaded), zap.String("file", cfg.File),
		zap.String("allow_dir", cfg.AllowDir), zap.Int("allowlists", len(cfg.Allowlists)),
		zap.Int("entries", entries), zap.Int("names", len(cfg.Names())), zap.Stringers("resolvers", cfg.Resolvers))
	if c.o.OnConfig != nil {
		c.o.OnConfig(cfg)
	}
}

// logRejected reports a configuration that cannot be loaded. At start
// there is no last good configuration to keep: the daemon does not start.
func (c *Controller) logRejected(err error, atStart bool) {
	msg := "configuration rejected; the last good configuration stays in force"
	if atStart {
		msg = "configuration rejected; egressd cannot start without a valid configuration"
	}
	c.o.Metrics.ConfigRejected()
	var ce config.Errors
	if !errors.As(err, &ce) {
		c.o.Log.Error(msg, event.Field(event.ConfigRejected), zap.Error(err))
		return
	}
	for _, e := range ce {
		fields := []zap.Field{event.Field(event.ConfigRejected), zap.String("file", e.Pos.File), zap.Int("line", e.Pos.Line), zap.Int("column", e.Pos.Col), zap.String("error", e.Msg)}
		if e.Fix != "" {
			fields = append(fields, zap.String("fix", e.Fix))
		}
		c.o.Log.Error(msg, fields...)
	}
}

// Why a reload was asked for, in its config_reloaded line.
const (
	ReloadSignal = "signal" // SIGHUP
	ReloadWatch  = "watch"  // a configuration file changed
)

// Reload asks the loop to reload the configuration, as for a changed file
// (ReloadWatch).
func (c *Controller) Reload() { c.ReloadBy(ReloadWatch) }

// ReloadBy asks the loop to reload the configuration; by says why
// (ReloadSignal, ReloadWatch). Requests that arrive while one is pending
// are one reload, whose line names every reason.
func (c *Controller) ReloadBy(by string) {
	c.reloadMu.Lock()
	if c.reloadBy == nil {
		c.reloadBy = map[string]bool{}
	}
	c.reloadBy[by] = true
	c.reloadMu.Unlock()
	select {
	case c.reload <- struct{}{}:
	default:
	}
}

// keepReloadReasons puts back the reasons of a reload whose read is retried.
func (c *Controller) keepReloadReasons(by []string) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	if c.reloadBy == nil {
		c.reloadBy = map[string]bool{}
	}
	for _, r := range by {
		c.reloadBy[r] = true
	}
}

func (c *Controller) reloadReasons() []string {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	var by []string
	for _, r := range []string{ReloadSignal, ReloadWatch} {
		if c.reloadBy[r] {
			by = append(by, r)
		}
	}
	c.reloadBy = nil
	return by
}

// doReload reloads the configuration and logs one config_reloaded line
// with the outcome; after a rejection, the configuration that loads again
// (changed or not) is reported once as config_recovered.
func (c *Controller) doReload() {
	by := c.reloadReasons()
	cfg, again, err := c.load(&c.cfgRetry)
	if again {
		// Read again (the hosts file too) when c.cfgRetry is due; the
		// reload's line comes with the read that succeeds.
		c.keepReloadReasons(by)
		return
	}
	outcome := "unchanged"
	defer func() {
		c.o.Log.Info("configuration reload: "+outcome, event.Field(event.ConfigReloaded), zap.String("outcome", outcome),
			zap.Strings("by", by), zap.String("file", c.o.ConfigPath))
	}()
	defer func() { // with the configuration in force after this reload
		if err := c.dns.reloadHosts(c.cfg.HostsFile); err != nil {
			c.readFailed(&c.cfgRetry, err)
			return
		}
		c.cfgRetry.Reset() // every read of this reload succeeded
	}()
	if err != nil {
		c.logRejected(err, false)
		c.rejected, outcome = true, "rejected"
		return
	}
	if cfg.AllowDirMissing && len(c.cfg.Allowlists) > 0 {
		c.logRejected(config.Errors{{Pos: config.Pos{File: cfg.AllowDir}, Msg: "the allow directory is missing; " +
			"keeping the last good configuration (to lift restrictions, delete the allowlist files, not the directory)"}}, false)
		c.rejected, outcome = true, "rejected"
		return
	}
	same := reflect.DeepEqual(cfg, c.cfg)
	if c.rejected {
		c.rejected = false
		outcome = "recovered"
		c.o.Log.Info("the configuration is valid again and in force", event.Field(event.ConfigRecovered),
			zap.String("file", cfg.File), zap.Int("allowlists", len(cfg.Allowlists)),
			zap.Bool("changed", !same)) // changed: it differs from the last good configuration
	}
	if same {
		// An editor touched a file without changing it, /etc/passwd changed,
		// or a rejected edit was undone.
		c.lookupUsers(false)
		return
	}
	if outcome == "unchanged" {
		outcome = "loaded"
	}
	// The NFLOG reader, the metrics endpoint and the watch follow the new
	// configuration through Options.OnConfig (internal/daemon).
	c.setConfig(cfg)
}
