package dnsproxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

const rtb2UIDStranger = 4999 // in no allowlist

// rtb2Proxy is a proxy identifying its clients by port in batches
// (portIdent: the reader answers inline), web and other listing
// api.example.com, its upstream answering 192.0.2.10.
func rtb2Proxy(t *testing.T, log *zap.Logger) (*Proxy, *portIdent, *ruleset.Fake) {
	t.Helper()
	up, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	web, other := webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443")
	k := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{
		{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true},
		{Allowlist: "other", Subject: ruleset.UserSubject(uidOther), Proxy: true}}}}
	id := &portIdent{uids: map[uint16]uint32{}}
	if log == nil {
		log = zap.NewNop()
	}
	p := New(Options{Kernel: k, Identify: id, Timeout: time.Second, Log: log})
	p.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: web, uidOther: other}, Upstreams: []netip.AddrPort{up.Addr},
		MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, Linger: 5 * time.Minute, MaxAddrs: 256})
	// web's answer in the cache and its element in the kernel: web's hits
	// are the reader's own.
	id.uids[1] = uidWeb
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	raw, _ := q.Pack()
	if out := p.answer(context.Background(), 17, raw, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:153")); out == nil {
		t.Fatal("no warm-up reply")
	}
	return p, id, k
}

// rtb2Case writes name with the letters of bit i of mask in upper case (0x20).
func rtb2Case(name string, mask int) string {
	b := []byte(name)
	for i := range b {
		if mask&(1<<(i%16)) != 0 && 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// Attack: one batch mixes what the reader answers itself (web's hits, the
// stranger's refusals), what it defers to workers (other's hit: its
// element is not in the kernel yet), IPv4 and IPv6, with and without
// EDNS, each client asking in its own letters' case under its own ID.
// sendmmsg names each answer's address: every client gets exactly one
// reply, its own (ID, question byte for byte, verdict of its own uid),
// none of another's.
func TestRedteamRTB2BatchRepliesGoHome(t *testing.T) {
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
		t.Run(ip.String(), func(t *testing.T) {
			p, id, _ := rtb2Proxy(t, nil)
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
			if err != nil {
				if ip.To4() == nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			const n = 15 // one batch (readBatch 16)
			type client struct {
				c   *net.UDPConn
				uid uint32
				q   *dns.Msg
			}
			var cs []client
			for i := 0; i < n; i++ {
				c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				uid := []uint32{uidWeb, uidOther, rtb2UIDStranger}[i%3]
				id.mu.Lock()
				id.uids[uint16(c.LocalAddr().(*net.UDPAddr).Port)] = uid
				id.mu.Unlock()
				q := new(dns.Msg)
				q.SetQuestion(rtb2Case("api.example.com.", 0x1357*(i+1)), dns.TypeA)
				q.Id = uint16(0xA000 + i)
				if i%2 == 1 {
					q.SetEdns0(1232, false)
				}
				cs = append(cs, client{c, uid, q})
			}
			// Queued before the proxy reads: its first read takes them in one batch.
			for _, c := range cs {
				raw, _ := c.q.Pack()
				if _, err := c.c.Write(raw); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); p.ServeUDP(ctx, pc) }() //nolint:errcheck
			defer func() { cancel(); <-done }()
			for i, c := range cs {
				c.c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
				buf := make([]byte, 1500)
				nr, err := c.c.Read(buf)
				m := new(dns.Msg)
				if err != nil || m.Unpack(buf[:nr]) != nil {
					t.Fatalf("client %d (uid %d): no reply: %v", i, c.uid, err)
				}
				want, wantAddrs := dns.RcodeSuccess, "192.0.2.10"
				if c.uid == rtb2UIDStranger {
					want, wantAddrs = dns.RcodeRefused, ""
				}
				if m.Id != c.q.Id || len(m.Question) != 1 || m.Question[0] != c.q.Question[0] || m.Rcode != want || strings.Join(addrsOf(m), ",") != wantAddrs {
					t.Errorf("client %d (uid %d) asked %s (ID %#x), got ID %#x %v %s %v; want %s %q", i, c.uid, c.q.Question[0].Name, c.q.Id,
						m.Id, m.Question, dns.RcodeToString[m.Rcode], addrsOf(m), dns.RcodeToString[want], wantAddrs)
				}
			}
			for i, c := range cs {
				c.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)) //nolint:errcheck
				buf := make([]byte, 1500)
				if nr, err := c.c.Read(buf); err == nil {
					m := new(dns.Msg)
					m.Unpack(buf[:nr]) //nolint:errcheck
					t.Errorf("client %d got a second reply: %v", i, m)
				}
			}
			id.mu.Lock()
			defer id.mu.Unlock()
			if id.batched < n {
				t.Fatalf("%d queries identified in batches, want %d: the test did not exercise one batch", id.batched, n)
			}
		})
	}
}

// rtb2GateCore is a logger whose writes of msg block while the gate is shut
// (a stalled journal: egressd's stderr is a stream to journald, and a
// write blocks once its socket buffer is full).
type rtb2GateCore struct {
	zapcore.LevelEnabler
	msg     string
	blocked chan struct{} // one per write that blocks
	gate    chan struct{} // closed: open
}

func (g *rtb2GateCore) With([]zapcore.Field) zapcore.Core { return g }
func (g *rtb2GateCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, g)
}
func (g *rtb2GateCore) Write(e zapcore.Entry, _ []zapcore.Field) error {
	if e.Message == g.msg {
		select {
		case g.blocked <- struct{}{}:
		default:
		}
		<-g.gate
	}
	return nil
}
func (g *rtb2GateCore) Sync() error { return nil }

