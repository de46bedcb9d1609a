package controller

import (
	"context"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// exhaustDescriptors fills this process's descriptor table, as a local
// user's connection flood filled the daemon's, until the returned release.
func exhaustDescriptors(t *testing.T) (release func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: min(old.Cur, 4096), Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	var fds []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fds = append(fds, fd)
	}
	return func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &old) //nolint:errcheck
	}
}

// An edit that lands while the daemon is out of descriptors is not a
// rejected configuration: the read is retried, and the edit takes effect
// once descriptors are free, without a SIGHUP or another edit.
func TestReloadAtTheDescriptorLimitIsRetried(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	old := configRetry
	configRetry.Base, configRetry.Max = 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { configRetry = old })
	f.c.cfgRetry.Exp = configRetry
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("the first apply", func() bool { return len(f.events(event.Started)) > 0 })
	loaded := len(f.events(event.ConfigLoaded))

	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.2:443]\n") // the edit
	release := exhaustDescriptors(t)
	f.c.Reload() // the watcher's wake-up, at the descriptor limit
	waitFor("the reload at the descriptor limit", func() bool {
		return len(f.events(event.ConfigReadFailed)) > 0 || len(f.events(event.ConfigRejected)) > 0
	})
	time.Sleep(100 * time.Millisecond) // a few retries, still at the limit
	release()

	waitFor("the edit to load once descriptors are free", func() bool { return len(f.events(event.ConfigLoaded)) > loaded })
	if n := len(f.events(event.ConfigRejected)); n > 0 {
		t.Errorf("%d config_rejected events for a read that failed at the descriptor limit: %v", n, f.events(event.ConfigRejected)[0].ContextMap())
	}
	e := f.events(event.ConfigReadFailed)[0].ContextMap()
	if e["reason"] != "EMFILE" {
		t.Errorf("config_read_failed says reason %v, want EMFILE: %v", e["reason"], e)
	}
}

// At start too: the files are read again while the read fails for a reason
// that passes, instead of counting as invalid (no start, or the last good
// configuration).
func TestStartAtTheDescriptorLimitIsRetried(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	old := configRetry
	configRetry.Base, configRetry.Max = 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { configRetry = old })
	core, logs := observer.New(zap.DebugLevel)
	opts := *f.c.o
	opts.Log = zap.New(core)
	release := exhaustDescriptors(t)
	type result struct {
		c   *Controller
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := New(opts)
		done <- result{c, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); logs.FilterField(event.Field(event.ConfigReadFailed)).Len() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			t.Fatalf("no config_read_failed at start at the descriptor limit: %v", logs.All())
		}
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatalf("start after descriptors were freed: %v", r.err)
	}
	if len(r.c.Config().Allowlists) != 1 {
		t.Errorf("started with %d allowlists", len(r.c.Config().Allowlists))
	}
	if n := logs.FilterField(event.Field(event.ConfigRejected)).Len(); n > 0 {
		t.Errorf("%d config_rejected at start for a read that failed at the descriptor limit", n)
	}
}

// Every reload says its outcome; after a rejection the configuration that
// loads again is reported once (issue 25: undoing a bad edit, or SIGHUP,
// logged nothing).
func TestReloadOutcomeAndRecovery(t *testing.T) {
	good := "user: billing\nallow: [192.0.2.1:443]\n"
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": good})
	step := func(by, body, outcome string, recovered int, changed bool) {
		t.Helper()
		if body != "" {
			f.write(t, "allow.d/billing.yaml", body)
		}
		f.c.ReloadBy(by)
		<-f.c.reload
		f.c.doReload()
		lines := f.events(event.ConfigReloaded)
		last := lines[len(lines)-1].ContextMap()
		if last["outcome"] != outcome || len(last["by"].([]interface{})) != 1 || last["by"].([]interface{})[0] != by {
			t.Errorf("after %q by %s: config_reloaded %v, want outcome %s", body, by, last, outcome)
		}
		rec := f.events(event.ConfigRecovered)
		if len(rec) != recovered {
			t.Fatalf("after %q: %d config_recovered events, want %d", body, len(rec), recovered)
		}
		if outcome == "recovered" && rec[len(rec)-1].ContextMap()["changed"] != changed {
			t.Errorf("config_recovered %v, want changed %v", rec[len(rec)-1].ContextMap(), changed)
		}
	}
	step(ReloadSignal, "", "unchanged", 0, false)
	step(ReloadWatch, "user: billing\nallow: [192.0.2.1:99999]\n", "rejected", 0, false)
	step(ReloadSignal, "", "rejected", 0, false)   // still bad: no all-clear
	step(ReloadWatch, good, "recovered", 1, false) // the bad edit undone
	step(ReloadWatch, "user: billing\nallow: [192.0.2.1:99999]\n", "rejected", 1, false)
	step(ReloadWatch, "user: billing\nallow: [192.0.2.2:443]\n", "recovered", 2, true)
	step(ReloadSignal, "", "unchanged", 2, false)
	step(ReloadWatch, "user: billing\nallow: [192.0.2.3:443]\n", "loaded", 2, false)
}
