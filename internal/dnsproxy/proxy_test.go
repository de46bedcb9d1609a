package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/ruleset"
)

const uidWeb = 4001

// ident answers every query as uid, or errs.
type ident struct {
	uid uint32
	ok  bool
	err error
}

func (i ident) Opener(uint8, netip.AddrPort, netip.AddrPort) (uint32, bool, error) {
	return i.uid, i.ok, i.err
}

type rig struct {
	t      *testing.T
	up     *dnstest.Server
	k      *ruleset.Fake
	p      *Proxy
	addr   string
	logs   *observer.ObservedLogs
	mu     sync.Mutex
	seen   []Observation
	cancel context.CancelFunc
	m      *metrics.Metrics
}

func entries(t *testing.T, ss ...string) []config.Entry {
	t.Helper()
	var out []config.Entry
	for _, s := range ss {
		e, err := config.ParseEntry(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func newRig(t *testing.T, id Identifier, al *Allowlist, upstreams ...netip.AddrPort) *rig {
	t.Helper()
	return newRigWith(t, id, nil, []*Allowlist{al}, upstreams...)
}

// newRigWith is newRig with several allowlists, and options set by opt.
func newRigWith(t *testing.T, id Identifier, opt func(*Options), als []*Allowlist, upstreams ...netip.AddrPort) *rig {
	t.Helper()
	up, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	core, logs := observer.New(zap.DebugLevel)
	var plans []ruleset.AllowlistPlan
	byUID := map[uint32]*Allowlist{}
	for _, al := range als {
		plans = append(plans, ruleset.AllowlistPlan{Allowlist: al.Name, Subject: ruleset.UserSubject(al.UID), Proxy: true})
		byUID[al.UID] = al
	}
	r := &rig{t: t, up: up, logs: logs, m: metrics.New(), k: &ruleset.Fake{Plan: ruleset.Plan{Allowlists: plans}}}
	o := Options{Kernel: r.k, Identify: id, Log: zap.New(core), Timeout: 500 * time.Millisecond, Metrics: r.m,
		Observe: func(o Observation) { r.mu.Lock(); r.seen = append(r.seen, o); r.mu.Unlock() }}
	if opt != nil {
		opt(&o)
	}
	r.p = New(o)
	if len(upstreams) == 0 {
		upstreams = []netip.AddrPort{up.Addr}
	}
	r.p.SetPolicy(&Policy{ByUID: byUID, Upstreams: upstreams,
		MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, Linger: 5 * time.Minute, MaxAddrs: 256})
	// The UDP port is the kernel's pick; its TCP twin may be in use by
	// another test's connection: pick again.
	var pc *net.UDPConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.p.ServeUDP(ctx, pc) }() //nolint:errcheck
	go func() { defer wg.Done(); r.p.ServeTCP(ctx, ln) }() //nolint:errcheck
	t.Cleanup(func() { cancel(); wg.Wait() })
	r.addr = pc.LocalAddr().String()
	return r
}

func (r *rig) ask(network, name string, qtype uint16) *dns.Msg {
	r.t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(q, r.addr)
	if err != nil {
		r.t.Fatalf("%s %s over %s: %v", dns.TypeToString[qtype], name, network, err)
	}
	return resp
}

// waitSeen waits until n observations were reported: they are, after
// the reply left.
func (r *rig) waitSeen(n int) {
	r.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		r.mu.Lock()
		got := len(r.seen)
		r.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d observations, want %d", got, n)
		}
	}
}

func addrsOf(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rrAddr(rr); ok {
			out = append(out, a.String())
		}
	}
	return out
}

// inKernel returns the proxy elements the fake kernel holds, as text.
func (r *rig) inKernel() []string {
	var out []string
	es, err := r.k.ReadProxy()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, pe := range es {
		out = append(out, pe.Element.String())
	}
	sort.Strings(out)
	return out
}

func webAllowlist(t *testing.T, es ...string) *Allowlist {
	return &Allowlist{Name: "web", User: "web", UID: uidWeb, Entries: entries(t, es...)}
}

