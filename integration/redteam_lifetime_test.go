package integration

import (
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
)

// Red team of issue 26 (kernel lifetimes), as a protected service that
// waits for egressd to stop. The lifetimes are cut along the port axis
// where a name's range and a literal entry meet on one address: only the
// literal's part may outlive the name's answer.
func TestRedteamLifetimeSharedWithLiteral(t *testing.T) {
	const ttl, linger = 2 * time.Second, 2 * time.Second
	const slack = 2 * time.Second
	w := newWorld(t)
	w.serveTCP("192.0.2.12:8050")
	w.serveTCP("192.0.2.12:8080")
	w.write("egressd.yaml", fmt.Sprintf("resolvers: [\"192.0.2.53:53\"]\nmin_ttl: 1s\nlinger: %s\nstale_grace: 30s\n", linger))
	// ranged.example.test on 8000-8100 and the literal 192.0.2.8/29 on
	// 8080, both covering 192.0.2.12:8080; exact.example.test and the
	// literal 192.0.2.11:443 are the same element.
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - ranged.example.test:8000-8100\n  - 192.0.2.8/29:8080\n  - exact.example.test:443\n  - 192.0.2.11:443\n", uidA))
	one := func(a string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(a)} }
	w.dns.Set("ranged.example.test", dnstest.Record{A: one("192.0.2.12"), TTL: uint32(ttl / time.Second)})
	w.dns.Set("exact.example.test", dnstest.Record{A: one("192.0.2.11"), TTL: uint32(ttl / time.Second)})
	w.start()
	w.expect(uidA, "tcp", "192.0.2.12:8050", okConnected)
	w.expect(uidA, "tcp", "192.0.2.12:8080", okConnected)
	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)

	w.must(w.daemon.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() {
		if w.daemon != nil {
			w.daemon.Process.Signal(syscall.SIGCONT) //nolint:errcheck
		}
	})
	took := w.eventually(uidA, "tcp", "192.0.2.12:8050", okRefused, ttl+linger+slack)
	t.Logf("the name's port range closed %v after SIGSTOP (TTL %v + linger %v)", took.Round(10*time.Millisecond), ttl, linger)
	// Controls: what the literal entries allow never ends.
	w.expect(uidA, "tcp", "192.0.2.12:8080", okConnected)
	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)
}

// An edit made while egressd was stopped takes effect at the restart,
// before "started": an address of a name removed from the allowlist does
// not wait for its (long) kernel lifetime to run out. Controls: a name
// that stays, and a literal covering a removed name's address on another
// port.
func TestRedteamLifetimeEditWhileStopped(t *testing.T) {
	w := newWorld(t)
	w.serveTCP("192.0.2.12:8080")
	w.write("egressd.yaml", "resolvers: [\"192.0.2.53:53\"]\nmin_ttl: 1s\nlinger: 2s\nstale_grace: 30s\n")
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - gone.example.test:443\n  - kept.example.test:443\n  - shared.example.test:443\n  - 192.0.2.8/29:8080\n", uidA))
	one := func(a string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(a)} }
	w.dns.Set("gone.example.test", dnstest.Record{A: one("192.0.2.10"), TTL: 300})
	w.dns.Set("kept.example.test", dnstest.Record{A: one("192.0.2.11"), TTL: 300})
	w.dns.Set("shared.example.test", dnstest.Record{A: one("192.0.2.12"), TTL: 300})
	w.start()
	for _, a := range []string{"192.0.2.10:443", "192.0.2.11:443", "192.0.2.12:443", "192.0.2.12:8080"} {
		w.expect(uidA, "tcp", a, okConnected)
	}
	w.stop(syscall.SIGTERM) // on_exit: keep; the elements have ~300 s left
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - kept.example.test:443\n  - 192.0.2.8/29:8080\n", uidA))
	w.start()
	w.expect(uidA, "tcp", "192.0.2.10:443", okRefused)
	w.expect(uidA, "tcp", "192.0.2.12:443", okRefused)
	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)
	w.expect(uidA, "tcp", "192.0.2.12:8080", okConnected)
}
