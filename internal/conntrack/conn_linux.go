//go:build linux

package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Conn asks the kernel's conntrack table about single flows. It holds a
// fixed pool of NETLINK_NETFILTER sockets, all opened by Open in the network
// namespace of the calling thread (so a test opens it inside netns.NS.Do),
// and is safe for concurrent use: each lookup takes one socket for its
// request and answer. Reading conntrack needs CAP_NET_ADMIN in the
// namespace's user namespace (nfnetlink asks it of every message).
//
// The sockets are plain file descriptors, not github.com/mdlayher/netlink
// Conns: the kernel marks its answer to a single GET NLM_F_MULTI
// (ctnetlink_fill_info does so for every unicast) yet sends no NLMSG_DONE,
// and netlink.Conn.Execute waits for that DONE for ever.
type Conn struct {
	pool chan *sock
	all  []*sock
}

// sock is one netlink socket with its buffers; only the lookup holding it
// touches it.
type sock struct {
	fd  int
	seq uint32
	req []byte
	buf []byte
}

// Open opens a Conn with one socket per CPU the Go runtime may use (at
// least two): a lookup is two system calls on its socket, so more sockets
// than running threads buy nothing, and fewer serialise the lookups (on 2
// CPUs one shared socket halves the throughput: BenchmarkLookupReply).
func Open() (*Conn, error) { return open(max(2, runtime.GOMAXPROCS(0))) }

func open(n int) (*Conn, error) {
	c := &Conn{pool: make(chan *sock, n)}
	for range n {
		s, err := openSock()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("open ctnetlink socket: %w", err)
		}
		c.all = append(c.all, s)
		c.pool <- s
	}
	return c, nil
}

func openSock() (*sock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	// Error answers without a copy of the request.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &sock{fd: fd, req: make([]byte, 0, 128), buf: make([]byte, 16<<10)}, nil
}

// Close closes the sockets. No lookup may be in flight or start after
// Close.
func (c *Conn) Close() error {
	var errs []error
	for _, s := range c.all {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, os.NewSyscallError("close", err))
		}
	}
	c.all = nil
	return errors.Join(errs...)
}

// LookupReply returns the flow whose reply tuple is proto src -> dst, in
// conntrack zone 0. For a query that nat output redirected to a proxy on
// 127.0.0.1:P from clientAddr:clientPort, that is
// LookupReply(unix.IPPROTO_UDP, 127.0.0.1:P, clientAddr:clientPort): src is
// the proxy's own address, dst what recvfrom (or getpeername) reports.
// IPv4-mapped IPv6 addresses are taken as IPv4. ErrNotFound when the kernel
// has no such entry.
func (c *Conn) LookupReply(proto uint8, src, dst netip.AddrPort) (Flow, error) {
	return c.LookupReplyZone(0, proto, src, dst)
}

// LookupReplyZone is LookupReply in conntrack zone zone (the DNS proxy's
// flows are in ruleset.DNSZone).
func (c *Conn) LookupReplyZone(zone uint16, proto uint8, src, dst netip.AddrPort) (Flow, error) {
	s := <-c.pool
	f, err := s.get(Tuple{Proto: proto, Src: src, Dst: dst}, zone)
	c.pool <- s
	if err != nil && !errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("conntrack get %d %s -> %s (reply): %w", proto, src, dst, err)
	}
	return f, err
}

// LookupReplyZoneBatch is LookupReplyZone for several flows at once, whose
// reply tuples are proto src -> dsts[i]: one write carries every request
// (the kernel answers each inside it), then each answer is read; flows[i]
// and errs[i] are dsts[i]'s flow and error, as LookupReplyZone's. The
// proxy asks it for the queries of one batched read: one system call per
// batch instead of one per query (issue 24). flows and errs are as long
// as dsts.
func (c *Conn) LookupReplyZoneBatch(zone uint16, proto uint8, src netip.AddrPort, dsts []netip.AddrPort, flows []Flow, errs []error) {
	s := <-c.pool
	s.getBatch(zone, proto, src, dsts, flows, errs)
	c.pool <- s
	for i, err := range errs {
		if err != nil && !errors.Is(err, ErrNotFound) {
			errs[i] = fmt.Errorf("conntrack get %d %s -> %s (reply): %w", proto, src, dsts[i], err)
		}
	}
}

const (
	nlmsgHdrLen  = 16 // struct nlmsghdr
	pollTimeout  = 1000
	maxStaleMsgs = 64
)

// get sends one IPCTNL_MSG_CT_GET and reads its answer. The kernel handles
// a netlink request inside sendmsg, so the answer is queued when the send
// returns: it is read without blocking, and only if it is not there (it
// always is) does the read wait, at most pollTimeout ms.
func (s *sock) get(t Tuple, zone uint16) (Flow, error) {
	s.seq++
	req, err := appendGetRequestZone(s.req[:0], s.seq, t, zone)
	if err != nil {
		return Flow{}, err
	}
	s.req = req
	return s.exchange(req)
}

