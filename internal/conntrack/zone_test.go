package conntrack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/egressd/egressd/internal/privilege"
)

// A lookup in a zone (the DNS proxy's flows) carries CTA_ZONE, big endian,
// before the reply tuple; in zone 0 there is none, as the kernel's default.
func TestAppendGetRequestZone(t *testing.T) {
	tu := Tuple{Proto: 17, Src: netip.MustParseAddrPort("127.0.0.1:5399"), Dst: netip.MustParseAddrPort("192.0.2.7:40000")}
	plain, err := appendGetRequest(nil, 3, tu)
	if err != nil {
		t.Fatal(err)
	}
	zoned, err := appendGetRequestZone(nil, 3, tu, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	if len(zoned) != len(plain)+8 || int(binary.NativeEndian.Uint32(zoned)) != len(zoned) {
		t.Fatalf("zoned request %d bytes (nlmsg_len %d), plain %d: want 8 more", len(zoned), binary.NativeEndian.Uint32(zoned), len(plain))
	}
	a := attrs{b: zoned[20:]}
	if !a.next() || a.typ != ctaZone || len(a.val) != 2 || binary.BigEndian.Uint16(a.val) != 0x1234 {
		t.Fatalf("first attribute %d %x, want CTA_ZONE 0x1234", a.typ, a.val)
	}
	if !a.next() || a.typ != ctaTupleReply || a.next() || a.err {
		t.Fatal("want CTA_TUPLE_REPLY after the zone, and nothing else")
	}
	if same, _ := appendGetRequestZone(nil, 3, tu, 0); string(same) != string(plain) {
		t.Error("zone 0 differs from a request without a zone")
	}
	if _, err := appendGetRequestZone(nil, 3, Tuple{Proto: 17, Src: tu.Src, Dst: netip.MustParseAddrPort("[2001:db8::1]:1")}, 5); err == nil {
		t.Error("a tuple of two families was encoded")
	}
}

// Without CAP_NET_ADMIN the kernel refuses every conntrack read: the lookup
// is that error (the proxy then answers nobody it cannot attribute),
// never a flow and never "not found". As root the kernel tier covers the
// answers, inside namespaces (conn_linux_test.go): this test does not ask
// the host's table.
func TestLookupReplyUnprivileged(t *testing.T) {
	if os.Geteuid() == 0 || privilege.NetAdmin() {
		t.Skip("has CAP_NET_ADMIN: the kernel would answer (TestLookupReply* cover that in a namespace)")
	}
	c, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, zone := range []uint16{0, 7} {
		f, err := c.LookupReplyZone(zone, 17, netip.MustParseAddrPort("127.0.0.1:5399"), netip.MustParseAddrPort("192.0.2.7:40000"))
		if err == nil || errors.Is(err, ErrNotFound) || !errors.Is(err, syscall.EPERM) {
			t.Errorf("zone %d: %+v, %v; want the kernel's EPERM", zone, f, err)
		}
	}
	if _, err := c.LookupReply(17, netip.MustParseAddrPort("127.0.0.1:5399"), netip.MustParseAddrPort("[2001:db8::1]:1")); err == nil {
		t.Error("a tuple of two families was looked up")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