func TestAnswersListedNamesIntoTheKernelFirst(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "api.example.com:443", "api.example.com:8443/udp"))
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 86400})
	m := r.ask("udp", "api.example.com", dns.TypeA)
	if m.Rcode != dns.RcodeSuccess || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("answer %v", m)
	}
	if ttl := m.Answer[0].Header().Ttl; ttl != 600 {
		t.Errorf("TTL handed out %d, want capped to max_ttl 600", ttl)
	}
	got := strings.Join(r.inKernel(), " ")
	if got != "192.0.2.10:443/tcp 192.0.2.10:8443/udp" {
		t.Fatalf("kernel holds %q", got)
	}
	if es, _ := r.k.ReadProxy(); es[0].Timeout != 15*time.Minute {
		to := es[0].Timeout
		t.Errorf("kernel keeps it %s, want max_ttl + linger", to)
	}
	// Asked again within its lifetime: not written again.
	r.ask("tcp", "api.example.com", dns.TypeA)
	if n := r.k.Calls(ruleset.FakeAddProxy); n != 1 {
		t.Errorf("%d kernel writes for two answers of one address, want 1", n)
	}
}

func TestWildcards(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443", "**.example.org:443"))
	r.up.Set("*.cdn.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.20")}, TTL: 60})
	r.up.Set("*.example.org", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.30")}, TTL: 60})
	for name, want := range map[string]int{
		"a.cdn.example.com":   dns.RcodeSuccess,
		"a.b.cdn.example.com": dns.RcodeRefused,
		"cdn.example.com":     dns.RcodeRefused,
		"x.example.org":       dns.RcodeSuccess,
		"x.y.z.example.org":   dns.RcodeSuccess,
		"example.org":         dns.RcodeRefused,
		"tunnel.evil.example": dns.RcodeRefused,
		// Siblings of the suffixes: the first label holds a dot.
		`x\.cdn.example.com`: dns.RcodeRefused,
		`x\.example.org`:     dns.RcodeRefused,
	} {
		if m := r.ask("udp", name, dns.TypeA); m.Rcode != want {
			t.Errorf("%s: %s, want %s", name, dns.RcodeToString[m.Rcode], dns.RcodeToString[want])
		}
	}
	if got := strings.Join(r.inKernel(), " "); got != "192.0.2.20:443/tcp 192.0.2.30:443/tcp" {
		t.Errorf("kernel holds %q", got)
	}
	r.p.Flush() // the lines are written by a goroutine of their own
	refused := r.logs.FilterField(zap.String("event", "dns_refused")).All()
	if len(refused) != 6 {
		t.Fatalf("%d dns_refused events, want 6", len(refused))
	}
	f := refused[0].ContextMap()
	if f["allowlist"] != "web" || f["user"] != "web" || f["type"] != "A" || f["reason"] != "unlisted" {
		t.Errorf("dns_refused fields %v", f)
	}
	// Repeats are one summary, not one event each.
	for i := 0; i < 50; i++ {
		r.ask("udp", "tunnel.evil.example", dns.TypeTXT)
	}
	r.p.Flush()
	if n := len(r.logs.FilterField(zap.String("event", "dns_refused")).All()); n != 8 {
		t.Errorf("%d dns_refused events after 50 repeats of one new refusal, want 8 (one at once, one summary)", n)
	}
}

func TestChainAndRebinding(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	r.up.Set("www.cdn.example.com", dnstest.Record{CNAME: "edge.provider.example", TTL: 30})
	r.up.Set("edge.provider.example", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("169.254.169.254")}, TTL: 20})
	r.up.SetMangle(func(m *dns.Msg) {
		// A record the chain does not lead to: never handed out.
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "other.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 20}, A: net.IPv4(203, 0, 113, 9)})
	})
	m := r.ask("udp", "www.cdn.example.com", dns.TypeA)
	if got := strings.Join(addrsOf(m), ","); got != "198.51.100.7" {
		t.Fatalf("answer addresses %q: want only the public address of the chain", got)
	}
	if got := strings.Join(r.inKernel(), " "); got != "198.51.100.7:443/tcp" {
		t.Fatalf("kernel holds %q", got)
	}
	for _, rr := range m.Answer {
		if rr.Header().Ttl > 20 {
			t.Errorf("%s: TTL above the chain's", rr)
		}
	}
}

