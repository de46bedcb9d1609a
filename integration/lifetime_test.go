package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
	"github.com/miekg/dns"
)

// Nothing stays open because egressd stopped (issue 26). An attacker who
// can stall the daemon (SIGSTOP, a hung loop before the watchdog fires) or
// who waits for it to be stopped keeps an address that left DNS open for as
// long as the daemon is down, unless the kernel ends it by itself: every
// element from DNS carries its lifetime as a kernel timeout. Controls: the
// literal entry keeps working, the current answer keeps working for its own
// lifetime (TTL + linger), a DNS-failing name's last answer for
// stale_grace; a restart restores what is allowed before "started".
func TestStoppedDaemonClosesOnTime(t *testing.T) {
	const ttl, linger, staleGrace = 2 * time.Second, 6 * time.Second, 30 * time.Second
	const slack = 2 * time.Second // a loaded CI machine: connects, scheduling
	for _, how := range []string{"SIGSTOP", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			w := newWorld(t)
			w.write("egressd.yaml", fmt.Sprintf("resolvers: [\"192.0.2.53:53\"]\nmin_ttl: 1s\nlinger: %s\nstale_grace: %s\n", linger, staleGrace))
			w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - moved.example.test:443\n  - failing.example.test:443\n  - 203.0.113.5:5353/udp\n", uidA))
			one := func(a string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(a)} }
			w.dns.Set("moved.example.test", dnstest.Record{A: one("192.0.2.10"), TTL: uint32(ttl / time.Second)})
			w.dns.Set("failing.example.test", dnstest.Record{A: one("198.51.100.20"), TTL: uint32(ttl / time.Second)})
			w.start()
			w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
			w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
			if how == "SIGSTOP" { // check shows the kernel's lifetimes (once is enough)
				checkLifetimes(t, w)
			}

			// failing.example.test fails; then moved.example.test moves to
			// .11, and .10 lingers (TTL + linger from its last answer).
			m := w.mark()
			failFrom := time.Now() // the last answer came before this
			w.dns.Set("failing.example.test", dnstest.Record{Rcode: dns.RcodeServerFailure})
			for {
				e, err := w.waitEvent(event.ResolveFailed, m, 3*ttl)
				if err != nil {
					t.Fatal(err)
				}
				if e["name"] == "failing.example.test" {
					break
				}
				m++
			}
			w.dns.Set("moved.example.test", dnstest.Record{A: one("192.0.2.11"), TTL: uint32(ttl / time.Second)})
			moved := time.Now() // .10 was last answered at most a TTL before: it lives at least until moved + linger
			w.eventually(uidA, "tcp", "192.0.2.11:443", okConnected, 3*ttl)

			if how == "SIGSTOP" {
				w.must(w.daemon.Process.Signal(syscall.SIGSTOP))
				t.Cleanup(func() {
					if w.daemon != nil {
						w.daemon.Process.Signal(syscall.SIGCONT) //nolint:errcheck
					}
				})
			} else {
				w.stop(syscall.SIGTERM) // on_exit: keep (the default)
			}
			stopped := time.Now()
			// Right after the stop: everything allowed is still allowed,
			// .10 too while it lingers (on a slow machine, e.g. under -race,
			// its lifetime may have run out before the stop: then it must be
			// closed already, which the next step checks).
			if time.Since(moved) < linger-slack {
				w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
			} else {
				t.Logf("%s: stopped %v after the move, too late to see .10 linger", how, time.Since(moved).Round(10*time.Millisecond))
			}
			w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)
			w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
			w.expect(uidA, "udp", "203.0.113.5:5353", okConnected)

			// The address that left DNS closes within TTL + linger, the
			// current answer at the end of its own lifetime.
			took := w.eventually(uidA, "tcp", "192.0.2.10:443", okRefused, ttl+linger+slack)
			t.Logf("%s: the old address closed %v after the stop (TTL %v + linger %v)", how, took.Round(10*time.Millisecond), ttl, linger)
			took = w.eventually(uidA, "tcp", "192.0.2.11:443", okRefused, ttl+linger+slack)
			t.Logf("%s: the current answer closed %v after the stop", how, took.Round(10*time.Millisecond))
			// The failing name's last answer is kept for stale_grace, no longer.
			if time.Since(failFrom) < staleGrace-ttl-slack {
				w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
			} else {
				t.Errorf("too slow to see the stale address still open before stale_grace (%v after the failure)", time.Since(failFrom))
			}
			w.eventually(uidA, "tcp", "198.51.100.20:443", okRefused, staleGrace+slack-time.Since(failFrom))
			t.Logf("%s: the DNS-failing name's address closed %v after its last answer (stale_grace %v), %v after the stop",
				how, time.Since(failFrom).Round(10*time.Millisecond), staleGrace, time.Since(stopped).Round(10*time.Millisecond))
			// The literal entry never ends; nothing else was opened.
			w.expect(uidA, "udp", "203.0.113.5:5353", okConnected)
			w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)

			if how == "SIGSTOP" {
				// Woken up, the daemon renews what DNS still answers.
				w.must(w.daemon.Process.Signal(syscall.SIGCONT))
				w.eventually(uidA, "tcp", "192.0.2.11:443", okConnected, 3*ttl)
				w.expect(uidA, "tcp", "192.0.2.10:443", okRefused)
				return
			}
			// A restart restores every current answer before "started"
			// (and READY=1, which releases the start gate).
			w.start()
			w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)
			w.expect(uidA, "udp", "203.0.113.5:5353", okConnected)
			w.expect(uidA, "tcp", "192.0.2.10:443", okRefused)
			w.expect(uidA, "tcp", "198.51.100.20:443", okRefused) // still failing, past stale_grace
		})
	}
}

// checkLifetimes: check --explain shows what a name's element has left in
// the kernel, not for a literal entry; check counts them per allowlist.
func checkLifetimes(t *testing.T, w *world) {
	t.Helper()
	_, out := w.check("--explain", fmt.Sprint(uidA), "moved.example.test:443")
	if !strings.Contains(out, "kernel lifetime: ") {
		t.Errorf("check --explain of a name: no kernel lifetime\n%s", out)
	}
	_, out = w.check("--explain", fmt.Sprint(uidA), "203.0.113.5:5353/udp")
	if strings.Contains(out, "kernel lifetime") {
		t.Errorf("check --explain of a literal entry shows a lifetime\n%s", out)
	}
	_, rep := w.checkJSON()
	als, _ := rep["allowlists"].([]any)
	if len(als) != 1 {
		t.Fatalf("check --json: allowlists %v", rep["allowlists"])
	}
	al := als[0].(map[string]any)
	if al["ending"] != float64(2) || al["ends_in"] == nil {
		t.Errorf("check --json: %v, want 2 elements ending, with the time they have left", al)
	}
	_, text := w.check()
	t.Logf("$ egressd check\n%s", text)
}
