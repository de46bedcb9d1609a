//go:build linux

package check

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/internal/testworld"
	"github.com/egressd/egressd/ruleset"
)

// The host's nft on the live table, in a test namespace: no note for uid
// allowlists; with a unit allowlist the whole table prints (the unit
// chains too), and Debian 12's nft, which shows the unit key as
// "[invalid type]", gets the note that says so (README, "Reading the
// ruleset with nft").
func TestNFTNoteLive(t *testing.T) {
	systest.Require(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft on PATH")
	}
	w := testworld.NewT(t)
	k := &ruleset.Netlink{NetNSFd: w.NS.Fd()}
	t.Cleanup(func() { k.Close() })
	list := func() NFTListing {
		t.Helper()
		var l NFTListing
		if err := w.NS.Do(func() error {
			var err error
			l, err = ListWithNFT(context.Background())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return l
	}
	if n := NFTNote(list()); n != nil {
		t.Fatalf("no table: %+v", n)
	}
	user := ruleset.Allowlist{Name: "a", Subject: ruleset.UserSubject(4001), DNS: true, Elements: []ruleset.Element{
		ruleset.ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.0/24"), 8000, 8100)}}
	d := ruleset.Desired{Allowlists: []ruleset.Allowlist{user}, DenyLog: config.Defaults().DenyLog,
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}}
	if err := k.ApplyFull(ruleset.Render(d)); err != nil {
		t.Fatal(err)
	}
	l := list()
	if n := NFTNote(l); n != nil {
		t.Fatalf("uid allowlist: %+v\n%s", n, l.Output)
	}
	if !strings.Contains(string(l.Output), "ct mark . meta skuid @owners") {
		t.Fatalf("ListWithNFT did not list the table:\n%s", l.Output)
	}
	d.Allowlists = append(d.Allowlists, ruleset.Allowlist{Name: "web", Subject: ruleset.UnitSubject("web.service", ruleset.UnitKeys([]string{"web"})["web"])})
	d.Cgroups = []ruleset.Cgroup{{ID: 7, Allowlist: "web"}}
	if err := k.ApplyFull(ruleset.Render(d)); err != nil {
		t.Fatal(err)
	}
	l = list()
	if l.Err != nil || !strings.Contains(string(l.Output), "vmap @unitchains") || !strings.Contains(string(l.Output), "@uallow4r return") {
		t.Fatalf("unit allowlist: nft did not print the unit rules (%v):\n%s", l.Err, l.Output)
	}
	n := NFTNote(l)
	switch {
	case strings.Contains(string(l.Output), "[invalid type]") && (n == nil || !strings.Contains(n.Detail, "[invalid type]")):
		t.Fatalf("unit allowlist: nft printed [invalid type], note %+v", n)
	case !strings.Contains(string(l.Output), "[invalid type]") && n != nil:
		t.Fatalf("unit allowlist: nft printed it all, note %+v\n%s", n, l.Output)
	}
	if n != nil {
		t.Logf("%s: %s", n.Kind, n.Detail)
	}
}
