//go:build linux

package nflog

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// kernel plays nfnetlink_log: it records each config request and answers
// it with fail(step) (0: an ack); a Receive with nothing sent gets packets.
type kernel struct {
	reqs    []netlink.Message
	fail    func(step int) int
	packets []netlink.Message
}

func (k *kernel) conn() *netlink.Conn {
	return nltest.Dial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) == 0 {
			out := k.packets
			k.packets = nil
			return out, nil
		}
		step := len(k.reqs)
		k.reqs = append(k.reqs, req...)
		errno := 0
		if k.fail != nil {
			errno = k.fail(step)
		}
		return nltest.Error(errno, req)
	})
}

// configAttrs decodes a config request: the group (nfgenmsg res_id) and
// its one attribute.
func configAttrs(t *testing.T, m netlink.Message) (uint16, netlink.Attribute) {
	t.Helper()
	if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgConfig) || m.Header.Flags != netlink.Request|netlink.Acknowledge {
		t.Fatalf("header %+v, want an acknowledged NFULNL_MSG_CONFIG request", m.Header)
	}
	attrs, err := netlink.UnmarshalAttributes(m.Data[4:])
	if err != nil || len(attrs) != 1 {
		t.Fatalf("attributes %v, %v", attrs, err)
	}
	return binary.BigEndian.Uint16(m.Data[2:4]), attrs[0]
}

// The group is bound, then set to copy packets (128 bytes: headers and
// ports), deliver each at once, and keep the kernel's buffer small; each
// step acknowledged, in this order.
func TestBindConfiguresGroup(t *testing.T) {
	k := &kernel{}
	l, err := ListenConn(k.conn(), 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  uint16
		data []byte
	}{
		{attrCfgCmd, []byte{cmdBind}},
		{attrCfgMode, []byte{0, 0, 0, copyRange, copyPacket, 0}},
		{attrCfgQThresh, be32(1)},
		{attrCfgTimeout, be32(10)},
		{attrCfgNLBufSize, be32(8192)},
	}
	if len(k.reqs) != len(want) {
		t.Fatalf("%d requests, want %d", len(k.reqs), len(want))
	}
	for i, w := range want {
		group, a := configAttrs(t, k.reqs[i])
		if group != 3 || a.Type != w.typ || string(a.Data) != string(w.data) {
			t.Errorf("request %d: group %d attribute %d %x; want group 3, %d %x", i, group, a.Type, a.Data, w.typ, w.data)
		}
	}
	n := len(k.reqs)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The kernel frees the group as the socket is released; an unbind
	// request would wait behind a blocked Read (TestCloseInterruptsReadAndFreesGroup).
	if len(k.reqs) != n {
		t.Errorf("Close sent %d requests, want none", len(k.reqs)-n)
	}
}

// Another socket owning the group (EPERM or EBUSY on bind) is
// ErrGroupBusy; a later step's failure is a configuration error; neither
// returns a listener.
func TestBindErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		fail   func(int) int
		busy   bool
		substr string
	}{
		{"group owned (EPERM)", failAt(0, unix.EPERM), true, "bind NFLOG group 3"},
		{"group owned (EBUSY)", failAt(0, unix.EBUSY), true, "bind NFLOG group 3"},
		{"mode refused", failAt(1, unix.EINVAL), false, "configure NFLOG group 3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := &kernel{fail: c.fail}
			l, err := ListenConn(k.conn(), 3)
			if l != nil || err == nil || errors.Is(err, ErrGroupBusy) != c.busy || !strings.Contains(err.Error(), c.substr) {
				t.Errorf("bind = %v, %v; want busy %v, %q", l, err, c.busy, c.substr)
			}
		})
	}
}

// failAt answers errno to the request of one step, an ack to the others.
func failAt(step int, errno unix.Errno) func(int) int {
	return func(s int) int {
		if s == step {
			return int(errno)
		}
		return 0
	}
}

func packetMsg(t *testing.T, attrs []netlink.Attribute) netlink.Message {
	t.Helper()
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgPacket)},
		Data:   append([]byte{unix.AF_INET, 0, 0, 3}, nltest.MustMarshalAttributes(attrs)...),
	}
}

// Read decodes each logged packet (prefix, uid, mark, addresses, ports,
// the kernel's timestamp) and skips what is not one.
func TestReadDecodesPackets(t *testing.T) {
	k := &kernel{}
	l, err := ListenConn(k.conn(), 3)
	if err != nil {
		t.Fatal(err)
	}
	v4 := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 20, 0xc3, 0x50, 0x01, 0xbb}
	ts := make([]byte, 16)
	binary.BigEndian.PutUint64(ts, 1700000000)
	binary.BigEndian.PutUint64(ts[8:], 250000) // microseconds
	k.packets = []netlink.Message{
		packetMsg(t, []netlink.Attribute{
			{Type: attrPrefix, Data: []byte("egressd deny web\x00")},
			{Type: attrUID, Data: be32(1001)},
			{Type: attrGID, Data: be32(1002)},
			{Type: attrMark, Data: be32(7)},
			{Type: attrTimestamp, Data: ts},
			{Type: attrPayload, Data: v4},
		}),
		{Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgConfig)}, Data: []byte{0, 0, 0, 0}}, // not a packet
		{Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgPacket)}, Data: []byte{0, 0}},       // too short
		packetMsg(t, []netlink.Attribute{{Type: attrPrefix, Data: []byte("x\x00")}}),                            // no payload: undecodable
	}
	ps, err := l.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 {
		t.Fatalf("%d packets, want 1: %+v", len(ps), ps)
	}
	p := ps[0]
	if p.Prefix != "egressd deny web" || !p.HasUID || p.UID != 1001 || p.GID != 1002 || p.Mark != 7 || p.Proto != 6 ||
		p.Src.String() != "192.0.2.1" || p.Dst.String() != "198.51.100.20" || p.SPort != 50000 || p.DPort != 443 ||
		p.Time.Unix() != 1700000000 || p.Time.Nanosecond() != 250000000 {
		t.Errorf("packet %+v", p)
	}
}