func TestRefusesWhatItCannotAttribute(t *testing.T) {
	for _, id := range []ident{{ok: false}, {err: errors.New("conntrack: no such flow")}, {uid: 4999, ok: true}} {
		r := newRig(t, id, webAllowlist(t, "api.example.com:443"))
		r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60})
		if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeRefused {
			t.Errorf("%+v: %s, want REFUSED", id, dns.RcodeToString[m.Rcode])
		}
		if r.up.Queries() != 0 || len(r.inKernel()) != 0 {
			t.Errorf("%+v: the upstream was asked or the kernel written", id)
		}
	}
}

func TestUnlistedAnswered(t *testing.T) {
	al := webAllowlist(t, "api.example.com:443")
	al.Answer = true
	r := newRig(t, ident{uid: uidWeb, ok: true}, al)
	r.up.Set("other.example.net", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.99")}, TTL: 60})
	m := r.ask("udp", "other.example.net", dns.TypeA)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("dns_unlisted: answer: %v", m)
	}
	if len(r.inKernel()) != 0 {
		t.Errorf("an unlisted name's address went into the kernel: %v", r.inKernel())
	}
	r.waitSeen(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) != 1 || r.seen[0].Listed || r.seen[0].Name != "other.example.net" || len(r.seen[0].Addrs) != 1 {
		t.Errorf("observations %+v", r.seen)
	}
}

func TestFailsClosed(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "api.example.com:443"))
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60})
	r.k.FailNext(ruleset.FakeAddProxy, errors.New("netlink: ENOBUFS"))
	if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
		t.Fatalf("kernel write failed, answer %v: want SERVFAIL without addresses", m)
	}
	if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("next answer after the kernel recovered: %v", m)
	}
}

func TestUpstreamFailover(t *testing.T) {
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := netip.MustParseAddrPort(dead.LocalAddr().String())
	dead.Close() // nothing answers there
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "api.example.com:443"))
	r.p.SetPolicy(&Policy{ByUID: r.p.policy.Load().ByUID, Upstreams: []netip.AddrPort{deadAddr, r.up.Addr},
		MinTTL: time.Second, MaxTTL: time.Hour, MaxAddrs: 8})
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60})
	if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("with the first upstream down: %v", m)
	}
	r.p.SetPolicy(&Policy{ByUID: r.p.policy.Load().ByUID, Upstreams: []netip.AddrPort{deadAddr}, MinTTL: time.Second, MaxTTL: time.Hour, MaxAddrs: 8})
	if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("with every upstream down: %v, want SERVFAIL", m)
	}
}

func TestLifetimes(t *testing.T) {
	p := &Policy{MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, Linger: 5 * time.Minute}
	for _, c := range []struct{ ttl, keep, hand time.Duration }{
		{0, 5*time.Second + 5*time.Minute, 0},
		{60 * time.Second, 6 * time.Minute, 60 * time.Second},
		{24 * time.Hour, 15 * time.Minute, 10 * time.Minute},
	} {
		keep, hand := p.lifetimes(c.ttl)
		if keep != c.keep || hand != c.hand || hand > keep {
			t.Errorf("ttl %s: keep %s hand %s, want %s %s", c.ttl, keep, hand, c.keep, c.hand)
		}
	}
}

// A wildcard over a domain whose answers the attacker controls cannot fill
// the kernel: past the per-uid cap, new addresses get SERVFAIL (logged, not
// once per query), known ones still work.
func TestElementCap(t *testing.T) {
	al := webAllowlist(t, "**.attacker.example:443")
	r := newRig(t, ident{uid: uidWeb, ok: true}, al)
	r.p.w.maxPer = 3
	for i := 1; i <= 5; i++ {
		r.up.Set(fmt.Sprintf("n%d.attacker.example", i), dnstest.Record{A: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}, TTL: 60})
	}
	for i := 1; i <= 5; i++ {
		m := r.ask("udp", fmt.Sprintf("n%d.attacker.example", i), dns.TypeA)
		want := dns.RcodeSuccess
		if i > 3 {
			want = dns.RcodeServerFailure
		}
		if m.Rcode != want {
			t.Errorf("answer %d: %s, want %s", i, dns.RcodeToString[m.Rcode], dns.RcodeToString[want])
		}
	}
	if n := len(r.inKernel()); n != 3 {
		t.Errorf("%d elements in the kernel, want the cap, 3", n)
	}
	if m := r.ask("udp", "n1.attacker.example", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Errorf("a known address past the cap: %s", dns.RcodeToString[m.Rcode])
	}
	if n := len(r.logs.FilterField(zap.String("event", "dns_proxy_failed")).All()); n != 1 {
		t.Errorf("%d dns_proxy_failed events for two refusals in a row, want 1", n)
	}
	// The cap has a metric of its own (the alert EgressdDNSProxyAnswerCap).
	rec := httptest.NewRecorder()
	r.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `egressd_dns_proxy_queries_total{allowlist="web",result="answer_cap"} 2`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s:\n%s", want, grepLines(rec.Body.String(), "egressd_dns_proxy_queries_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A stop (SIGTERM: egressd restarts) answers the queries it already read