// getBatch sends one IPCTNL_MSG_CT_GET per dst in one write, request i
// under sequence number first+i, and reads their answers (getBatch's
// caller's doc: LookupReplyZoneBatch).
func (s *sock) getBatch(zone uint16, proto uint8, src netip.AddrPort, dsts []netip.AddrPort, flows []Flow, errs []error) {
	first := s.seq + 1
	s.seq += uint32(len(dsts))
	req := s.req[:0]
	pending := make([]bool, len(dsts))
	n := 0
	for i, dst := range dsts {
		flows[i], errs[i] = Flow{}, nil
		b, err := appendGetRequestZone(req, first+uint32(i), Tuple{Proto: proto, Src: src, Dst: dst}, zone)
		if err != nil {
			errs[i] = err
			continue
		}
		req, pending[i] = b, true
		n++
	}
	s.req = req
	if n == 0 {
		return
	}
	fail := func(err error) {
		for i := range pending {
			if pending[i] {
				errs[i], pending[i] = err, false
			}
		}
	}
	for {
		_, err := unix.Write(s.fd, req)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fail(os.NewSyscallError("send", err))
			return
		}
		break
	}
	for range maxStaleMsgs + len(dsts) {
		k, err := s.recv()
		if err != nil {
			fail(err)
			return
		}
		b := s.buf[:k]
		for len(b) >= nlmsgHdrLen {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < nlmsgHdrLen || l > len(b) {
				fail(errors.New("malformed netlink message"))
				return
			}
			seq := binary.NativeEndian.Uint32(b[8:12])
			if i := int(seq - first); seq-first < uint32(len(dsts)) && pending[i] {
				if f, ok, err := readAnswer(b[:l]); ok {
					flows[i], errs[i], pending[i] = f, err, false
					n--
				}
			}
			b = b[min(len(b), (l+3)&^3):]
		}
		if n == 0 {
			return
		}
		// Answers to an earlier request that gave up waiting: skipped.
	}
	fail(errors.New("no answer among the queued messages"))
}

// readAnswer reads one netlink message m that answers a GET: the flow, or
// the kernel's error; false when it is neither.
func readAnswer(m []byte) (Flow, bool, error) {
	switch binary.NativeEndian.Uint16(m[4:6]) {
	case unix.NLMSG_ERROR:
		if len(m) < nlmsgHdrLen+4 {
			return Flow{}, true, errors.New("short netlink error")
		}
		errno := -int32(binary.NativeEndian.Uint32(m[nlmsgHdrLen:]))
		if errno == 0 {
			return Flow{}, true, errors.New("acknowledged without an entry")
		}
		if syscall.Errno(errno) == unix.ENOENT {
			return Flow{}, true, ErrNotFound
		}
		return Flow{}, true, syscall.Errno(errno)
	case nfnlSubsysCTNetlink<<8 | ctMsgNew:
		f, err := parseFlow(m[nlmsgHdrLen:])
		return f, true, err
	}
	return Flow{}, false, nil
}

// exchange sends req and reads its answer.
func (s *sock) exchange(req []byte) (Flow, error) {
	for {
		// No address: a netlink socket sends to the kernel by default.
		_, err := unix.Write(s.fd, req)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Flow{}, os.NewSyscallError("send", err)
		}
		break
	}
	for range maxStaleMsgs {
		n, err := s.recv()
		if err != nil {
			return Flow{}, err
		}
		f, done, err := s.answer(s.buf[:n])
		if done {
			return f, err
		}
		// An answer to an earlier request that gave up waiting: skip it.
	}
	return Flow{}, errors.New("no answer among the queued messages")
}

func (s *sock) recv() (int, error) {
	waited := false
	for {
		n, err := unix.Read(s.fd, s.buf) // non-blocking socket
		switch {
		case err == nil:
			return n, nil
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && !waited:
			waited = true
			fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
			for {
				k, err := unix.Poll(fds, pollTimeout)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return 0, os.NewSyscallError("poll", err)
				}
				if k == 0 {
					return 0, errors.New("no answer from the kernel")
				}
				break
			}
		case err == unix.ENOBUFS:
			// Answers were dropped. The kernel keeps the socket congested
			// (and drops the next answers silently) until it is read:
			// empty it, so the next request starts clean (red team rtb,
			// TestRedteamRTBBatchAfterOverflow). This request fails closed.
			s.drain()
			return 0, os.NewSyscallError("recv", err)
		default:
			return 0, os.NewSyscallError("recv", err)
		}
	}
}

// drain reads and discards what the socket holds, without waiting.
func (s *sock) drain() {
	for range 1 << 16 {
		if _, err := unix.Read(s.fd, s.buf); err != nil && err != unix.EINTR && err != unix.ENOBUFS {
			return // EAGAIN: empty
		}
	}
}

// answer looks for the answer to the current request among the netlink
// messages in b: done when found, with the flow or the kernel's error.
func (s *sock) answer(b []byte) (f Flow, done bool, err error) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		seq := binary.NativeEndian.Uint32(b[8:12])
		if l < nlmsgHdrLen || l > len(b) {
			return Flow{}, true, errors.New("malformed netlink message")
		}
		if seq == s.seq {
			if f, ok, err := readAnswer(b[:l]); ok {
				return f, true, err
			}
		}
		b = b[min(len(b), (l+3)&^3):]
	}
	return Flow{}, false, nil
}
