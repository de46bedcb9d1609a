package conntrack

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// The request the kernel answered in the system tests, byte for byte (on a
// little-endian machine): UDP 127.0.0.1:5399 -> 203.0.113.201:36976.
func TestAppendGetRequestIPv4(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are little-endian")
	}
	got, err := appendGetRequest(nil, 7, Tuple{Proto: 17,
		Src: netip.MustParseAddrPort("127.0.0.1:5399"), Dst: netip.MustParseAddrPort("203.0.113.201:36976")})
	if err != nil {
		t.Fatal(err)
	}
	want := "48000000 0101 0100 07000000 00000000" + // nlmsghdr: len 72, CT_GET, REQUEST, seq 7
		"02000000" + // nfgenmsg: AF_INET
		"34000280 14000180 08000100 7f000001 08000200 cb0071c9" +
		"1c000280 05000100 11000000 06000200 15170000 06000300 90700000"
	if w, _ := hex.DecodeString(strings.ReplaceAll(want, " ", "")); !bytes.Equal(got, w) {
		t.Errorf("request\n got %x\nwant %x", got, w)
	}
}

// An IPv6 request decodes back to the tuple it was built from; mapped
// IPv4 addresses become IPv4; addresses of two families are refused.
func TestAppendGetRequestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in, want Tuple
	}{
		{Tuple{6, netip.MustParseAddrPort("[::1]:5399"), netip.MustParseAddrPort("[2001:db8:1::1]:40000")},
			Tuple{6, netip.MustParseAddrPort("[::1]:5399"), netip.MustParseAddrPort("[2001:db8:1::1]:40000")}},
		{Tuple{17, netip.MustParseAddrPort("[::ffff:127.0.0.1]:5399"), netip.MustParseAddrPort("192.0.2.1:1")},
			Tuple{17, netip.MustParseAddrPort("127.0.0.1:5399"), netip.MustParseAddrPort("192.0.2.1:1")}},
	} {
		b, err := appendGetRequest([]byte("prefix"), 1, tc.in)
		if err != nil {
			t.Fatal(err)
		}
		b = b[len("prefix"):]
		if l := binary.NativeEndian.Uint32(b); int(l) != len(b) {
			t.Errorf("nlmsg_len %d, message %d bytes", l, len(b))
		}
		wantFam := byte(afInet)
		if tc.want.Src.Addr().Is6() {
			wantFam = afInet6
		}
		if b[16] != wantFam {
			t.Errorf("family %d, want %d", b[16], wantFam)
		}
		a := attrs{b: b[20:]}
		if !a.next() || a.typ != ctaTupleReply || a.next() || a.err {
			t.Fatalf("%v: want exactly one CTA_TUPLE_REPLY", tc.in)
		}
		a = attrs{b: b[20:]}
		a.next()
		if got := parseTuple(a.val); got != tc.want {
			t.Errorf("round trip of %v: %v, want %v", tc.in, got, tc.want)
		}
	}
	if _, err := appendGetRequest(nil, 1, Tuple{17, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:1")}); err == nil {
		t.Error("mixed families accepted")
	}
	if _, err := appendGetRequest(nil, 1, Tuple{Proto: 17}); err == nil {
		t.Error("zero addresses accepted")
	}
}

