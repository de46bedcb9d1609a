package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// Identifier says which uid opened the flow of a redirected query: client
// is the query's source, local the proxy address it reached.
type Identifier interface {
	Opener(proto uint8, client, local netip.AddrPort) (uid uint32, ok bool, err error)
}

// Identity is who opened one query's flow, as Identifier.Opener says it.
type Identity struct {
	UID uint32
	OK  bool
	Err error
}

// BatchIdentifier is an Identifier that tells the openers of several UDP
// queries that reached local (the queries of one batched read) in one
// round trip to the kernel: out[i] is what Opener(17, clients[i], local)
// says. ServeUDP uses it when the Identifier has it.
type BatchIdentifier interface {
	Identifier
	Openers(local netip.AddrPort, clients []netip.AddrPort, out []Identity)
}

// Observation is one answered or refused query, for `egressd learn`.
type Observation struct {
	Allowlist string
	Name      string
	Type      uint16
	Addrs     []netip.Addr
	Listed    bool
	Refused   bool
	At        time.Time
}

// Options configure a Proxy.
type Options struct {
	Kernel   ruleset.ProxyKernel
	Identify Identifier
	Log      *zap.Logger
	Metrics  *metrics.Metrics
	// Observe, when set, is called for every query of a known allowlist
	// (from many goroutines; it must not block).
	Observe func(Observation)
	// MaxInFlight bounds the queries answered at once; beyond it a query is
	// answered SERVFAIL at once. Default 1024.
	MaxInFlight int
	// MaxConns bounds the TCP connections open at once; past it a new one
	// is closed at once. Default 256.
	MaxConns int
	// MaxInFlightPerUID and MaxConnsPerUID bound what one uid holds of
	// those, so that one service (slow names, idle connections) cannot
	// take DNS away from the others. Default a quarter of each.
	MaxInFlightPerUID int
	MaxConnsPerUID    int
	// MaxElements bounds the proxy's kernel elements per uid (a wildcard
	// over a domain whose answers an attacker controls must not fill the
	// kernel); past it, answers with new addresses get SERVFAIL until
	// elements expire. Default 65536; the policy's MaxAnswers
	// (dns_proxy_max_answers) replaces it.
	MaxElements int
	// Timeout per upstream attempt. Default 2 s.
	Timeout time.Duration
	// RefusedInterval is the window of dns_refused aggregation. Default 10 s.
	RefusedInterval time.Duration
	// CacheEntries and CacheBytes bound the answer cache (cache.go).
	// Defaults DefaultCacheEntries and DefaultCacheBytes; a negative
	// CacheEntries turns the cache off.
	CacheEntries int
	CacheBytes   int
	Now          func() time.Time
}

// Proxy answers redirected queries. Safe for concurrent use.
type Proxy struct {
	opt     Options
	policy  atomic.Pointer[Policy]
	w       *writer
	cache   *answerCache
	sem     chan struct{}
	refused *refusals
	tcpIdle time.Duration
	conns   chan struct{}
	// Per-uid shares of sem and conns.
	inFlight, connsOf *uidSlots
	// stray bounds the TCP connections that belong to no dns: proxy user
	// (sent to the port directly): each gets one REFUSED and is closed,
	// apart from the users' slots.
	stray chan struct{}
	idle  sync.Map // upstream netip.AddrPort -> chan *upSock
	// Kernel write failures are logged at most once per failLogEvery, with
	// how many were not.
	failMu     sync.Mutex
	failLogged time.Time
	failQuiet  int
}

const failLogEvery = 10 * time.Second

// drainIdle is how long a TCP connection may stay idle once the proxy
// stops: a client that connected just before sends its query at once.
const drainIdle = 200 * time.Millisecond

// strayConns and strayWait bound the TCP connections of nobody's queries.
const (
	strayConns = 16
	strayWait  = 2 * time.Second
)

// uidSlots counts what each uid holds of a shared bound.
type uidSlots struct {
	max int
	mu  sync.Mutex
	n   map[uint32]int
}

func newUIDSlots(max int) *uidSlots { return &uidSlots{max: max, n: map[uint32]int{}} }

func (s *uidSlots) take(uid uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[uid] >= s.max {
		return false
	}
	s.n[uid]++
	return true
}

func (s *uidSlots) give(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[uid]--; s.n[uid] <= 0 {
		delete(s.n, uid)
	}
}

// The defaults of MaxInFlight and MaxConns, and so the most descriptors
// the proxy holds at once (one upstream socket per query in flight, one per
// TCP client, plus strayConns): the daemon's descriptor budget counts them.
const (
	DefaultMaxInFlight = 1024
	DefaultMaxConns    = 256
	MaxDescriptors     = DefaultMaxInFlight + DefaultMaxConns + strayConns
)

