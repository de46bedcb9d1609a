//go:build linux

package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/internal/testworld"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const (
	uidLabelled   = 4101 // its flows get the opener mark, as egressd's protected users' do
	uidUnlabelled = 4102 // redirected like the other, but never marked
	proxyPort     = 5399
)

var (
	resolver4 = netip.MustParseAddrPort("192.0.2.53:53")
	resolver6 = netip.MustParseAddrPort("[2001:db8::53]:53")
	proxy4    = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), proxyPort)
	proxy6    = netip.AddrPortFrom(netip.IPv6Loopback(), proxyPort)
)

// world is a namespace with the resolvers on a peer host (so a client's
// query leaves from the wire address, as on a real machine), egressd's
// opener mark rule, a nat output chain that redirects every port-53 query
// to the proxy port, and a conntrack Conn of n sockets (0: Open's default)
// opened inside it.
func newWorld(tb testing.TB, n int) (*testworld.World, *Conn) {
	tb.Helper()
	systest.Require(tb)
	w := testworld.NewT(tb)
	if _, err := w.AddPeer(resolver4.Addr().String(), resolver6.Addr().String()); err != nil {
		tb.Fatal(err)
	}
	if err := installRules(w.NS.Fd()); err != nil {
		tb.Fatal("install rules: ", err)
	}
	var c *Conn
	if err := w.NS.Do(func() (err error) {
		if n == 0 {
			c, err = Open()
		} else {
			c, err = open(n)
		}
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return w, c
}

// installRules mirrors what egressd and its proxy put in the kernel:
//
//	table inet cttest {
//	  chain nat { type nat hook output priority dstnat; meta l4proto udp th dport 53 redirect to :5399; (tcp alike) }
//	  chain out { type filter hook output priority filter;
//	    meta skuid 4101 ct state new ct status & confirmed == 0 ct mark set meta skuid }
//	}
//
// The mark rule is ruleset's restrictedRules first rule, behind a uid match
// that stands for `meta skuid @users jump restricted`.
func installRules(nsFd int) error {
	nc, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return err
	}
	defer nc.CloseLasting() //nolint:errcheck
	t := nc.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "cttest"})
	prio := nftables.ChainPriorityNATDest
	nat := nc.AddChain(&nftables.Chain{Name: "nat", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: prio})
	for _, p := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		nc.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(proxyPort)},
			&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		}})
	}
	out := nc.AddChain(&nftables.Chain{Name: "out", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	bit := func(key expr.CtKey, mask uint32, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Ct{Register: 1, Key: key},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: op, Register: 1, Data: []byte{0, 0, 0, 0}},
		}
	}
	es := []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uidLabelled)},
	}
	es = append(es, bit(expr.CtKeySTATE, expr.CtStateBitNEW, expr.CmpOpNeq)...)
	es = append(es, bit(expr.CtKeySTATUS, StatusConfirmed, expr.CmpOpEq)...)
	es = append(es,
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
	nc.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: es})
	return nc.Flush()
}

func addrPort(tb testing.TB, a net.Addr) netip.AddrPort {
	tb.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		tb.Fatal(err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// udpQuery sends one datagram as uid to resolver and returns the client's
// own address and the source address the proxy's recvfrom reports.
func udpQuery(t *testing.T, w *testworld.World, proxy net.PacketConn, uid int, resolver netip.AddrPort) (client, from netip.AddrPort) {
	t.Helper()
	c, err := w.NS.DialAs(uid, "udp", resolver.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	proxy.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	buf := make([]byte, 64)
	_, a, err := proxy.ReadFrom(buf)
	if err != nil {
		t.Fatal("proxy did not receive the redirected query: ", err)
	}
	return addrPort(t, c.LocalAddr()), addrPort(t, a)
}

// checkFlow asserts that the lookup found the client's flow, redirected,
// with want as opener (0: unmarked).
func checkFlow(t *testing.T, f Flow, err error, proto uint8, client, resolver, proxy netip.AddrPort, want uint32) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if uid, ok := f.OpenerUID(); ok != (want != 0) || uid != want {
		t.Errorf("OpenerUID() = %d, %v; want %d, %v (mark %#x)", uid, ok, want, want != 0, f.Mark)
	}
	if wantOrig := (Tuple{Proto: proto, Src: client, Dst: resolver}); f.Orig != wantOrig {
		t.Errorf("Orig = %+v, want %+v", f.Orig, wantOrig)
	}
	if wantReply := (Tuple{Proto: proto, Src: proxy, Dst: client}); f.Reply != wantReply {
		t.Errorf("Reply = %+v, want %+v", f.Reply, wantReply)
	}
	if !f.DstNAT() || f.Status&StatusConfirmed == 0 {
		t.Errorf("Status = %#x, want DST_NAT and CONFIRMED", f.Status)
	}
}

// The mark is readable the moment the proxy holds the first datagram: the
// entry was confirmed at postrouting, before loopback delivery. No retry,
// many times over, each with a new flow.
func TestLookupReplyUDP(t *testing.T) {
	w, c := newWorld(t, 2)
	for _, tc := range []struct {
		name            string
		proxy, resolver netip.AddrPort
	}{{"ipv4", proxy4, resolver4}, {"ipv6", proxy6, resolver6}} {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := w.NS.ListenPacket("udp", tc.proxy.String())
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			for i := range 50 {
				client, from := udpQuery(t, w, pc, uidLabelled, tc.resolver)
				if from != client {
					t.Fatalf("proxy saw the query from %s, the client sent from %s", from, client)
				}
				f, err := c.LookupReply(unix.IPPROTO_UDP, tc.proxy, from)
				checkFlow(t, f, err, unix.IPPROTO_UDP, client, tc.resolver, tc.proxy, uidLabelled)
				if t.Failed() {
					t.Fatalf("query %d", i)
				}
			}
			client, from := udpQuery(t, w, pc, uidUnlabelled, tc.resolver)
			f, err := c.LookupReply(unix.IPPROTO_UDP, tc.proxy, from)
			checkFlow(t, f, err, unix.IPPROTO_UDP, client, tc.resolver, tc.proxy, 0)
		})
	}
}

