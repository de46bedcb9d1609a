//go:build linux

package ruleset

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// An element's key, as the encoder writes it into each kind of kernel set,
// reads back (decode, what ReadSets and Verify use) as the same element
// and uid; a range over two uids, or a short key, is an error.
func TestElementKeyRoundTrip(t *testing.T) {
	es := []Element{
		ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443),
		ElementFor(config.UDP, netip.MustParsePrefix("198.51.100.0/24"), 53, 60),
		ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::/64"), 1, 65535),
	}
	for _, ks := range append(everyKernelSet(), proxyKernelSets()...) {
		for _, e := range es {
			if e.Is6() != ks.V6 || isExact(e) == ks.Range {
				continue
			}
			uid := uint32(4001)
			if ks.DNS {
				uid = 0
			}
			until := time.Unix(100, 0)
			got := toSetElementsAt(ks, []keyed{{uid: uid, e: e, until: until}}, time.Unix(40, 0))
			if len(got) != 1 || got[0].Timeout != time.Minute {
				t.Fatalf("%s: %+v", ks.name(), got)
			}
			end := got[0].KeyEnd
			if !ks.Range {
				end = got[0].Key
			}
			u, back, err := decode(ks, got[0].Key, end)
			if err != nil || u != uid || back != e {
				t.Errorf("%s: %s (uid %d) read back as %s (uid %d), %v", ks.name(), e, uid, back, u, err)
			}
		}
	}
	ks := kernelSet{Range: true}
	a, b := encode(ks, 1, es[1], false), encode(ks, 2, es[1], true)
	if _, _, err := decode(ks, a, b); err == nil {
		t.Error("a range over two uids decoded")
	}
	if _, _, err := decode(ks, a[:2], b[:2]); err == nil {
		t.Error("a short key decoded")
	}
	if _, _, err := decode(kernelSet{DNS: true}, a[4:8], b[4:8]); err == nil {
		t.Error("a key of the wrong length decoded")
	}
	// Deleting elements with a lifetime first re-adds them for a
	// millisecond (guard); others are not; deletions carry no timeout.
	ks2 := []keyed{{uid: 1, e: es[0], until: hadLifetime}, {uid: 1, e: es[1]}}
	if g := guard(ks2); len(g) != 1 || g[0].e != es[0] {
		t.Errorf("guard: %+v", g)
	}
	for _, k := range untimed(ks2) {
		if !k.until.IsZero() {
			t.Errorf("untimed: %+v", k)
		}
	}
	if kernelTimeout(time.Time{}, time.Now()) != 0 || kernelTimeout(time.Unix(1, 0), time.Unix(2, 0)) != time.Millisecond {
		t.Error("kernelTimeout: none, or at least a millisecond")
	}
}

// A delta's elements land in the kernel sets they belong to: a renewal is
// an addition where adding renews a timeout, a deletion (guarded: it had a
// lifetime) and an addition elsewhere; a set of an allowlist the plan has
// no uid for fails the delta.
func TestDeltaElements(t *testing.T) {
	p := everyKindPlan(everyDenyLog[0], false)
	name := SetID{Allowlist: "c"}.Name()
	old := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.80/32"), 443, 443)
	renewed := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.77/32"), 443, 443)
	gone := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.81/32"), 443, 443)
	until := time.Unix(2000, 0)
	d := Delta{name: {Add: []Element{old}, AddUntil: []time.Time{until}, Del: []Element{gone}, DelEnding: []bool{true},
		Renew: []Element{renewed}, RenewUntil: []time.Time{until}}}
	exact := kernelSet{}
	add, del, err := deltaElements(p, d, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(add[exact]) != 2 || len(del[exact]) != 1 || del[exact][0].e != gone || del[exact][0].until != hadLifetime || add[exact][0].uid != 4003 {
		t.Errorf("adding renews: add %+v del %+v", add, del)
	}
	add, del, err = deltaElements(p, d, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(add[exact]) != 2 || len(del[exact]) != 2 || del[exact][1].e != renewed || del[exact][1].until != hadLifetime {
		t.Errorf("adding does not renew: add %+v del %+v", add, del)
	}
	if _, _, err := deltaElements(p, Delta{SetID{Allowlist: "nobody"}.Name(): {Add: []Element{old}}}, true); err == nil {
		t.Error("a set of an allowlist without a uid was placed")
	}
}

// A verdict map element's verdict, as the netlink library hands it back
// undecoded, reads as its chain and whether it jumps there; a unit chain's
// name gives its unit key.
func TestElementJump(t *testing.T) {
	verdict := func(code int32, chain string) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		ae.Uint32(unix.NFTA_VERDICT_CODE, uint32(code))
		if chain != "" {
			ae.String(unix.NFTA_VERDICT_CHAIN, chain)
		}
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if c, j := elementJump(verdict(int32(expr.VerdictJump), unitChain(0xabcd))); c != "unit_0000abcd" || !j {
		t.Errorf("jump: %q %v", c, j)
	}
	if _, j := elementJump(verdict(int32(expr.VerdictAccept), "")); j {
		t.Error("accept read as a jump")
	}
	if _, j := elementJump([]byte{2, 0, 1, 0}); j {
		t.Error("a short attribute read as a jump")
	}
	if k, ok := unitKeyOfChain(unitChain(0xabcd)); !ok || k != 0xabcd {
		t.Errorf("unitKeyOfChain: %x %v", k, ok)
	}
	for _, name := range []string{"restricted", "unit_xyz", "unit_0000abcd0"} {
		if _, ok := unitKeyOfChain(name); ok {
			t.Errorf("unitKeyOfChain(%q): a unit chain", name)
		}
	}
}