// before it lets go of the sockets: under socket activation the next
// egressd gets only what was not read yet, so a query read but never
// answered would be lost (its client waits out its timeout).
func TestStopAnswersQueriesInFlight(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "slow.example.com:443"))
	r.up.Set("slow.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60, Delay: 300 * time.Millisecond})
	type result struct {
		network string
		m       *dns.Msg
		err     error
	}
	res := make(chan result, 2)
	for _, network := range []string{"udp", "tcp"} {
		go func() {
			q := new(dns.Msg)
			q.SetQuestion("slow.example.com.", dns.TypeA)
			m, _, err := (&dns.Client{Net: network, Timeout: 3 * time.Second}).Exchange(q, r.addr)
			res <- result{network, m, err}
		}()
	}
	for deadline := time.Now().Add(2 * time.Second); r.up.QueriesFor("slow.example.com") < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the queries did not reach the upstream")
		}
	}
	r.cancel() // both are in flight: read, their upstream still answering
	for i := 0; i < 2; i++ {
		x := <-res
		if x.err != nil || x.m.Rcode != dns.RcodeSuccess || strings.Join(addrsOf(x.m), ",") != "192.0.2.10" {
			t.Errorf("%s: a query in flight when the proxy stopped: %v %v", x.network, x.m, x.err)
		}
	}
}

// policyWith is the rig's policy with the allowlists given.
func (r *rig) policyWith(als ...*Allowlist) *Policy {
	old := r.p.policy.Load()
	pol := *old
	pol.ByUID = map[uint32]*Allowlist{}
	for _, al := range als {
		pol.ByUID[al.UID] = al
	}
	return &pol
}

// An answer never outlives the policy that allowed it: a configuration
// change takes out of the kernel, at once, every answer the new policy does
// not allow, and keeps the others (an address a kept entry leads to stays,
// whichever name it was first answered for).
func TestPolicyChangeClosesAnswers(t *testing.T) {
	base := []string{"*.cdn.example.com:443", "**.example.org:443", "api.example.com:443"}
	all := "192.0.2.20:443/tcp 192.0.2.30:443/tcp 192.0.2.31:443/tcp 192.0.2.40:443/tcp"
	for _, c := range []struct {
		name string
		pol  func(r *rig) *Policy
		want string
	}{
		{"unchanged (control)", func(r *rig) *Policy { return r.policyWith(webAllowlist(t, base...)) }, all},
		{"wildcard removed", func(r *rig) *Policy {
			return r.policyWith(webAllowlist(t, "**.example.org:443", "api.example.com:443"))
		}, "192.0.2.30:443/tcp 192.0.2.31:443/tcp 192.0.2.40:443/tcp"},
		{"wildcard's port changed", func(r *rig) *Policy {
			return r.policyWith(webAllowlist(t, "*.cdn.example.com:8443", "**.example.org:443", "api.example.com:443"))
		}, "192.0.2.30:443/tcp 192.0.2.31:443/tcp 192.0.2.40:443/tcp"},
		{"wildcard narrowed", func(r *rig) *Policy {
			return r.policyWith(webAllowlist(t, "*.cdn.example.com:443", "*.example.org:443", "api.example.com:443"))
		}, "192.0.2.20:443/tcp 192.0.2.31:443/tcp 192.0.2.40:443/tcp"},
		{"wildcard's protocol changed", func(r *rig) *Policy {
			return r.policyWith(webAllowlist(t, "*.cdn.example.com:443/udp", "**.example.org:443", "api.example.com:443"))
		}, "192.0.2.30:443/tcp 192.0.2.31:443/tcp 192.0.2.40:443/tcp"},
		{"name removed, its address kept by a wildcard (control)", func(r *rig) *Policy {
			return r.policyWith(webAllowlist(t, "*.cdn.example.com:443", "**.example.org:443"))
		}, all},
		{"left dns: proxy", func(r *rig) *Policy { return r.policyWith() }, ""},
		{"user changed", func(r *rig) *Policy {
			al := webAllowlist(t, base...)
			al.UID, al.User = uidWeb+1, "other"
			return r.policyWith(al)
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, base...))
			for name, a := range map[string]string{"a.cdn.example.com": "192.0.2.20", "x.y.example.org": "192.0.2.30",
				"x.example.org": "192.0.2.31", "api.example.com": "192.0.2.40", "shared.cdn.example.com": "192.0.2.40"} {
				r.up.Set(name, dnstest.Record{A: []netip.Addr{netip.MustParseAddr(a)}, TTL: 3600})
			}
			// shared.cdn first: api's answer finds its address held already.
			for _, name := range []string{"a.cdn.example.com", "x.y.example.org", "x.example.org", "shared.cdn.example.com", "api.example.com"} {
				if m := r.ask("udp", name, dns.TypeA); m.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s: %s", name, dns.RcodeToString[m.Rcode])
				}
			}
			if got := strings.Join(r.inKernel(), " "); got != all {
				t.Fatalf("before the change the kernel holds %q", got)
			}
			r.p.SetPolicy(c.pol(r))
			if got := strings.Join(r.inKernel(), " "); got != c.want {
				t.Errorf("after the change the kernel holds %q, want %q", got, c.want)
			}
			revoked := len(r.logs.FilterField(zap.String("event", "dns_proxy_revoked")).All())
			if (c.want != all) != (revoked == 1) {
				t.Errorf("%d dns_proxy_revoked events", revoked)
			}
		})
	}
}