// New returns a proxy that answers nothing until SetPolicy.
func New(opt Options) *Proxy {
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = DefaultMaxInFlight
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = DefaultMaxConns
	}
	if opt.MaxElements <= 0 {
		opt.MaxElements = 65536
	}
	if opt.MaxInFlightPerUID <= 0 {
		opt.MaxInFlightPerUID = max(1, opt.MaxInFlight/4)
	}
	if opt.MaxConnsPerUID <= 0 {
		opt.MaxConnsPerUID = max(1, opt.MaxConns/4)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 2 * time.Second
	}
	if opt.RefusedInterval <= 0 {
		opt.RefusedInterval = 10 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.CacheEntries == 0 {
		opt.CacheEntries = DefaultCacheEntries
	}
	if opt.CacheBytes <= 0 {
		opt.CacheBytes = DefaultCacheBytes
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	p := &Proxy{opt: opt, w: newWriter(opt.Kernel, opt.Now, opt.MaxElements), sem: make(chan struct{}, opt.MaxInFlight),
		tcpIdle: 10 * time.Second, conns: make(chan struct{}, opt.MaxConns),
		inFlight: newUIDSlots(opt.MaxInFlightPerUID), connsOf: newUIDSlots(opt.MaxConnsPerUID), stray: make(chan struct{}, strayConns)}
	p.cache = newAnswerCache(max(opt.CacheEntries, 0), opt.CacheBytes)
	p.refused = newRefusals(opt.Log, opt.RefusedInterval, opt.Now)
	p.w.observe = opt.Metrics.ProxyWrite
	p.w.failed = func(err error) {
		p.opt.Log.Error("DNS proxy answers the allowlists no longer allow could not be removed from the kernel; retried with the next write", event.Field(event.DNSProxyFailed), zap.Error(err))
	}
	p.policy.Store(&Policy{ByUID: map[uint32]*Allowlist{}})
	return p
}

// SetPolicy replaces what the proxy answers by. Every answer in the kernel
// that the new policy does not allow is taken out at once (writer.SetPolicy):
// an answer never outlives the policy that allowed it.
func (p *Proxy) SetPolicy(pol *Policy) {
	// The writer first: an answer on its way under the old policy is
	// checked against the new one before it is written.
	n, err := p.w.SetPolicy(pol)
	p.policy.Store(pol)
	// Replies of the previous resolvers, or read under the previous
	// knobs, are not served under the new policy (nor stored, if on their
	// way: the generation changes).
	p.cache.clear()
	if n > 0 && err == nil {
		p.opt.Log.Info("DNS proxy answers the allowlists no longer allow were removed from the kernel", event.Field(event.DNSProxyRevoked), zap.Int("elements", n))
	}
}

// Seed adopts the answers the kernel already holds (a restarted daemon).
func (p *Proxy) Seed(es []ruleset.ProxyElement) { p.w.Seed(es) }

// Refill writes every live answer again (after the table was restored).
func (p *Proxy) Refill() error { return p.w.Refill() }

// Flush logs the pending dns_refused summaries (on stop).
func (p *Proxy) Flush() { p.refused.flush() }

// ServeUDP answers datagrams on pc until it is closed or ctx ends. When ctx
// ends it reads no more (what is unread stays in the socket: under socket
// activation systemd holds it for the next egressd), answers what it has
// read, and then closes pc.
func (p *Proxy) ServeUDP(ctx context.Context, pc *net.UDPConn) error {
	local, err := netip.ParseAddrPort(pc.LocalAddr().String())
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) }) //nolint:errcheck
	defer stop()
	var inflight sync.WaitGroup
	defer func() { inflight.Wait(); pc.Close() }()
	actx := context.WithoutCancel(ctx) // an answer begun is finished (bounded by the upstream timeouts)
	// Queries are read in batches (recvmmsg): under load, one system call
	// takes what is queued instead of one each.
	var rb batchReader = ipv4.NewPacketConn(pc)
	if local.Addr().Is6() && !local.Addr().Is4In6() {
		rb = ipv6.NewPacketConn(pc)
	}
	// Answers run on workers that outlive a query: a goroutine per query
	// grew its stack afresh for each (runtime.morestack, 6.5 % of the
	// daemon's CPU with 32 clients, issue 24). A finished worker waits
	// for the next query if fewer than idleWorkers wait already, and ends
	// otherwise; the queries in flight stay bounded by p.sem.
	type query struct {
		msg    []byte
		client netip.AddrPort
		id     Identity // when known: told for its batch
		known  bool
	}
	work := make(chan query)
	idle := make(chan struct{}, idleWorkers) // a token per waiting worker
	quit := make(chan struct{})
	var workers sync.WaitGroup
	defer func() { close(quit); workers.Wait() }()
	// buf is the worker's: its replies are written into it (a cache hit
	// allocates none), and it is reused once the reply has left.
	handle := func(q query, buf *[]byte) {
		defer inflight.Done()
		defer func() { <-p.sem }()
		var id *Identity
		if q.known {
			id = &q.id
		}
		out, seen := p.answerSeen(actx, 17, q.msg, q.client, local, id, *buf)
		if out != nil {
			pc.WriteToUDPAddrPort(out, q.client) //nolint:errcheck
			if cap(out) > cap(*buf) && cap(out) <= maxReplyBuf {
				*buf = out[:0]
			}
		}
		p.observe(seen) // after the reply left
	}
	worker := func(q query) {
		defer workers.Done()
		buf := make([]byte, 0, dns.MinMsgSize)
		for {
			handle(q, &buf)
			select {
			case idle <- struct{}{}:
			default:
				return // enough are waiting
			}
			select {
			case q = <-work:
				<-idle
			case <-quit:
				<-idle
				return
			}
		}
	}
	ms := make([]ipv4.Message, readBatch)
	arena := make([]byte, readBatch*maxQuery)
	for i := range ms {
		ms[i].Buffers = [][]byte{arena[i*maxQuery : (i+1)*maxQuery]}
	}
	// The openers of a batch's queries are asked in one round trip when
	// the identifier can (BatchIdentifier: one write for the batch instead
	// of one per query); each query keeps its own answer. Then the reader
	// answers itself what needs no wait (a cache hit whose elements the
	// kernel holds for the asker already, a refusal: answerQuery inline),
	// and sends those answers together (sendmmsg); every other query goes
	// to a worker, as before.
	bid, _ := p.opt.Identify.(BatchIdentifier)
	type slot struct {
		raw    []byte
		client netip.AddrPort
		addr   net.Addr
	}
	batch := make([]slot, 0, readBatch)
	clients := make([]netip.AddrPort, 0, readBatch)
	ids := make([]Identity, readBatch)
	replies := make([][]byte, readBatch) // the reader's reply buffers, one per query of a batch
	for i := range replies {
		replies[i] = make([]byte, 0, dns.MinMsgSize)
	}
	out := make([]ipv4.Message, 0, readBatch)
	bufs := make([][1][]byte, readBatch) // out's Buffers
	seens := make([]*Observation, 0, readBatch)
	dispatch := func(q query) {
		inflight.Add(1)
		select {
		case work <- q: // to a waiting worker
		default:
			workers.Add(1)
			go worker(q)
		}
	}
	for {
		n, err := rb.ReadBatch(ms, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		batch, clients = batch[:0], clients[:0]
		for i := range ms[:n] {
			m := &ms[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.Flags&unix.MSG_TRUNC != 0 {
				continue // larger than any query (one question): garbage
			}
			client := ua.AddrPort()
			client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
			raw := m.Buffers[0][:m.N]
			select {
			case p.sem <- struct{}{}:
			default:
				// Overloaded: a quick SERVFAIL beats a silent drop and a retry storm.
				if r := servfail(raw); r != nil {
					pc.WriteToUDPAddrPort(r, client) //nolint:errcheck
				}
				p.opt.Metrics.ProxyQuery("", "overload", 0)
				continue
			}
			batch = append(batch, slot{raw: raw, client: client, addr: m.Addr})
			clients = append(clients, client)
		}
		if bid == nil {
			for _, sl := range batch {
				dispatch(query{msg: append([]byte(nil), sl.raw...), client: sl.client})
			}
			continue
		}
		if len(batch) == 0 {
			continue // garbage or overload only
		}
		bid.Openers(local, clients, ids[:len(batch)])
		out, seens = out[:0], seens[:0]
		for i, sl := range batch {
			r, seen, deferred := p.answerQuery(actx, 17, sl.raw, sl.client, local, &ids[i], replies[i], true)
			if deferred {
				dispatch(query{msg: append([]byte(nil), sl.raw...), client: sl.client, id: ids[i], known: true})
				continue
			}
			<-p.sem
			if r != nil {
				if cap(r) > cap(replies[i]) && cap(r) <= maxReplyBuf {
					replies[i] = r[:0]
				}
				bufs[i][0] = r
				out = append(out, ipv4.Message{Buffers: bufs[i][:], Addr: sl.addr})
			}
			seens = append(seens, seen)
		}
		for len(out) > 0 {
			k, err := rb.WriteBatch(out, 0)
			if err != nil {
				k = max(k, 1) // that answer is lost (as a failed sendto's); the next ones are sent
			}
			out = out[min(k, len(out)):]
		}
		for _, seen := range seens {
			p.observe(seen) // after the replies left
		}
	}
}

// batchReader is ipv4.PacketConn or ipv6.PacketConn (their Message is one type).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// readBatch is how many queries one read takes at most; maxQuery the
// largest query read (one question and an OPT: a few hundred bytes, 468
// with RFC 8467 padding; a larger datagram is dropped unread).
const (
	readBatch = 16
	maxQuery  = 4096
)

// idleWorkers bounds the UDP answer workers that wait for a query.
const idleWorkers = 64

// maxReplyBuf bounds the reply buffer a UDP worker keeps (a larger reply
// is not kept for the next).
const maxReplyBuf = 4096

// ServeTCP answers connections on ln until it is closed or ctx ends. When
// ctx ends it accepts no more (the backlog stays in the socket, for the next
// egressd under socket activation) and each open connection ends after the
// query it is answering, or once idle for drainIdle.
func (p *Proxy) ServeTCP(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.serveConn(ctx, c)
		}()
	}
}