// TCP: the accepted connection's peer is the client; its entry carries the
// mark from the SYN.
func TestLookupReplyTCP(t *testing.T) {
	w, c := newWorld(t, 2)
	for _, tc := range []struct {
		name            string
		proxy, resolver netip.AddrPort
	}{{"ipv4", proxy4, resolver4}, {"ipv6", proxy6, resolver6}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := w.NS.Listen("tcp", tc.proxy.String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			for _, uid := range []int{uidLabelled, uidUnlabelled} {
				cl, err := w.NS.DialAs(uid, "tcp", tc.resolver.String(), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				sc, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer sc.Close()
				client, peer := addrPort(t, cl.LocalAddr()), addrPort(t, sc.RemoteAddr())
				if peer != client {
					t.Fatalf("proxy accepted %s, the client is %s", peer, client)
				}
				f, err := c.LookupReply(unix.IPPROTO_TCP, addrPort(t, sc.LocalAddr()), peer)
				want := uint32(0)
				if uid == uidLabelled {
					want = uidLabelled
				}
				checkFlow(t, f, err, unix.IPPROTO_TCP, client, tc.resolver, tc.proxy, want)
			}
		})
	}
}

func TestLookupReplyNotFound(t *testing.T) {
	_, c := newWorld(t, 1)
	for _, tc := range []struct {
		proto    uint8
		src, dst netip.AddrPort
	}{
		{unix.IPPROTO_UDP, proxy4, netip.MustParseAddrPort("203.0.113.201:1")},
		{unix.IPPROTO_TCP, proxy6, netip.MustParseAddrPort("[2001:db8:1::1]:1")},
	} {
		if f, err := c.LookupReply(tc.proto, tc.src, tc.dst); !errors.Is(err, ErrNotFound) {
			t.Errorf("LookupReply(%d, %s, %s) = %+v, %v; want ErrNotFound", tc.proto, tc.src, tc.dst, f, err)
		}
	}
	// A tuple of two families is refused before it reaches the kernel.
	if _, err := c.LookupReply(unix.IPPROTO_UDP, proxy4, netip.MustParseAddrPort("[2001:db8:1::1]:1")); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("mixed families: got %v, want a tuple error", err)
	}
}