// Answers a restarted daemon adopts from the kernel follow the policy by
// the name each was written for (its comment in the kernel); those without
// one (an older egressd wrote them) stay only where a name entry of the
// allowlist gives their protocol and ports and the rebinding rules accept
// their address.
func TestAdoptedAnswersFollowThePolicy(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	var seed []ruleset.ProxyElement
	for _, s := range []struct {
		uid  uint32
		addr string
		port uint16
		name string
	}{{uidWeb, "192.0.2.20", 443, ""}, {uidWeb, "192.0.2.21", 8443, ""}, {uidWeb, "10.0.0.1", 443, ""}, {uidWeb + 1, "192.0.2.22", 443, ""},
		{uidWeb, "192.0.2.23", 443, "removed.example.net"}, {uidWeb, "192.0.2.24", 443, "x.cdn.example.com"}} {
		seed = append(seed, ruleset.ProxyElement{UID: s.uid, Timeout: time.Hour, Name: s.name,
			Element: ruleset.ElementFor(config.TCP, netip.PrefixFrom(netip.MustParseAddr(s.addr), 32), s.port, s.port)})
	}
	if err := r.k.AddProxy(seed); err != nil {
		t.Fatal(err)
	}
	r.p.Seed(seed)
	r.p.SetPolicy(r.policyWith(webAllowlist(t, "*.cdn.example.com:443")))
	if got := strings.Join(r.inKernel(), " "); got != "192.0.2.20:443/tcp 192.0.2.24:443/tcp" {
		t.Errorf("the kernel holds %q: want only the adopted answer the policy still allows", got)
	}
}

// gatedKernel holds every AddProxy until the test lets it go.
type gatedKernel struct {
	*ruleset.Fake
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedKernel) AddProxy(es []ruleset.ProxyElement) error {
	g.entered <- struct{}{}
	<-g.gate
	return g.Fake.AddProxy(es)
}

