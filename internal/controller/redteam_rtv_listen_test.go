package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
)

// rtvQuietKernel is a fake kernel whose change monitor always vouches that
// nothing else changed nftables (MonitorCaughtUp); it counts read-backs.
type rtvQuietKernel struct {
	*ruleset.Fake
	readBacks atomic.Int32
}

func (k *rtvQuietKernel) CaughtUp() (bool, error) { return true, nil }

func (k *rtvQuietKernel) Verify(ruleset.Plan) ([]ruleset.Finding, error) {
	k.readBacks.Add(1)
	return nil, nil
}

// rtvListen is a listen enforcer that counts its verifications and finds,
// once, what another process undid.
type rtvListen struct {
	repairs atomic.Int32
	undone  atomic.Bool
}

func (l *rtvListen) Apply(bindguard.Policy, bindguard.Cgroups) error { return nil }
func (l *rtvListen) Remove() error                                   { return nil }
func (l *rtvListen) Pinned() string                                  { return "" }
func (l *rtvListen) Repair() ([]string, error) {
	l.repairs.Add(1)
	if l.undone.Swap(false) {
		return []string{"program detached"}, nil
	}
	return nil, nil
}

// Held. The listen restriction (BPF programs and pinned maps, not
// nftables: no NEWGEN ever announces a change to them) is verified at
// every period even while the monitor vouches for nftables and the table's
// read-back is skipped; a detached program is found and restored at the
// next period. The control: the periods do skip the table's read-back.
func TestRedteamRTVListenVerifiedWhileQuiet(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: []\nlisten: [tcp:8080]\n"})
	k := &rtvQuietKernel{Fake: f.k}
	l := &rtvListen{}
	f.c.o.Kernel, f.c.apply.o.Kernel = k, k
	f.c.o.Listen = l
	f.c.o.VerifyEvery = 30 * time.Millisecond
	f.c.apply.o.VerifyEvery = f.c.o.VerifyEvery
	f.c.setKernelEvents(make(chan struct{}))
	f.c.apply.o.KernelEvents = f.c.o.KernelEvents
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
				t.Fatalf("%s: not within 10 s (%d read-backs, %d listen verifications)", what, k.readBacks.Load(), l.repairs.Load())
			}
		}
	}
	waitFor("the first full verification", func() bool { return k.readBacks.Load() >= 1 })
	reads, repairs := k.readBacks.Load(), l.repairs.Load()
	waitFor("five more periods", func() bool { return l.repairs.Load() >= repairs+5 })
	if k.readBacks.Load() != reads {
		t.Fatalf("control: quiet periods read the table back (%d times)", k.readBacks.Load()-reads)
	}
	// Another process detaches the listen program.
	l.undone.Store(true)
	waitFor("the detached program found", func() bool { return !l.undone.Load() })
	waitFor("drift_repaired for it", func() bool {
		for _, e := range f.events(event.DriftRepaired) {
			if e.ContextMap()["found"] != nil {
				return true
			}
		}
		return false
	})
}