// Attack (DoS of other users): any local user sends the proxy a query it
// refuses (a uid in no dns: proxy allowlist: someone sending to 127.0.0.1
// directly), under a name not refused yet in this window: the refusal is
// logged at once (dns_refused). The reader now refuses inline, so the log
// write is on the reader: while it blocks (journald stalled), no query of
// anyone is read. web's query, a hit the reader could answer at once,
// must still be answered. Control: answered once the journal moves.
func TestRedteamRTB2StalledRefusalLogStallsNoOne(t *testing.T) {
	g := &rtb2GateCore{LevelEnabler: zapcore.DebugLevel, msg: "DNS query refused", blocked: make(chan struct{}, 1), gate: make(chan struct{})}
	var open sync.Once
	defer open.Do(func() { close(g.gate) })
	p, id, _ := rtb2Proxy(t, zap.New(g))
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	stop := serveUDP(p, pc)
	defer func() { open.Do(func() { close(g.gate) }); stop() }()
	dial := func(uid uint32) *net.UDPConn { return id.dialAs(t, pc, uid) }
	send := func(c *net.UDPConn, name string, qid uint16) {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		q.Id = qid
		raw, _ := q.Pack()
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
	}
	read := func(c *net.UDPConn, wait time.Duration) (*dns.Msg, error) {
		c.SetReadDeadline(time.Now().Add(wait)) //nolint:errcheck
		buf := make([]byte, 1500)
		nr, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		m := new(dns.Msg)
		return m, m.Unpack(buf[:nr])
	}
	attacker, victim := dial(rtb2UIDStranger), dial(uidWeb)
	send(attacker, "never-refused-before.example.net.", 1)
	select {
	case <-g.blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the refusal was not logged")
	}
	send(victim, "api.example.com.", 2)
	m, err := read(victim, 3*time.Second)
	open.Do(func() { close(g.gate) })
	if err != nil {
		if m, err2 := read(victim, 3*time.Second); err2 == nil {
			t.Fatalf("web's query (a cache hit whose element the kernel holds) was answered only once the refusal's log write of another user returned (%v): one blocked log write stalls every user's DNS; got %v then", err, m.Rcode)
		}
		t.Fatalf("web's query unanswered: %v", err)
	}
	if m.Id != 2 || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("web: %v", m)
	}
	// Control: the attacker's refusal is sent once the write returns.
	if m, err := read(attacker, 3*time.Second); err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("control: the attacker's reply: %v %v", m, err)
	}
}

// Attack (DoS of other users): a client that never reads, its receive
// buffer at the minimum (full after a reply or two), sends the proxy
// queries the reader answers itself (hits, refusals), in the same batches
// as a victim's. Its replies cannot be delivered; the reader's sendmmsg
// must neither block on them nor drop the victim's answer of the same
// batch.
func TestRedteamRTB2SlowClientStallsNoOne(t *testing.T) {
	p, id, _ := rtb2Proxy(t, nil)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer serveUDP(p, pc)()
	dial := func(uid uint32) *net.UDPConn { return id.dialAs(t, pc, uid) }
	hog := []*net.UDPConn{dial(uidWeb), dial(rtb2UIDStranger)}
	for _, c := range hog {
		raw, _ := c.SyscallConn()
		raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 0) }) //nolint:errcheck
	}
	victim := dial(uidWeb)
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	hraw, _ := q.Pack()
	for round := 0; round < 50; round++ {
		for i := 0; i < 14; i++ { // the victim's query in the same batch: readBatch 16
			if _, err := hog[i%2].Write(hraw); err != nil {
				t.Fatal(err)
			}
		}
		q.Id = uint16(round)
		raw, _ := q.Pack()
		if _, err := victim.Write(raw); err != nil {
			t.Fatal(err)
		}
		victim.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
		buf := make([]byte, 1500)
		nr, err := victim.Read(buf)
		m := new(dns.Msg)
		if err != nil || m.Unpack(buf[:nr]) != nil {
			t.Fatalf("round %d: the victim's query unanswered while the replies to a client that never reads were undeliverable: %v", round, err)
		}
		if m.Id != q.Id || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
			t.Fatalf("round %d: victim: %v", round, m)
		}
	}
	// The hog's replies were sent (and dropped at its buffer): the reader
	// answered them, it did not skip them.
	for _, c := range hog {
		c.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck
		buf := make([]byte, 1500)
		if _, err := c.Read(buf); err != nil {
			t.Errorf("control: the client that never read got no reply at all: %v", err)
		}
	}
}

// BenchmarkRedteamRTB2RefusalWindowClose is what the reader now spends
// in the one refusal that closes a dns_refused window (refusals.add ->
// flushLocked): a summary line for each of the window's repeated keys,
// up to maxRefusedKeys, written synchronously (here to io.Discard, a lower
// bound of a write to journald), while every user's queries wait.
func BenchmarkRedteamRTB2RefusalWindowClose(b *testing.B) {
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.DebugLevel))
	clk := newTestClock()
	r := newRefusals(log, 10*time.Second, clk.Now)
	names := make([]string, maxRefusedKeys)
	for i := range names {
		names[i] = "n" + strconv.Itoa(i) + ".attacker.example"
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		clk.Add(10 * time.Second) // a new window
		r.add("", "", rtb2UIDStranger, "first.example", dns.TypeA, "not a query of a dns: proxy user")
		for _, n := range names[1:] {
			r.add("", "", rtb2UIDStranger, n, dns.TypeA, "not a query of a dns: proxy user")
			r.add("", "", rtb2UIDStranger, n, dns.TypeA, "not a query of a dns: proxy user")
		}
		clk.Add(10 * time.Second)
		b.StartTimer()
		r.add("", "", rtb2UIDStranger, "closes.example", dns.TypeA, "not a query of a dns: proxy user") // the reader's refusal that closes the window
	}
}