// An answer on its way to the kernel while the entry that allowed it is
// removed does not stay there: the policy change waits for the write in
// flight, then takes it out.
func TestPolicyChangeDuringWrite(t *testing.T) {
	al := webAllowlist(t, "*.cdn.example.com:443", "api.example.com:443")
	fake := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true}}}}
	k := &gatedKernel{Fake: fake, entered: make(chan struct{}, 4), gate: make(chan struct{})}
	p := New(Options{Kernel: k})
	pol := &Policy{ByUID: map[uint32]*Allowlist{uidWeb: al}, MinTTL: time.Second, MaxTTL: time.Hour, MaxAddrs: 8}
	p.SetPolicy(pol)
	el := func(a string) ruleset.ProxyElement {
		return ruleset.ProxyElement{UID: uidWeb, Timeout: time.Hour, Element: ruleset.ElementFor(config.TCP, netip.MustParsePrefix(a+"/32"), 443, 443)}
	}
	wrote := make(chan error, 1)
	go func() {
		wrote <- p.w.Ensure([]ruleset.ProxyElement{el("192.0.2.20")}, "a.cdn.example.com", time.Minute)
	}()
	<-k.entered // the write is in flight
	// Another answer waits for the next transaction meanwhile.
	queued := make(chan error, 1)
	go func() {
		queued <- p.w.Ensure([]ruleset.ProxyElement{el("192.0.2.22")}, "c.cdn.example.com", time.Minute)
	}()
	for {
		p.w.mu.Lock()
		n := len(p.w.pending)
		p.w.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	changed := make(chan struct{})
	narrower := *pol
	narrower.ByUID = map[uint32]*Allowlist{uidWeb: webAllowlist(t, "api.example.com:443")}
	go func() { p.SetPolicy(&narrower); close(changed) }()
	for {
		p.w.mu.Lock()
		n := len(p.w.pending)
		p.w.mu.Unlock()
		if n == 0 {
			break // the queued answer was judged by the new policy
		}
		time.Sleep(time.Millisecond)
	}
	close(k.gate)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := <-queued; !errors.Is(err, errPolicyChanged) {
		t.Errorf("an answer queued when its entry was removed: %v, want errPolicyChanged (SERVFAIL)", err)
	}
	<-changed
	if es, _ := fake.ReadProxy(); len(es) != 0 {
		t.Errorf("the kernel holds %v after the entry that allowed it was removed", es)
	}
	// Asked under the old policy, written under the new one: refused, not written.
	if err := p.w.Ensure([]ruleset.ProxyElement{el("192.0.2.21")}, "b.cdn.example.com", time.Minute); !errors.Is(err, errPolicyChanged) {
		t.Errorf("an answer the policy no longer allows: %v, want errPolicyChanged", err)
	}
	// Control: what the new policy allows is written.
	go func() { <-k.entered }()
	if err := p.w.Ensure([]ruleset.ProxyElement{el("192.0.2.40")}, "api.example.com", time.Minute); err != nil {
		t.Fatal(err)
	}
	if es, _ := fake.ReadProxy(); len(es) != 1 {
		t.Errorf("the kernel holds %v, want api.example.com's answer", es)
	}
}

// slowKernel takes its time over every AddProxy, so that answers released
// together meet in one group commit.
type slowKernel struct{ *ruleset.Fake }

func (s slowKernel) AddProxy(es []ruleset.ProxyElement) error {
	time.Sleep(20 * time.Millisecond)
	return s.Fake.AddProxy(es)
}

