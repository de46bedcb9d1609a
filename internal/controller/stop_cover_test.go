package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
)

func runUntilStarted(t *testing.T, f *fixture, ctx context.Context) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f.c.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); len(f.events(event.Started)) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not started")
		}
	}
	return done
}

// The nftables monitor ending is said once (drift is then found by the
// periodic check only) and the loop goes on.
func TestKernelMonitorEnds(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	events := make(chan struct{})
	f.c.setKernelEvents(events)
	ctx, cancel := context.WithCancel(context.Background())
	done := runUntilStarted(t, f, ctx)
	close(events)
	for deadline := time.Now().Add(10 * time.Second); len(f.events(event.WatchFailed)) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the monitor's end was not said")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(f.events(event.WatchFailed)); n != 1 {
		t.Errorf("%d watch_failed events, want 1", n)
	}
}

// on_exit: remove that cannot remove the table is the daemon's exit
// error (systemd shows it), not a quiet stop that leaves the rules.
func TestStopRemoveFails(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	f.write(t, "egressd.yaml", fmt.Sprintf("resolvers: [%q]\non_exit: remove\n", f.dns.Addr.String()))
	f.c.doReload()
	ctx, cancel := context.WithCancel(context.Background())
	done := runUntilStarted(t, f, ctx)
	f.k.FailNext(ruleset.FakeRemove, errors.New("netlink: device or resource busy"))
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "remove table on exit") || f.k.Removed {
		t.Errorf("Run = %v, table removed %v; want the removal's error", err, f.k.Removed)
	}
}