// serveConn serves one TCP connection. Its flow tells whose it is: a
// dns: proxy user's takes one of the shared slots, and one of its uid's
// share; any other gets one answer (REFUSED) within strayWait, apart.
func (p *Proxy) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	drain := func() { c.SetReadDeadline(time.Now().Add(drainIdle)) } //nolint:errcheck
	stop := context.AfterFunc(ctx, drain)
	defer stop()
	actx := context.WithoutCancel(ctx)
	client, err1 := netip.ParseAddrPort(c.RemoteAddr().String())
	local, err2 := netip.ParseAddrPort(c.LocalAddr().String())
	if err1 != nil || err2 != nil {
		return
	}
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	uid, ok, err := p.opt.Identify.Opener(6, client, local)
	idle, once := p.tcpIdle, false
	if al := p.policy.Load().ByUID[uid]; err != nil || !ok || al == nil {
		select {
		case p.stray <- struct{}{}:
			defer func() { <-p.stray }()
		default:
			p.opt.Metrics.ProxyQuery("", "refused", 0)
			return
		}
		idle, once = strayWait, true
	} else {
		select {
		case p.conns <- struct{}{}:
			defer func() { <-p.conns }()
		default:
			p.opt.Metrics.ProxyQuery(al.Name, "overload", 0) // too many open: a client retries, idle ones time out
			return
		}
		if !p.connsOf.take(uid) {
			p.opt.Metrics.ProxyQuery(al.Name, "overload", 0)
			return
		}
		defer p.connsOf.give(uid)
	}
	for {
		c.SetReadDeadline(time.Now().Add(idle)) //nolint:errcheck
		// Stopping: drain here, or else the AfterFunc runs after the line above.
		if ctx.Err() != nil {
			drain()
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		p.sem <- struct{}{}
		out, seen := p.answerSeen(actx, 6, msg, client, local, nil, nil)
		<-p.sem
		if out == nil {
			p.observe(seen)
			return
		}
		c.SetWriteDeadline(time.Now().Add(idle)) //nolint:errcheck
		_, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
		p.observe(seen) // after the reply left
		if err != nil || once {
			return
		}
	}
}