// dns_proxy_max_answers holds exactly under concurrent answers: what is on
// its way to the kernel counts, not only what it holds.
func TestElementCapConcurrent(t *testing.T) {
	fake := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true}}}}
	p := New(Options{Kernel: slowKernel{fake}})
	p.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: webAllowlist(t, "**.attacker.example:443")},
		MinTTL: time.Second, MaxTTL: time.Hour, MaxAddrs: 8, MaxAnswers: 16})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	start := make(chan struct{})
	for i := 0; i < 40; i++ {
		var es []ruleset.ProxyElement
		for j := 0; j < 4; j++ {
			a := netip.AddrFrom4([4]byte{198, 51, byte(i), byte(j + 1)})
			es = append(es, ruleset.ProxyElement{UID: uidWeb, Timeout: time.Hour, Element: ruleset.ElementFor(config.TCP, netip.PrefixFrom(a, 32), 443, 443)})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := p.w.Ensure(es, fmt.Sprintf("n%d.attacker.example", i), time.Minute)
			if err != nil && !errors.Is(err, ErrTooMany) {
				t.Error(err)
			}
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	es, _ := fake.ReadProxy()
	if len(es) != 16 || ok != 4 {
		t.Errorf("%d elements in the kernel from %d answers, want the cap, 16, from 4", len(es), ok)
	}
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	if p.w.perUID[uidWeb] != 16 || len(p.w.reserved) != 0 {
		t.Errorf("the writer counts %d elements with %d reserved, want 16 and none", p.w.perUID[uidWeb], len(p.w.reserved))
	}
}

// A name too long for the kernel's element comment is written as
// ruleset.CommentFor makes it; a restarted daemon that reads it back keeps
// the element through no policy (fail closed: the service asks again),
// while the whole name, which the running daemon remembers, is allowed.
func TestLongNameCommentAdmitsNothing(t *testing.T) {
	pol := &Policy{ByUID: map[uint32]*Allowlist{uidWeb: webAllowlist(t, "**.example.org:443", "api.example.com:443")}}
	name := strings.Repeat("a.", 120) + "example.org"
	k := elemKey{uidWeb, ruleset.ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.20/32"), 443, 443)}
	if !admits(pol, k, []string{name}) {
		t.Fatal("control: the whole name is allowed by **.example.org:443")
	}
	if c := ruleset.CommentFor(name); admits(pol, k, []string{c}) || c == "" {
		t.Errorf("the comment %q written for a %d-character name keeps the element after a restart", c, len(name))
	}
}

// refusingKernel refuses, like the kernel's interval sets (EEXIST), any
// transaction that holds an element overlapping one of another port range
// for the same uid, protocol and address (pipapo refuses partial overlaps);
// the first AddProxy waits for the gate.
type refusingKernel struct {
	*ruleset.Fake
	refuse  ruleset.Element
	entered chan struct{}
	gate    chan struct{}
	first   sync.Once
}

func (r *refusingKernel) AddProxy(es []ruleset.ProxyElement) error {
	r.first.Do(func() { r.entered <- struct{}{}; <-r.gate })
	for _, pe := range es {
		if pe.Element == r.refuse {
			return errors.New("add DNS proxy elements: file exists")
		}
	}
	return r.Fake.AddProxy(es)
}

// Red team (issue 22): two entries whose port ranges overlap
// (`*.a.example.org:8000-8100`, `*.b.example.org:8050-8200`) and two names,
// one under each, pointing at one address: the kernel refuses the second
// element (EEXIST: an interval set takes no partial overlap). A service that
// asks such a name must not fail the other answers of the group commit it
// lands in (other services' too): every answer released together failed
// (SERVFAIL) before. It fails alone.
func TestRefusedAnswerFailsAlone(t *testing.T) {
	at := func(a string, from, to uint16) ruleset.ProxyElement {
		return ruleset.ProxyElement{UID: uidWeb, Timeout: time.Hour, Element: ruleset.ElementFor(config.TCP, netip.MustParsePrefix(a+"/32"), from, to)}
	}
	bad := at("192.0.2.20", 8050, 8200)
	fake := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true}}}}
	k := &refusingKernel{Fake: fake, refuse: bad.Element, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	p := New(Options{Kernel: k})
	p.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: webAllowlist(t, "*.a.example.org:8000-8100", "*.b.example.org:8050-8200", "api.example.com:443")},
		MinTTL: time.Second, MaxTTL: time.Hour, MaxAddrs: 8})
	first := make(chan error, 1)
	go func() {
		first <- p.w.Ensure([]ruleset.ProxyElement{at("192.0.2.20", 8000, 8100)}, "x.a.example.org", time.Minute)
	}()
	<-k.entered // in flight; the next two meet in one group commit
	good, refused := make(chan error, 1), make(chan error, 1)
	go func() {
		good <- p.w.Ensure([]ruleset.ProxyElement{at("192.0.2.30", 443, 443)}, "api.example.com", time.Minute)
	}()
	go func() { refused <- p.w.Ensure([]ruleset.ProxyElement{bad}, "y.b.example.org", time.Minute) }()
	for {
		p.w.mu.Lock()
		n := len(p.w.pending)
		p.w.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(k.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-good; err != nil {
		t.Errorf("an answer that met a refused one in a group commit failed with it: %v", err)
	}
	if err := <-refused; err == nil {
		t.Error("the refused answer succeeded")
	}
	var held []string
	es, _ := fake.ReadProxy()
	for _, pe := range es {
		held = append(held, pe.Element.String())
	}
	sort.Strings(held)
	if got := strings.Join(held, " "); !strings.Contains(got, "192.0.2.30:443") || strings.Contains(got, "8050-8200") {
		t.Errorf("the kernel holds %s: want api.example.com's answer and not the refused one", got)
	}
}

// overlapKernel refuses, as the kernel did (EEXIST, checked on 6.18), a
// removal that re-adds an element which timed out (expired) while an
// element of the same address with a partly overlapping port range
// (overlaps) is live: removing re-adds each element first.
type overlapKernel struct {
	*ruleset.Fake
	expired, overlaps ruleset.Element
}

func (o *overlapKernel) DeleteProxy(es []ruleset.ProxyElement) error {
	held, _ := o.Fake.ReadProxy()
	live := false
	for _, pe := range held {
		live = live || pe.Element == o.overlaps
	}
	for _, pe := range es {
		if pe.Element == o.expired && live {
			return errors.New("delete DNS proxy elements: file exists")
		}
	}
	return o.Fake.DeleteProxy(es)
}

// Red team (issue 22): an answer for *.a.example.org:8000-8100 timed out in
// the kernel (the writer still lists it: it sweeps once a minute); then one
// for *.b.example.org:8050-8200 to the same address is written. The
// administrator removes both entries: the removal re-adds the timed-out
// element, which overlaps the live one, and the kernel refused the whole
// transaction: the live answer outlived the policy (until its TTL and
// linger ran out: up to 15 minutes). Each element is now taken out on its
// own when the transaction fails.
func TestRemovalNotBlockedByOverlap(t *testing.T) {
	at := func(a string, from, to uint16, d time.Duration) ruleset.ProxyElement {
		return ruleset.ProxyElement{UID: uidWeb, Timeout: d, Element: ruleset.ElementFor(config.TCP, netip.MustParsePrefix(a+"/32"), from, to)}
	}
	old, live := at("192.0.2.20", 8000, 8100, time.Second), at("192.0.2.20", 8050, 8200, time.Hour)
	fake := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true}}}}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	p := New(Options{Kernel: &overlapKernel{Fake: fake, expired: old.Element, overlaps: live.Element}, Now: func() time.Time { return now }})
	pol := func(es ...string) *Policy {
		return &Policy{ByUID: map[uint32]*Allowlist{uidWeb: webAllowlist(t, es...)}, MinTTL: time.Second, MaxTTL: time.Hour, MaxAddrs: 8}
	}
	p.SetPolicy(pol("*.a.example.org:8000-8100", "*.b.example.org:8050-8200", "api.example.com:443"))
	if err := p.w.Ensure([]ruleset.ProxyElement{old}, "x.a.example.org", 0); err != nil {
		t.Fatal(err)
	}
	// The kernel drops it when it times out; the writer has not swept yet.
	fake.DeleteProxy([]ruleset.ProxyElement{old}) //nolint:errcheck
	now = now.Add(2 * time.Second)
	if err := p.w.Ensure([]ruleset.ProxyElement{live}, "y.b.example.org", 0); err != nil {
		t.Fatal(err)
	}
	p.SetPolicy(pol("api.example.com:443"))
	if es, _ := fake.ReadProxy(); len(es) != 0 {
		t.Errorf("the kernel holds %v after both entries were removed", es)
	}
}

// The observer (egressd learn's record of names, deny.Recent) is not on
// the answer's path: the reply leaves before it is called, over UDP and
// TCP, and the observation is still reported (issue 24). Before, an
// observer that had to wait held the answer back with it.
func TestObservedAfterTheReplyLeft(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []Observation
	r := newRigWith(t, ident{uid: uidWeb, ok: true}, func(o *Options) {
		o.Observe = func(o Observation) {
			<-release
			mu.Lock()
			seen = append(seen, o)
			mu.Unlock()
		}
	}, []*Allowlist{webAllowlist(t, "api.example.com:443")})
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60})
	for _, network := range []string{"udp", "tcp"} {
		if m := r.ask(network, "api.example.com", dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("%s: %v", network, m)
		}
	}
	close(release)
	released = true
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d observations after the replies, want 2", n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, o := range seen {
		if o.Name != "api.example.com" || !o.Listed || len(o.Addrs) != 1 || o.At.IsZero() {
			t.Errorf("observation %+v", o)
		}
	}
}
