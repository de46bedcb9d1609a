// Package dnstest is a real, in-process DNS server (github.com/miekg/dns) whose
// records, TTLs and failure modes tests and the demo change at run time.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Record is what the server answers for one name.
type Record struct {
	A     []netip.Addr // IPv4 answers
	AAAA  []netip.Addr // IPv6 answers
	CNAME string       // when set, answer with this alias (and its records, if known)
	TTL   uint32
	Rcode int           // non-zero: answer with this code (SERVFAIL, REFUSED, NXDOMAIN…)
	Delay time.Duration // wait before answering
	// Rotate, when set, replaces A: each A query gets the next subset.
	Rotate [][]netip.Addr
}

// Server serves UDP and TCP on one address.
type Server struct {
	Addr    netip.AddrPort
	turns   map[string]int // name -> Rotate position
	mu      sync.Mutex
	records map[string]Record
	queries atomic.Int64
	perName sync.Map // name -> *atomic.Int64
	udp     *dns.Server
	tcp     *dns.Server
	mangle  func(*dns.Msg)
	inspect func(*dns.Msg)
}

// SetMangle installs a function that may rewrite each reply before it is
// sent (spoofing and malformed-reply tests); nil removes it.
func (s *Server) SetMangle(f func(*dns.Msg)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mangle = f
}

// SetInspect installs a function that sees each query as it arrived (what a
// proxy forwards); nil removes it. It must not keep q.
func (s *Server) SetInspect(f func(q *dns.Msg)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inspect = f
}

// Start serves on the given packet and stream listeners (so a caller can
// create them inside a network namespace).
func Start(pc net.PacketConn, ln net.Listener) *Server {
	s := &Server{records: map[string]Record{}}
	s.Addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	var wg sync.WaitGroup
	wg.Add(2)
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: wg.Done}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: wg.Done}
	go s.udp.ActivateAndServe() //nolint:errcheck // ends on Shutdown
	go s.tcp.ActivateAndServe() //nolint:errcheck
	wg.Wait()
	return s
}

// Listen starts a server on addr ("127.0.0.1:0" picks a port; TCP gets the same port).
func Listen(addr string) (*Server, error) {
	return ListenIn(func(f func() error) error { return f() }, addr)
}

// ListenIn is Listen with the sockets created inside do, for example a
// network namespace's Do.
func ListenIn(do func(func() error) error, addr string) (*Server, error) {
	var pc net.PacketConn
	var ln net.Listener
	err := do(func() error {
		// With port 0 the UDP port is the kernel's pick, and its TCP twin
		// may be in use (another test's connection): pick again.
		for try := 0; ; try++ {
			var err error
			if pc, err = net.ListenPacket("udp", addr); err != nil {
				return err
			}
			if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
				return nil
			}
			pc.Close()
			if _, port, _ := net.SplitHostPort(addr); port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
				return err
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return Start(pc, ln), nil
}

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown() //nolint:errcheck
	s.tcp.Shutdown() //nolint:errcheck
}

// Set replaces the record of name.
func (s *Server) Set(name string, r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[dns.Fqdn(strings.ToLower(name))] = r
}

// Delete removes a name: it answers NXDOMAIN from then on.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, dns.Fqdn(strings.ToLower(name)))
}

// Queries returns how many queries the server has received in all.
func (s *Server) Queries() int64 { return s.queries.Load() }

// QueriesFor returns how many queries for name (any type) the server received.
func (s *Server) QueriesFor(name string) int64 {
	if v, ok := s.perName.Load(dns.Fqdn(strings.ToLower(name))); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

func (s *Server) lookup(name string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[name]
	for n := name; !ok && strings.Contains(n, "."); {
		// A wildcard record "*.example.com." answers every name below it.
		_, n, _ = strings.Cut(n, ".")
		r, ok = s.records["*."+n]
	}
	return r, ok
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	s.queries.Add(1)
	s.mu.Lock()
	inspect := s.inspect
	s.mu.Unlock()
	if inspect != nil {
		inspect(q)
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m) //nolint:errcheck
		return
	}
	qn := strings.ToLower(q.Question[0].Name)
	v, _ := s.perName.LoadOrStore(qn, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	qt := q.Question[0].Qtype
	first, _ := s.lookup(qn)
	if first.Delay > 0 {
		time.Sleep(first.Delay)
	}
	name := qn
	for hops := 0; hops < 16; hops++ {
		r, ok := s.lookup(name)
		if !ok {
			if hops == 0 {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		if r.Rcode != 0 {
			m.Rcode = r.Rcode
			break
		}
		if r.CNAME != "" {
			target := dns.Fqdn(strings.ToLower(r.CNAME))
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(name, dns.TypeCNAME, r.TTL), Target: target})
			name = target
			continue
		}
		switch qt {
		case dns.TypeA:
			a4 := r.A
			if len(r.Rotate) > 0 {
				s.mu.Lock()
				if s.turns == nil {
					s.turns = map[string]int{}
				}
				a4 = r.Rotate[s.turns[name]%len(r.Rotate)]
				s.turns[name]++
				s.mu.Unlock()
			}
			for _, a := range a4 {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(name, dns.TypeA, r.TTL), A: a.AsSlice()})
			}
		case dns.TypeAAAA:
			for _, a := range r.AAAA {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, r.TTL), AAAA: a.AsSlice()})
			}
		}
		break
	}
	if len(m.Answer) == 0 && (m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError) {
		m.Ns = append(m.Ns, &dns.SOA{Hdr: hdr("test.", dns.TypeSOA, 30), Ns: "ns.test.", Mbox: "root.test.",
			Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 10})
	}
	if o := q.IsEdns0(); o != nil {
		m.SetEdns0(o.UDPSize(), false)
	}
	if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
		size := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	} else {
		m.Truncate(dns.MaxMsgSize) // even TCP carries at most 64 KiB
	}
	s.mu.Lock()
	mangle := s.mangle
	s.mu.Unlock()
	if mangle != nil {
		mangle(m)
	}
	if err := w.WriteMsg(m); err != nil {
		fmt.Println("dnstest: write:", err)
	}
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}