// servfail is a SERVFAIL reply to a raw query, nil when it does not parse.
func servfail(raw []byte) []byte {
	q := new(dns.Msg)
	if q.Unpack(raw) != nil || q.Response {
		return nil
	}
	r := new(dns.Msg)
	r.SetRcode(q, dns.RcodeServerFailure)
	out, _ := r.Pack()
	return out
}

// udpSize is the largest UDP reply the client of q takes.
func udpSize(q *dns.Msg) int {
	if o := q.IsEdns0(); o != nil {
		return max(int(o.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}

func reply(q *dns.Msg, rcode int) []byte {
	r := new(dns.Msg)
	r.SetRcode(q, rcode)
	r.RecursionAvailable = true
	out, err := r.Pack()
	if err != nil {
		return nil
	}
	return out
}

// answer handles one query; nil means no reply (garbage, or a response).
// Its observation is reported before it returns.
func (p *Proxy) answer(ctx context.Context, proto uint8, raw []byte, client, local netip.AddrPort) []byte {
	out, seen := p.answerSeen(ctx, proto, raw, client, local, nil, nil)
	p.observe(seen)
	return out
}

// answerSeen is answer, its observation (nil: none) returned to report
// once the reply has left: the observer's bookkeeping (egressd learn's
// record of names) is not on the answer's path (issue 24).
//
// The reply is appended to dst[:0] where it fits (a worker's buffer,
// reused for its next query).
//
// id, when not nil, is the query's opener as the identifier told it for
// its batch (BatchIdentifier); nil: Identify is asked here.
func (p *Proxy) answerSeen(ctx context.Context, proto uint8, raw []byte, client, local netip.AddrPort, id *Identity, dst []byte) ([]byte, *Observation) {
	out, seen, _ := p.answerQuery(ctx, proto, raw, client, local, id, dst, false)
	return out, seen
}

// answerQuery is answerSeen; inline, it never waits (the reader answers
// with it): deferred, with nothing answered, when the answer would wait
// for the identifier, the upstream or the kernel (a worker answers it
// then, from the start).
func (p *Proxy) answerQuery(ctx context.Context, proto uint8, raw []byte, client, local netip.AddrPort, id *Identity, dst []byte, inline bool) (_ []byte, _ *Observation, deferred bool) {
	if inline && id == nil {
		return nil, nil, true
	}
	dst = dst[:0]
	var seen *Observation
	start := p.opt.Now()
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil || q.Response {
		return nil, nil, false
	}
	if q.Opcode != dns.OpcodeQuery {
		return reply(q, dns.RcodeNotImplemented), nil, false
	}
	if len(q.Question) != 1 {
		return reply(q, dns.RcodeFormatError), nil, false
	}
	qn := q.Question[0]
	name := normalize(qn.Name)
	gen := p.cache.generation() // before the policy (answerCache.generation)
	pol := p.policy.Load()
	var uid uint32
	var ok bool
	var err error
	if id != nil {
		uid, ok, err = id.UID, id.OK, id.Err
	} else {
		uid, ok, err = p.opt.Identify.Opener(proto, client, local)
	}
	var al *Allowlist
	if err == nil && ok {
		al = pol.ByUID[uid]
	}
	if al == nil {
		// Not a redirected query of a dns: proxy user: someone sent it here
		// directly, or its flow is gone. Never answered.
		why := "not a query of a dns: proxy user"
		if err != nil {
			why = "cannot tell who sent it: " + err.Error()
		}
		p.refused.add("", "", uid, name, qn.Qtype, why)
		p.opt.Metrics.ProxyQuery("", "refused", p.opt.Now().Sub(start).Seconds())
		return reply(q, dns.RcodeRefused), nil, false
	}
	// One uid's share of the queries in flight: its slow names must not
	// take the proxy from the others.
	if !p.inFlight.take(uid) {
		p.opt.Metrics.ProxyQuery(al.Name, "overload", p.opt.Now().Sub(start).Seconds())
		return reply(q, dns.RcodeServerFailure), nil, false
	}
	defer p.inFlight.give(uid)
	entries := al.Match(name)
	listed := len(entries) > 0
	if !listed && !al.Answer && !al.Audit {
		p.refused.add(al.Name, al.User, uid, name, qn.Qtype, "unlisted")
		seen = &Observation{Allowlist: al.Name, Name: name, Type: qn.Qtype, Refused: true}
		p.opt.Metrics.ProxyQuery(al.Name, "refused", p.opt.Now().Sub(start).Seconds())
		return reply(q, dns.RcodeRefused), seen, false
	}
	// A cached reply is read from here on as one fresh from the upstream:
	// the asker's policy (checked above, for this uid, on every query),
	// resolver.ReadReply and enforce (Admit, then the kernel for this uid
	// before the answer leaves). The cache saves the upstream, never a
	// check.
	key := keyOf(q) // what upstreamQuery(q) would ask
	e, age, hit := p.cache.get(key, start)
	if hit && e.hit != nil && (proto == 6 || len(e.wire) <= udpSize(q)) && e.hit.sameQuestion(raw, e.wire) {
		// The same steps on the form read at store (hit.go): Admit, the
		// kernel for this uid, then the stored bytes patched.
		out, addrs, done, err := p.answerHit(pol, al, entries, listed, name, e, age, raw, dst, inline)
		if errors.Is(err, errWouldWait) {
			return nil, nil, true
		}
		if done {
			p.opt.Metrics.ProxyCacheHit()
			if err != nil {
				return p.enforceFailed(q, al.Name, name, err, start), nil, false
			}
			if p.opt.Observe != nil {
				seen = &Observation{Allowlist: al.Name, Name: name, Type: qn.Qtype, Addrs: addrs, Listed: listed}
			}
			p.answered(al.Name, listed, start)
			return out, seen, false
		}
	}
	if inline {
		return nil, nil, true // the unpacking path, or the upstream: a worker's
	}
	var r *dns.Msg
	if hit {
		r, hit = e.reply(age)
	}
	if hit {
		p.opt.Metrics.ProxyCacheHit()
	} else {
		var err error
		if r, err = p.forward(ctx, proto, upstreamQuery(q), pol.Upstreams); err != nil {
			p.opt.Log.Debug("upstream failed", zap.String("name", name), zap.Error(err))
			p.opt.Metrics.ProxyQuery(al.Name, "servfail", p.opt.Now().Sub(start).Seconds())
			return reply(q, dns.RcodeServerFailure), nil, false
		}
	}
	// The answer is read by the rules egressd's own lookups follow
	// (resolver.ReadReply): a CNAME chain that loops or runs past the cap
	// is a failure, not an answer (and is not cached).
	res, _, err := resolver.ReadReply(r, r.Question[0].Name, r.Question[0].Qtype, 0)
	if err != nil {
		p.opt.Log.Debug("upstream answer refused", zap.String("name", name), zap.Error(err))
		p.opt.Metrics.ProxyQuery(al.Name, "servfail", p.opt.Now().Sub(start).Seconds())
		return reply(q, dns.RcodeServerFailure), nil, false
	}
	if !hit {
		// Stored under the question asked (forward checked that r
		// answers it), before enforce rewrites r for this uid.
		p.cache.put(gen, key, r, lifetime(r, res.TTL, res.Negative, pol.MaxTTL), p.opt.Now())
	}
	addrs := res.Addrs
	if listed {
		if addrs, err = p.enforce(pol, al, entries, name, r, res); err != nil {
			return p.enforceFailed(q, al.Name, name, err, start), nil, false
		}
	}
	seen = &Observation{Allowlist: al.Name, Name: name, Type: qn.Qtype, Addrs: addrs, Listed: listed}
	r.Id = q.Id
	r.Question = []dns.Question{q.Question[0]} // as the client wrote it
	if proto == 17 {
		// What fits the client's buffer (the answer may have come over
		// TCP); past it, records are left out and the reply marked
		// truncated: the client asks again over TCP.
		r.Truncate(udpSize(q))
	}
	out, err := r.PackBuffer(dst[len(dst):cap(dst)])
	if err != nil {
		return reply(q, dns.RcodeServerFailure), seen, false // its addresses are in the kernel: observed
	}
	p.answered(al.Name, listed, start)
	return out, seen, false
}

func (p *Proxy) answered(allowlist string, listed bool, start time.Time) {
	result := "answered"
	if !listed {
		result = "unlisted_answered"
	}
	p.opt.Metrics.ProxyQuery(allowlist, result, p.opt.Now().Sub(start).Seconds())
}

// enforceFailed is the reply to q when its answer's addresses could not
// be put in the kernel: never hand out an address the kernel does not
// hold. A policy that changed meanwhile is no failure: the client asks
// again, under the new one.
func (p *Proxy) enforceFailed(q *dns.Msg, allowlist, name string, err error, start time.Time) []byte {
	if !errors.Is(err, errPolicyChanged) {
		p.kernelFailed(allowlist, name, err)
	}
	result := "servfail"
	if errors.Is(err, ErrTooMany) {
		result = "answer_cap" // dns_proxy_max_answers reached: an alert of its own
	}
	p.opt.Metrics.ProxyQuery(allowlist, result, p.opt.Now().Sub(start).Seconds())
	return reply(q, dns.RcodeServerFailure)
}

// answerHit answers raw from the cache entry e (age seconds old, with a
// hitForm) as the unpacking path would: the asker's rules (Admit) and, for
// a listed name, its addresses in the kernel for this uid (the writer's
// Ensure) before the reply is written, appended to dst. done is false
// (nothing done) when the rules refuse one of the answer's addresses:
// enforce must then remove its records, on the unpacking path.
//
// inline, it never waits: errWouldWait when the kernel does not hold the
// elements already (writer.Held).
func (p *Proxy) answerHit(pol *Policy, al *Allowlist, entries []config.Entry, listed bool, name string, e *cacheEntry, age uint32, raw, dst []byte, inline bool) (out []byte, addrs []netip.Addr, done bool, err error) {
	f := e.hit
	res := f.result(age)
	if !listed {
		return f.write(dst, raw, e.wire, age, false, 0), res.Addrs, true, nil
	}
	kept, _, _ := pol.answers().Admit(res, al.PrivateOK)
	if !f.admitsAll(kept) {
		return nil, nil, false, nil
	}
	if len(kept) == 0 {
		return f.write(dst, raw, e.wire, age, false, 0), nil, true, nil // enforce: nothing to write, no TTL capped
	}
	hand, err := p.ensure(pol, al, entries, name, kept, res.TTL, inline)
	if err != nil {
		return nil, nil, true, err
	}
	return f.write(dst, raw, e.wire, age, true, uint32(hand/time.Second)), kept, true, nil
}

func (p *Proxy) kernelFailed(allowlist, name string, err error) {
	p.failMu.Lock()
	now := p.opt.Now()
	if now.Sub(p.failLogged) < failLogEvery {
		p.failQuiet++
		p.failMu.Unlock()
		return
	}
	quiet := p.failQuiet
	p.failLogged, p.failQuiet = now, 0
	p.failMu.Unlock()
	p.opt.Log.Error("a DNS answer could not be put in the kernel; answered SERVFAIL", event.Field(event.DNSProxyFailed),
		zap.String("allowlist", allowlist), zap.String("name", name), zap.Error(err), zap.Int("not_logged", quiet))
}

func (p *Proxy) observe(o *Observation) {
	if o != nil && p.opt.Observe != nil {
		o.At = p.opt.Now()
		p.opt.Observe(*o)
	}
}

// forward asks the upstream resolvers the question fq (upstreamQuery) in
// turn, over the client's transport, and reads their replies by the rules
// egressd's own lookups read theirs (resolver.Client): a truncated UDP
// reply is never used, the question is asked again over TCP; a reply to
// another question, or with a code other than NOERROR or NXDOMAIN, is a
// failure (the next resolver is asked).
func (p *Proxy) forward(ctx context.Context, proto uint8, fq *dns.Msg, ups []netip.AddrPort) (*dns.Msg, error) {
	if len(ups) == 0 {
		return nil, errors.New("no resolvers configured")
	}
	var errs []error
	for _, up := range ups {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var r *dns.Msg
		var err error
		if proto == 6 {
			r, _, err = (&dns.Client{Net: "tcp", Timeout: p.opt.Timeout}).ExchangeContext(ctx, fq, up.String())
		} else {
			r, err = p.exchangeUDP(ctx, fq, up)
			if err == nil && r.Truncated {
				r, _, err = (&dns.Client{Net: "tcp", Timeout: p.opt.Timeout}).ExchangeContext(ctx, fq, up.String())
			}
		}
		if err == nil && !resolver.Answers(r, fq.Question[0]) {
			err = errors.New("reply does not match the question")
		}
		if err == nil && r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			err = fmt.Errorf("answered %s", dns.RcodeToString[r.Rcode])
		}
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 65535); return &b }}

// upstreamQuery is what the resolvers are asked for q: its question alone,
// the name in lower case, with q's RD, CD and AD bits and, when q has
// EDNS, an OPT with its UDP size and DO bit; under an ID of our own.
// Nothing else of the client's message leaves: not its EDNS options, not
// records in its other sections, not the case of its letters — each a
// channel to the resolvers (and, passed on, to the name's servers) for
// data of the client's choosing.
func upstreamQuery(q *dns.Msg) *dns.Msg {
	fq := new(dns.Msg)
	fq.Id = dns.Id()
	fq.Opcode = dns.OpcodeQuery
	fq.RecursionDesired = q.RecursionDesired
	fq.CheckingDisabled = q.CheckingDisabled
	fq.AuthenticatedData = q.AuthenticatedData
	qq := q.Question[0]
	fq.Question = []dns.Question{{Name: strings.ToLower(qq.Name), Qtype: qq.Qtype, Qclass: qq.Qclass}}
	if o := q.IsEdns0(); o != nil {
		fq.SetEdns0(max(o.UDPSize(), dns.MinMsgSize), o.Do())
	}
	return fq
}

// upSock is a connected UDP socket to one upstream, used for one query at
// a time and for at most upSockUses queries: the source port changes often
// (an off-path spoofer must guess it and the random query ID), without the
// cost of a socket per query. (Its conntrack entry is in zone 0; services'
// redirected queries are in ruleset.DNSZone: a service socket that gets the
// same port never joins it.)
type upSock struct {
	c    *net.UDPConn
	uses int
}

const (
	upSockUses = 64
	upSockIdle = 32 // sockets kept per upstream
)

func (p *Proxy) getSock(up netip.AddrPort) (*upSock, error) {
	if v, ok := p.idle.Load(up); ok {
		select {
		case s := <-v.(chan *upSock):
			return s, nil
		default:
		}
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(up))
	if err != nil {
		return nil, err
	}
	return &upSock{c: c}, nil
}

// putSock keeps s for the next query unless it failed or served its share.
func (p *Proxy) putSock(up netip.AddrPort, s *upSock, ok bool) {
	s.uses++
	if !ok || s.uses >= upSockUses {
		s.c.Close()
		return
	}
	v, _ := p.idle.LoadOrStore(up, make(chan *upSock, upSockIdle))
	select {
	case v.(chan *upSock) <- s:
	default:
		s.c.Close()
	}
}

// exchangeUDP asks up over UDP, with a random query ID.
func (p *Proxy) exchangeUDP(ctx context.Context, q *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	out, err := q.Pack()
	if err != nil {
		return nil, err
	}
	s, err := p.getSock(up)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() { p.putSock(up, s, ok) }()
	c := s.c
	deadline := time.Now().Add(p.opt.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline) //nolint:errcheck
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for {
		n, err := c.Read(*bp)
		if err != nil {
			return nil, err
		}
		r := new(dns.Msg)
		if r.Unpack((*bp)[:n]) != nil || r.Id != q.Id || !r.Response {
			continue // not the answer (a stray or spoofed datagram): keep waiting until the deadline
		}
		ok = true
		return r, nil
	}
}

// errWouldWait: an inline answer would wait for the kernel.
var errWouldWait = errors.New("the answer waits for the kernel")

// ensure puts the addresses kept, for each entry, in the uid's kernel sets
// for the answer's TTL ttl, and returns the TTL to hand. inline, it only
// checks that the kernel holds them already (writer.Held): errWouldWait
// when not.
func (p *Proxy) ensure(pol *Policy, al *Allowlist, entries []config.Entry, name string, kept []netip.Addr, ttl time.Duration, inline bool) (time.Duration, error) {
	keep, hand := pol.lifetimes(ttl)
	var buf [8]ruleset.ProxyElement
	es := buf[:0]
	for _, a := range kept {
		for _, e := range entries {
			es = append(es, ruleset.ProxyElement{UID: al.UID, Timeout: keep,
				Element: ruleset.ElementFor(e.Proto, netip.PrefixFrom(a, a.BitLen()), e.PortFrom, e.PortTo)})
		}
	}
	t0 := p.opt.Now()
	// The kernel must hold what is handed for the TTL handed, and a second
	// at least (the TTL floor): an answer with TTL 0 that finds its element
	// about to lapse renews it.
	if inline {
		if !p.w.Held(es, name, max(hand, time.Second)) {
			return 0, errWouldWait
		}
	} else if err := p.w.Ensure(es, name, max(hand, time.Second)); err != nil {
		return 0, err
	}
	p.opt.Metrics.ProxyKernel(p.opt.Now().Sub(t0).Seconds())
	return hand, nil
}

// rrAddr is the address of an A or AAAA record, as written (an
// IPv4-mapped AAAA stays an IPv6 address: resolver.ReadReply opens nothing
// for it).
func rrAddr(rr dns.RR) (netip.Addr, bool) {
	switch v := rr.(type) {
	case *dns.A:
		return netip.AddrFromSlice(v.A.To4())
	case *dns.AAAA:
		return netip.AddrFromSlice(v.AAAA.To16())
	}
	return netip.Addr{}, false
}

// enforce puts the addresses of the answer res (read from r by
// resolver.ReadReply) that the policy admits (resolver.Policy.Admit: the
// rebinding filter, the cap) in the uid's kernel sets for each matching
// entry, then rewrites the answer: address records the kernel does not hold
// are removed (other names', other types', other sections', refused ones),
// every TTL of the chain is capped to what the kernel keeps. It returns the
// addresses kept.
func (p *Proxy) enforce(pol *Policy, al *Allowlist, entries []config.Entry, name string, r *dns.Msg, res resolver.Result) ([]netip.Addr, error) {
	q := r.Question[0]
	kept, _, _ := pol.answers().Admit(res, al.PrivateOK)
	keptSet := make(map[netip.Addr]bool, len(kept))
	for _, a := range kept {
		keptSet[a] = true
	}
	owners := map[string]bool{normalize(q.Name): true}
	for _, c := range res.Chain {
		owners[normalize(c)] = true
	}
	isChain := func(rr dns.RR) bool { return owners[normalize(rr.Header().Name)] }
	filter := func(rrs []dns.RR, inAnswer bool) []dns.RR {
		out := rrs[:0]
		for _, rr := range rrs {
			a, isAddr := rrAddr(rr)
			if !isAddr {
				out = append(out, rr)
				continue
			}
			if inAnswer && isChain(rr) && rr.Header().Rrtype == q.Qtype && keptSet[a] {
				out = append(out, rr)
			}
		}
		return out
	}
	r.Answer = filter(r.Answer, true)
	r.Extra = filter(r.Extra, false)
	r.Ns = filter(r.Ns, false)
	if len(kept) == 0 {
		return nil, nil
	}
	hand, err := p.ensure(pol, al, entries, name, kept, res.TTL, false)
	if err != nil {
		return nil, err
	}
	handS := uint32(hand / time.Second)
	for _, rr := range r.Answer {
		if isChain(rr) && rr.Header().Ttl > handS {
			rr.Header().Ttl = handS
		}
	}
	return kept, nil
}