// BenchmarkLookupReply measures one lookup of a live UDP flow, sequential
// and from parallel goroutines, with one socket and with Open's default
// pool. Rerun (as root):
//
//	go test ./internal/conntrack -run '^$' -bench LookupReply -benchmem -count 6 -cpu 1,2
//
// On the 2-core CI VM (2026-11-27, medians of 6, other work running): about
// 6 µs and 0 allocations per lookup sequentially; from parallel goroutines
// on 2 CPUs, 8.2 µs per lookup through one socket (they queue for it) and
// 4.0 µs through the default pool of 2: the pool doubles the throughput.
func BenchmarkLookupReply(b *testing.B) {
	for _, n := range []int{1, 0} {
		name := "sockets=default"
		if n > 0 {
			name = "sockets=" + strconv.Itoa(n)
		}
		b.Run(name, func(b *testing.B) {
			w, c := newWorld(b, n)
			// The flow must outlive every run: an unanswered UDP entry
			// expires after 30 s by default.
			if err := w.NS.Sysctl("net/netfilter/nf_conntrack_udp_timeout", "3600"); err != nil {
				b.Fatal(err)
			}
			pc, err := w.NS.ListenPacket("udp", proxy4.String())
			if err != nil {
				b.Fatal(err)
			}
			defer pc.Close()
			cl, err := w.NS.DialAs(uidLabelled, "udp", resolver4.String(), time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			if _, err := cl.Write([]byte("q")); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 16)
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				b.Fatal(err)
			}
			dst := addrPort(b, from)
			lookup := func() error {
				f, err := c.LookupReply(unix.IPPROTO_UDP, proxy4, dst)
				if err != nil {
					return err
				}
				if uid, _ := f.OpenerUID(); uid != uidLabelled {
					return fmt.Errorf("opener %d, want %d", uid, uidLabelled)
				}
				return nil
			}
			b.Run("sequential", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := lookup(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := lookup(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// Many goroutines share one Conn; each gets its own flow back, never
// another's (the sockets' buffers are reused).
func TestLookupReplyConcurrent(t *testing.T) {
	w, c := newWorld(t, 2)
	pc, err := w.NS.ListenPacket("udp", proxy4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const clients = 8
	var froms [clients]netip.AddrPort
	for i := range froms {
		_, froms[i] = udpQuery(t, w, pc, uidLabelled, resolver4)
	}
	errs := make(chan error, clients)
	for _, from := range froms {
		go func() {
			for range 200 {
				f, err := c.LookupReply(unix.IPPROTO_UDP, proxy4, from)
				if err == nil && (f.Orig.Src != from || f.Reply.Dst != from) {
					err = fmt.Errorf("lookup of %s answered with %+v", from, f)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// answer picks the answer to the current request out of what the socket
// holds: an answer to an earlier request that gave up waiting is skipped.
func TestAnswer(t *testing.T) {
	msg := func(typ uint16, seq uint32, payload []byte) []byte {
		b := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+len(payload)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = binary.NativeEndian.AppendUint16(b, 0)
		b = binary.NativeEndian.AppendUint32(b, seq)
		b = binary.NativeEndian.AppendUint32(b, 0)
		return append(b, payload...)
	}
	errMsg := func(seq uint32, errno unix.Errno) []byte {
		return msg(unix.NLMSG_ERROR, seq, binary.NativeEndian.AppendUint32(make([]byte, 0, 20), uint32(-int32(errno))))
	}
	orig := Tuple{17, netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.53:53")}
	entry := msg(nfnlSubsysCTNetlink<<8|ctMsgNew, 5, append([]byte{2, 0, 0, 0}, tupleAttr(ctaTupleOrig, orig)...))
	s := &sock{seq: 5}
	if _, done, _ := s.answer(errMsg(4, unix.ENOENT)); done {
		t.Error("stale answer taken for the current one")
	}
	if _, done, err := s.answer(errMsg(5, unix.ENOENT)); !done || !errors.Is(err, ErrNotFound) {
		t.Errorf("ENOENT: done %v, %v", done, err)
	}
	if _, done, err := s.answer(errMsg(5, unix.EPERM)); !done || !errors.Is(err, unix.EPERM) {
		t.Errorf("EPERM: done %v, %v", done, err)
	}
	if f, done, err := s.answer(entry); !done || err != nil || f.Orig != orig {
		t.Errorf("entry: done %v, %+v, %v", done, f, err)
	}
	if _, done, err := s.answer(entry[:len(entry)-1]); !done || err == nil {
		t.Errorf("truncated: done %v, %v", done, err)
	}
}

// A batch's answers each go to their own request: flows of two uids
// interleaved, one that does not exist and one tuple that cannot be
// encoded, in one write; every answer is the one LookupReply gives for
// that tuple alone (a mix-up would hand one client's uid to another).
func TestLookupReplyZoneBatch(t *testing.T) {
	w, c := newWorld(t, 1)
	pc, err := w.NS.ListenPacket("udp", proxy4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var dsts, clients []netip.AddrPort
	var want []uint32
	for i := range 12 {
		uid, mark := uidLabelled, uint32(uidLabelled)
		if i%3 == 1 {
			uid, mark = uidUnlabelled, 0
		}
		client, from := udpQuery(t, w, pc, uid, resolver4)
		dsts, clients, want = append(dsts, from), append(clients, client), append(want, mark)
	}
	missing, mixed := netip.MustParseAddrPort("203.0.113.201:1"), netip.MustParseAddrPort("[2001:db8:1::1]:1")
	dsts = append(dsts[:5:5], append([]netip.AddrPort{missing, mixed}, dsts[5:]...)...)
	flows, errs := make([]Flow, len(dsts)), make([]error, len(dsts))
	for round := range 3 { // the socket's sequence numbers move on between batches
		c.LookupReplyZoneBatch(0, unix.IPPROTO_UDP, proxy4, dsts, flows, errs)
		j := 0
		for i, dst := range dsts {
			switch dst {
			case missing:
				if !errors.Is(errs[i], ErrNotFound) {
					t.Errorf("round %d: %s: %+v, %v; want ErrNotFound", round, dst, flows[i], errs[i])
				}
				continue
			case mixed:
				if errs[i] == nil || errors.Is(errs[i], ErrNotFound) {
					t.Errorf("round %d: mixed families: %v, want a tuple error", round, errs[i])
				}
				continue
			}
			checkFlow(t, flows[i], errs[i], unix.IPPROTO_UDP, clients[j], resolver4, proxy4, want[j])
			single, err := c.LookupReply(unix.IPPROTO_UDP, proxy4, dst)
			if err != nil || single != flows[i] {
				t.Errorf("round %d: %s: batch %+v, alone %+v (%v)", round, dst, flows[i], single, err)
			}
			j++
		}
	}
}
