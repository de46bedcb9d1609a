//go:build linux

package ruleset

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/config"
)

func TestTablePresent(t *testing.T) {
	k, _ := newKernel(t)
	want := func(present bool) {
		t.Helper()
		got, err := k.TablePresent()
		if err != nil || got != present {
			t.Fatalf("TablePresent() = %v, %v; want %v", got, err, present)
		}
	}
	want(false)
	if err := k.ApplyFull(Render(Desired{})); err != nil {
		t.Fatal(err)
	}
	want(true)
	if err := k.Remove(); err != nil {
		t.Fatal(err)
	}
	want(false)
}

// Restore recreates a removed table exactly, and refuses, changing nothing,
// when the table exists.
func TestRestore(t *testing.T) {
	k, _ := newKernel(t)
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(1000), DNS: true, Elements: []Element{
			ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443),
			ElementFor(config.UDP, netip.MustParsePrefix("2001:db8::/64"), 53, 53)}}},
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
	})
	if err := k.Restore(p); err != nil {
		t.Fatal(err)
	}
	if fs, err := k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("after Restore: %v %v", fs, err)
	}
	if err := k.Restore(p); err == nil {
		t.Fatal("Restore over an existing table succeeded")
	}
	if fs, err := k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("after a refused Restore: %v %v", fs, err)
	}
}
