package controller

import (
	"errors"
	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/lastgood"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Finding 2: invalid files at start enforce the last good configuration,
// loudly (an event, STATUS=); without one, the start fails as before.
func TestStartOnInvalidFilesEnforcesLastGood(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	sd := t.TempDir()
	store := &lastgood.Store{Dir: sd, Trust: config.Trust{Above: sd}}
	// open starts a controller on the files; status holds its last STATUS=.
	open := func() (c *Controller, logs *observer.ObservedLogs, status *string, err error) {
		core, logs := observer.New(zap.DebugLevel)
		status = new(string)
		c, err = New(Options{ConfigPath: filepath.Join(f.dir, "egressd.yaml"), ConfigRequired: true, Kernel: f.k,
			Log: zap.New(core), Users: users, LastGood: store, Trust: config.Trust{Above: f.dir}, Notify: func(s string) error {
				if v, ok := strings.CutPrefix(s, "STATUS="); ok {
					*status = v
				}
				return nil
			}})
		return c, logs, status, err
	}
	if _, _, _, err := open(); err != nil { // valid: kept as the last good one
		t.Fatal(err)
	}
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443\n") // a typo
	c, logs, status, err := open()
	if err != nil {
		t.Fatalf("invalid files with a last good configuration: %v", err)
	}
	if _, err := c.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(f.k.Plan.Allowlists) != 1 || f.k.Plan.Allowlists[0].Subject != ruleset.UserSubject(1001) {
		t.Fatalf("the last good allowlist is not enforced: %+v", f.k.Plan.Allowlists)
	}
	if logs.FilterField(zap.String("event", event.ConfigFallback)).Len() != 1 || logs.FilterField(zap.String("event", event.ConfigRejected)).Len() == 0 {
		t.Errorf("no config_rejected + config_fallback events: %v", logs.All())
	}
	if !strings.Contains(*status, "last good") {
		t.Errorf("STATUS= does not say so: %q", *status)
	}
	// Fixed on disk: the reload takes it, and it becomes the last good one.
	// (The same content as the last good one: the kernel does not change.)
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
	c.doReload()
	if store.Owns(c.Config().File) {
		t.Error("still on the last good configuration after the files were fixed")
	}
	c.sync() //nolint:errcheck
	if strings.Contains(*status, "last good") {
		t.Errorf("STATUS= after the fix: %q", *status)
	}
	// No last good configuration: refuse to start, as before.
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443\n")
	store.Dir = t.TempDir()
	if _, _, _, err := open(); !errors.Is(err, ErrConfig) {
		t.Errorf("no last good configuration: New = %v, want ErrConfig", err)
	}
}
