package controller

import (
	"fmt"
	"github.com/egressd/egressd/internal/event"

	"github.com/egressd/egressd/config"
	"go.uber.org/zap"
)

// event.ConfigFallback: the files were invalid at start; the last good
// configuration is enforced instead.

// LastGood keeps the last configuration that took effect (lastgood.Store).
type LastGood interface {
	Save(*config.Config) error
	Load() (*config.Config, error)
	Owns(file string) bool // whether a configuration came from the store
}

// fallback is the configuration to start with when the files are invalid
// (loadErr): the last good one, loudly; nil when there is none. The
// rejection itself is logged first, saying which of the two happens.
func (c *Controller) fallback(loadErr error) *config.Config {
	var cfg *config.Config
	var err error
	if c.o.LastGood != nil {
		cfg, err = c.o.LastGood.Load()
	}
	c.logRejected(loadErr, cfg == nil)
	switch {
	case c.o.LastGood == nil:
		return nil
	case cfg == nil:
		c.o.Log.Error("the configuration is invalid and there is no last good one: not starting", event.Field(event.ConfigRejected), zap.Error(err))
		return nil
	}
	c.o.Log.Error("the configuration files are invalid: enforcing the last good configuration until they are fixed",
		event.Field(event.ConfigFallback), zap.String("last_good", cfg.File), zap.Int("allowlists", len(cfg.Allowlists)), zap.Error(loadErr))
	return cfg
}

// keepLastGood records a configuration that took effect.
func (c *Controller) keepLastGood(cfg *config.Config) {
	if c.o.LastGood == nil || c.o.LastGood.Owns(cfg.File) {
		return
	}
	if err := c.o.LastGood.Save(cfg); err != nil {
		c.o.Log.Warn("could not keep a copy of the configuration", event.Field(event.ConfigLoaded), zap.Error(err))
	}
	// Clears a "last good" STATUS= at once: the next sync may change nothing.
	c.notify(fmt.Sprintf("STATUS=enforcing %s (%d allowlists)", cfg.File, len(cfg.Allowlists)))
}

// lastGoodNote is appended to systemd's STATUS= while the last good
// configuration stands in for invalid files.
func (c *Controller) lastGoodNote() string {
	if c.o.LastGood == nil || c.cfg == nil || !c.o.LastGood.Owns(c.cfg.File) {
		return ""
	}
	return "; the configuration files are INVALID: enforcing the last good configuration (journalctl -u egressd, egressd check)"
}
