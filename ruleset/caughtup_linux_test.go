//go:build linux

package ruleset

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
)

// CaughtUp (the periodic verification's shortcut) is true only while the
// monitor runs and has read the announcement of every transaction up to
// now: after egressd's own transactions (no report on the channel), and
// after another process's once the monitor has read it (reported on the
// channel: the loop then verifies in full). Never before Watch, never
// after the monitor stopped.
func TestCaughtUp(t *testing.T) {
	e := newEnv(t)
	if caught, _ := e.k.CaughtUp(); caught {
		t.Fatal("caught up without a monitor")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := e.k.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	caughtUp := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			caught, err := e.k.CaughtUp()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if caught {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the monitor never caught up", what)
			}
		}
	}
	if caught, _ := e.k.CaughtUp(); caught {
		t.Fatal("caught up with no table (a missing table is for a full verification to find)")
	}
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(uidA), Proxy: true}},
		Resolvers:  []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
		DenyLog:    config.Defaults().DenyLog,
		ProxyPort:  153,
	})
	for i := 0; i < 3; i++ {
		if err := e.k.ApplyFull(p); err != nil {
			t.Fatal(err)
		}
	}
	caughtUp("after our own transactions")
	select {
	case <-ch:
		t.Fatal("our own transactions were reported")
	default:
	}
	// Another process's transaction: reported, then caught up.
	if _, out, err := e.w.Run("nft", "add", "table", "inet", "other"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("another process's transaction was not reported")
	}
	caughtUp("after another process's transaction")
	cancel()
	for range ch {
	}
	if caught, _ := e.k.CaughtUp(); caught {
		t.Fatal("caught up with the monitor stopped")
	}
}
