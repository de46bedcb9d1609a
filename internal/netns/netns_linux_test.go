//go:build linux

package netns

import (
	"net/netip"
	"os"
	"testing"
)

// An address is usable as soon as AddAddrs returns: the IPv6 local route,
// which the kernel adds from a work queue, is there (a connect right after
// found "network is unreachable" on a busy machine: TestKernelEnforces).
func TestAddAddrsReady(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for i := 0; i < 50; i++ {
		ns, err := New()
		if err != nil {
			t.Fatal(err)
		}
		addrs := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8::11")}
		if err := ns.AddAddrs(addrs...); err != nil {
			t.Fatal(err)
		}
		h := ns.handle()
		for _, a := range addrs {
			if rs, err := h.RouteGet(a.AsSlice()); err != nil || len(rs) == 0 {
				t.Errorf("round %d: %s has no route right after AddAddrs: %v", i, a, err)
			}
		}
		h.Close()
		ns.Close()
	}
}