// nlattr builds one attribute, padded.
func nlattr(typ uint16, val ...[]byte) []byte {
	v := bytes.Join(val, nil)
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func tupleAttr(typ uint16, t Tuple) []byte {
	s, d := ctaIPv4Src, ctaIPv4Dst
	if t.Src.Addr().Is6() {
		s, d = ctaIPv6Src, ctaIPv6Dst
	}
	return nlattr(typ|nlaNested,
		nlattr(ctaTupleIP|nlaNested, nlattr(uint16(s), t.Src.Addr().AsSlice()), nlattr(uint16(d), t.Dst.Addr().AsSlice())),
		nlattr(ctaTupleProto|nlaNested, nlattr(ctaProtoNum, []byte{t.Proto}),
			nlattr(ctaProtoSrcPort, be16(t.Src.Port())), nlattr(ctaProtoDstPort, be16(t.Dst.Port()))))
}

func TestParseFlow(t *testing.T) {
	orig := Tuple{17, netip.MustParseAddrPort("203.0.113.201:40000"), netip.MustParseAddrPort("192.0.2.53:53")}
	reply := Tuple{17, netip.MustParseAddrPort("127.0.0.1:5399"), netip.MustParseAddrPort("203.0.113.201:40000")}
	msg := bytes.Join([][]byte{{2, 0, 0, 0},
		tupleAttr(ctaTupleOrig, orig), tupleAttr(ctaTupleReply, reply),
		nlattr(ctaStatus, binary.BigEndian.AppendUint32(nil, StatusConfirmed|StatusDstNAT|StatusSeenReply)),
		nlattr(99, []byte("unknown attributes are skipped")),
		nlattr(ctaMark, binary.BigEndian.AppendUint32(nil, 4101)),
	}, nil)
	f, err := parseFlow(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := Flow{Orig: orig, Reply: reply, Status: StatusConfirmed | StatusDstNAT | StatusSeenReply, Mark: 4101}
	if f != want {
		t.Errorf("got %+v\nwant %+v", f, want)
	}
	if uid, ok := f.OpenerUID(); uid != 4101 || !ok {
		t.Errorf("OpenerUID() = %d, %v", uid, ok)
	}
	if !f.DstNAT() {
		t.Error("DstNAT() = false")
	}

	// No CTA_MARK (a zero mark may be left out).
	f, err = parseFlow(bytes.Join([][]byte{{2, 0, 0, 0}, tupleAttr(ctaTupleOrig, orig)}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if uid, ok := f.OpenerUID(); ok || uid != 0 {
		t.Errorf("unmarked: OpenerUID() = %d, %v", uid, ok)
	}
	if f.DstNAT() {
		t.Error("DstNAT() without status")
	}

	// A helper's flow inherits its master's mark: not its opener.
	if uid, ok := (Flow{Status: StatusExpected | StatusConfirmed, Mark: 4101}).OpenerUID(); ok || uid != 0 {
		t.Errorf("expected flow: OpenerUID() = %d, %v", uid, ok)
	}

	for name, bad := range map[string][]byte{
		"empty":           nil,
		"no orig tuple":   bytes.Join([][]byte{{2, 0, 0, 0}, tupleAttr(ctaTupleReply, reply)}, nil),
		"truncated":       msg[:len(msg)-3],
		"short mark":      bytes.Join([][]byte{{2, 0, 0, 0}, tupleAttr(ctaTupleOrig, orig), nlattr(ctaMark, []byte{0, 0, 1})}, nil),
		"attr len < 4":    append([]byte{2, 0, 0, 0}, 2, 0, 1, 0),
		"status of 2 B":   bytes.Join([][]byte{{2, 0, 0, 0}, tupleAttr(ctaTupleOrig, orig), nlattr(ctaStatus, []byte{0, 1})}, nil),
		"orig without ip": bytes.Join([][]byte{{2, 0, 0, 0}, nlattr(ctaTupleOrig|nlaNested, nlattr(ctaTupleProto|nlaNested, nlattr(ctaProtoNum, []byte{17})))}, nil),
	} {
		if f, err := parseFlow(bad); err == nil {
			t.Errorf("%s: parsed as %+v", name, f)
		}
	}
}

func FuzzParseFlow(f *testing.F) {
	orig := Tuple{6, netip.MustParseAddrPort("[2001:db8:1::1]:40000"), netip.MustParseAddrPort("[2001:db8::53]:53")}
	f.Add(bytes.Join([][]byte{{10, 0, 0, 0}, tupleAttr(ctaTupleOrig, orig), nlattr(ctaMark, make([]byte, 4))}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseFlow(b) //nolint:errcheck // must not panic
	})
}
