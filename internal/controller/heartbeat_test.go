package controller

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
)

// stuckKernel blocks transactions while held: a hung netlink call.
type stuckKernel struct {
	*ruleset.Fake
	held    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (k *stuckKernel) hang() {
	if k.held.Load() {
		k.entered <- struct{}{}
		<-k.release
	}
}

func (k *stuckKernel) ApplyFull(p ruleset.Plan) error { k.hang(); return k.Fake.ApplyFull(p) }

func (k *stuckKernel) ApplyDelta(p ruleset.Plan, d ruleset.Delta) error {
	k.hang()
	return k.Fake.ApplyDelta(p, d)
}

// The watchdog heartbeat comes from the loop itself: while the loop is
// stuck in a transaction, no beat; once it returns, beats resume.
func TestHeartbeatStopsWhenTheLoopHangs(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	k := &stuckKernel{Fake: f.k, entered: make(chan struct{}), release: make(chan struct{})}
	var beats atomic.Int64
	f.c.o.Kernel = k
	f.c.o.Heartbeat = Heartbeat{Every: time.Millisecond, Beat: func() error { beats.Add(1); return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.c.Run(ctx) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("beats after start", func() bool { return beats.Load() >= 3 })
	k.held.Store(true)
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.2:443]\n")
	f.c.Reload() // the changed configuration's transaction hangs
	select {
	case <-k.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the reload did not reach the kernel")
	}
	stuck := beats.Load()
	time.Sleep(50 * time.Millisecond) // 50 periods
	if n := beats.Load(); n != stuck {
		t.Errorf("%d beats while the loop was stuck in a transaction: the heartbeat does not come from the loop", n-stuck)
	}
	k.held.Store(false)
	close(k.release)
	waitFor("beats after the transaction returned", func() bool { return beats.Load() > stuck+2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A heartbeat that cannot be sent (the descriptor table full, systemd's
// socket buffer full) is logged and sent again within a second, not a
// period later: a daemon that is healthy is not killed by the watchdog for
// one lost datagram. READY=1 that cannot be sent is logged too.
func TestHeartbeatFailureIsLoggedAndRetried(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	old := beatRetry
	beatRetry = 5 * time.Millisecond
	t.Cleanup(func() { beatRetry = old })
	var tries, sent atomic.Int64
	f.c.o.Heartbeat = Heartbeat{Every: time.Hour, Beat: func() error {
		if tries.Add(1) <= 3 {
			return syscall.EMFILE
		}
		sent.Add(1)
		return nil
	}}
	f.c.o.Notify = func(s string) error {
		if s == "READY=1" {
			return syscall.EAGAIN
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.c.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); sent.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat reached systemd after %d failed tries (period 1h): failed beats are not retried", tries.Load())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	failed := f.logs.FilterField(event.Field(event.NotifyFailed)).All()
	var beats, ready int
	for _, e := range failed {
		switch e.ContextMap()["notification"] {
		case "WATCHDOG":
			beats++
		case "READY":
			ready++
		}
	}
	if beats != 3 || ready != 1 {
		t.Errorf("notify_failed logged for %d heartbeats (want 3) and %d READY (want 1)", beats, ready)
	}
}
