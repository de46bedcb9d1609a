//go:build linux

// Package nflog receives packets that an nftables "log group N" statement
// sends to user space (nfnetlink_log), over github.com/mdlayher/netlink.
// It is deliberately small: bind one group, copy the headers, decode the
// prefix, the socket's uid and the IPv4/IPv6 + TCP/UDP addresses.
package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// From linux/netfilter/nfnetlink_log.h (not in x/sys/unix).
const (
	subsysULOG       = 4 // NFNL_SUBSYS_ULOG
	msgPacket        = 0 // NFULNL_MSG_PACKET
	msgConfig        = 1 // NFULNL_MSG_CONFIG
	attrCfgCmd       = 1 // NFULA_CFG_CMD
	attrCfgMode      = 2 // NFULA_CFG_MODE
	attrCfgNLBufSize = 3 // NFULA_CFG_NLBUFSIZ
	attrCfgTimeout   = 4 // NFULA_CFG_TIMEOUT
	attrCfgQThresh   = 5 // NFULA_CFG_QTHRESH
	cmdBind          = 1 // NFULNL_CFG_CMD_BIND
	copyPacket       = 2 // NFULNL_COPY_PACKET

	attrMark      = 2  // NFULA_MARK
	attrTimestamp = 3  // NFULA_TIMESTAMP
	attrPayload   = 9  // NFULA_PAYLOAD
	attrPrefix    = 10 // NFULA_PREFIX
	attrUID       = 11 // NFULA_UID
	attrGID       = 14 // NFULA_GID

	// copyRange is enough for an IPv6 header and the transport ports.
	copyRange = 128
)

// Packet is one logged packet.
type Packet struct {
	Prefix   string
	UID, GID uint32
	HasUID   bool   // false when the packet had no local socket
	Mark     uint32 // the packet's mark when logged (a unit deny: the unit key, ruleset.UnitLogPrefix)
	Proto    uint8
	Src, Dst netip.Addr
	SPort    uint16
	DPort    uint16
	Time     time.Time
}

// Listener is bound to one NFLOG group in one network namespace.
type Listener struct {
	c     *netlink.Conn
	group uint16
}

// ErrGroupBusy means another process already listens to the group.
var ErrGroupBusy = errors.New("NFLOG group already bound by another process")

// Listen binds group. netnsFd 0 means the caller's namespace.
func Listen(group uint16, netnsFd int) (*Listener, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFd})
	if err != nil {
		return nil, fmt.Errorf("open nfnetlink: %w", err)
	}
	_ = c.SetReadBuffer(4 << 20) // a flood should overflow late; ENOBUFS is survivable anyway
	return ListenConn(c, group)
}

// ListenConn binds group on c, an nfnetlink connection the caller opened
// (tests: a github.com/mdlayher/netlink/nltest one), and configures it:
// copying each packet's headers, delivered at once. c is closed on failure.
func ListenConn(c *netlink.Conn, group uint16) (*Listener, error) {
	l := &Listener{c: c, group: group}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = copyPacket
	steps := [][]netlink.Attribute{
		{{Type: attrCfgCmd, Data: []byte{cmdBind}}},
		{{Type: attrCfgMode, Data: mode}},
		{{Type: attrCfgQThresh, Data: be32(1)}},  // deliver each packet at once
		{{Type: attrCfgTimeout, Data: be32(10)}}, // or within 100 ms
		{{Type: attrCfgNLBufSize, Data: be32(8192)}},
	}
	for i, attrs := range steps {
		if err := l.config(attrs); err != nil {
			c.Close()
			// The kernel answers EPERM (or EBUSY) when another socket owns the group.
			if i == 0 && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM)) {
				return nil, fmt.Errorf("bind NFLOG group %d: %w", group, ErrGroupBusy)
			}
			return nil, fmt.Errorf("configure NFLOG group %d: %w", group, err)
		}
	}
	return l, nil
}

func be32(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }

func (l *Listener) config(attrs []netlink.Attribute) error {
	body, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, 0, 0, 0} // nfgenmsg: family, version, res_id (big endian)
	binary.BigEndian.PutUint16(hdr[2:], l.group)
	_, err = l.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, body...),
	})
	return err
}

// Read blocks until packets arrive. An error wrapping unix.ENOBUFS means
// the kernel dropped messages because the reader fell behind; the listener
// stays usable.
func (l *Listener) Read() ([]Packet, error) {
	msgs, err := l.c.Receive()
	if err != nil {
		return nil, err
	}
	var out []Packet
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgPacket) || len(m.Data) < 4 {
			continue
		}
		if p, err := decode(m.Data[4:]); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Close closes the socket, which interrupts a Read blocked in another
// goroutine; the kernel unbinds the group as the socket is released
// (NETLINK_URELEASE), so the group is free again when Close returns. An
// explicit unbind would wait for that Read (the connection's lock) forever.
func (l *Listener) Close() error {
	return l.c.Close()
}

func decode(b []byte) (Packet, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Packet{}, err
	}
	ad.ByteOrder = binary.BigEndian
	var p Packet
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			p.Prefix = ad.String()
		case attrUID:
			p.UID, p.HasUID = ad.Uint32(), true
		case attrGID:
			p.GID = ad.Uint32()
		case attrMark:
			p.Mark = ad.Uint32()
		case attrPayload:
			payload = ad.Bytes()
		case attrTimestamp:
			if ts := ad.Bytes(); len(ts) == 16 {
				p.Time = time.Unix(int64(binary.BigEndian.Uint64(ts)), int64(binary.BigEndian.Uint64(ts[8:]))*1000)
			}
		}
	}
	if err := ad.Err(); err != nil {
		return Packet{}, err
	}
	if p.Time.IsZero() {
		p.Time = time.Now()
	}
	return p, parsePayload(payload, &p)
}

// parsePayload reads addresses and ports from an IPv4 or IPv6 packet.
func parsePayload(b []byte, p *Packet) error {
	if len(b) < 1 {
		return errors.New("empty payload")
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return errors.New("short IPv4 header")
		}
		ihl := int(b[0]&0x0f) * 4
		p.Proto = b[9]
		p.Src, _ = netip.AddrFromSlice(b[12:16])
		p.Dst, _ = netip.AddrFromSlice(b[16:20])
		if len(b) >= ihl {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return errors.New("short IPv6 header")
		}
		p.Proto = b[6]
		p.Src, _ = netip.AddrFromSlice(b[8:24])
		p.Dst, _ = netip.AddrFromSlice(b[24:40])
		l4 = b[40:]
		// Skip the common extension headers (hop-by-hop, routing, destination options).
		for (p.Proto == 0 || p.Proto == 43 || p.Proto == 60) && len(l4) >= 8 {
			n := (int(l4[1]) + 1) * 8
			p.Proto = l4[0]
			if len(l4) < n {
				l4 = nil
				break
			}
			l4 = l4[n:]
		}
	default:
		return fmt.Errorf("not an IP packet (version %d)", b[0]>>4)
	}
	if (p.Proto == unix.IPPROTO_TCP || p.Proto == unix.IPPROTO_UDP || p.Proto == unix.IPPROTO_SCTP || p.Proto == unix.IPPROTO_UDPLITE) && len(l4) >= 4 {
		p.SPort = binary.BigEndian.Uint16(l4[0:2])
		p.DPort = binary.BigEndian.Uint16(l4[2:4])
	}
	return nil
}
