package main

// The DNS side of the probe, for the tier's dns: proxy test.
//
// The server (`egressd-probe dns ADDR PREFIX...`, run by root) puts ADDR's
// address and each PREFIX on lo (a /24 on lo makes all of its addresses
// local), then answers every A query with the next address of the PREFIXes,
// in order, never the same twice until the pool wraps: each answer is an
// address the kernel cannot have allowed before. AAAA queries get no
// records; every query is logged (the journal shows which names reached it).
//
// The client runs inside a protected service (the agent): "resolve SERVER
// NAME" asks once over UDP; "dnsloop SERVER" asks in a loop until "dnsstop",
// alternating UDP and TCP, a fresh listed name (qN.cdn.example.test) that
// must be answered and whose address must connect at once (port 8443), and
// a fresh unlisted one (qN.exfil.example) that must be REFUSED.

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

func serveDNS(addr string, prefixes []string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	var pool []netip.Addr
	add := []netip.Prefix{netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen())}
	for _, s := range prefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return err
		}
		add = append(add, p)
		for a := p.Addr().Next(); p.Contains(a.Next()); a = a.Next() { // no network or broadcast address
			pool = append(pool, a)
		}
	}
	for _, p := range add {
		a, _ := netlink.ParseAddr(p.String())
		if p.Bits() < p.Addr().BitLen() {
			a, _ = netlink.ParseAddr(netip.PrefixFrom(p.Addr().Next(), p.Bits()).String())
		}
		if err := netlink.AddrReplace(lo, a); err != nil {
			return fmt.Errorf("add %s to lo: %w", p, err)
		}
	}
	if len(pool) == 0 {
		return fmt.Errorf("no addresses to answer with")
	}
	var next atomic.Uint64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.RecursionAvailable = true
		if len(q.Question) == 1 {
			qq := q.Question[0]
			fmt.Printf("query %s %s\n", qq.Name, dns.TypeToString[qq.Qtype])
			if qq.Qtype == dns.TypeA {
				a := pool[(next.Add(1)-1)%uint64(len(pool))]
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a.AsSlice()})
			}
		}
		w.WriteMsg(m) //nolint:errcheck
	})
	errs := make(chan error, 2)
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: addr, Net: network, Handler: h}
		go func() { errs <- srv.ListenAndServe() }()
	}
	fmt.Printf("dns server on %s: %d addresses\n", addr, len(pool))
	return <-errs
}

// query asks server for name (type A) once, over network, with no retry.
func query(network, server, name string, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: timeout}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m, _, err := c.Exchange(q, server)
	return m, err
}

func firstA(m *dns.Msg) (netip.Addr, bool) {
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			return netip.AddrFromSlice(a.A.To4())
		}
	}
	return netip.Addr{}, false
}

// loopStats is what a dnsloop saw.
type loopStats struct {
	mu                                  sync.Mutex
	answered, failed, notHeld, unlisted int
	slow                                int // queries that took over 100 ms (waited through a restart)
	max                                 time.Duration
	errs                                []string
}

func (s *loopStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("ok answered=%d failed=%d not_held=%d unlisted_not_refused=%d slow=%d max=%s errors=%q",
		s.answered, s.failed, s.notHeld, s.unlisted, s.slow, s.max.Round(time.Millisecond), strings.Join(s.errs, "; "))
}

func (s *loopStats) note(kind *int, format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*kind++
	if len(s.errs) < 5 {
		s.errs = append(s.errs, fmt.Sprintf(format, a...))
	}
}

var loop struct {
	mu    sync.Mutex
	stop  chan struct{}
	done  chan struct{}
	stats *loopStats
}

// dnsCommand runs the agent's DNS commands.
func dnsCommand(cmd, arg string) string {
	switch cmd {
	case "resolve":
		server, name, _ := strings.Cut(arg, " ")
		m, err := query("udp", server, name, 3*time.Second)
		if err != nil {
			return "error: " + err.Error()
		}
		if m.Rcode != dns.RcodeSuccess {
			return "error: " + dns.RcodeToString[m.Rcode]
		}
		a, ok := firstA(m)
		if !ok {
			return "error: no address"
		}
		return "ok " + a.String()
	case "dnsloop":
		loop.mu.Lock()
		defer loop.mu.Unlock()
		if loop.stop != nil {
			return "error: already looping"
		}
		loop.stop, loop.done, loop.stats = make(chan struct{}), make(chan struct{}), &loopStats{}
		go runLoop(arg, loop.stop, loop.done, loop.stats)
		return "ok"
	case "dnsstat", "dnsstop":
		loop.mu.Lock()
		defer loop.mu.Unlock()
		if loop.stop == nil {
			return "error: no loop"
		}
		if cmd == "dnsstop" {
			close(loop.stop)
			<-loop.done
			loop.stop = nil
		}
		return loop.stats.String()
	}
	return "error: unknown command " + cmd
}

func runLoop(server string, stop, done chan struct{}, s *loopStats) {
	defer close(done)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		network := []string{"udp", "tcp"}[i%2]
		// Long enough to wait out an egressd restart, with no retry: a
		// query that is lost shows as a failure.
		start := time.Now()
		m, err := query(network, server, fmt.Sprintf("q%d.cdn.example.test", i), 20*time.Second)
		took := time.Since(start)
		s.mu.Lock()
		if took > s.max {
			s.max = took
		}
		if took > 100*time.Millisecond {
			s.slow++
		}
		s.mu.Unlock()
		if err != nil || m.Rcode != dns.RcodeSuccess {
			s.note(&s.failed, "q%d %s: %v %v", i, network, err, rcode(m))
			continue
		}
		a, ok := firstA(m)
		if !ok {
			s.note(&s.failed, "q%d %s: no address", i, network)
			continue
		}
		if r := answerConnect(netip.AddrPortFrom(a, 8443).String()); r != "ok" {
			s.note(&s.notHeld, "q%d %s: answered %s, connect: %s", i, network, a, r)
		} else {
			s.mu.Lock()
			s.answered++
			s.mu.Unlock()
		}
		m, err = query(network, server, fmt.Sprintf("q%d.exfil.example", i), 20*time.Second)
		if err != nil || m.Rcode != dns.RcodeRefused {
			s.note(&s.unlisted, "q%d.exfil.example %s: %v %v", i, network, err, rcode(m))
		}
	}
}

func answerConnect(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err.Error()
	}
	c.Close()
	return "ok"
}

func rcode(m *dns.Msg) string {
	if m == nil {
		return ""
	}
	return dns.RcodeToString[m.Rcode]
}
