package controller

import (
	"context"
	"fmt"
	"github.com/egressd/egressd/internal/event"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/ruleset"
)

func TestHostsFileAnswersAndReload(t *testing.T) {
	f := newFixture(t, map[string]string{
		"hosts":                "127.0.0.1 db.local\n192.0.2.7 api.example.test\n",
		"allow.d/billing.yaml": "user: billing\nallow: [db.local:5432, api.example.test:443]\n",
	})
	// The main file names the hosts file (the fixture wrote resolvers only).
	f.write(t, "egressd.yaml", fmt.Sprintf("resolvers: [%q]\nhosts_file: %s\n", f.dns.Addr.String(), filepath.Join(f.dir, "hosts")))
	f.c.doReload()
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	set := func() []string {
		var out []string
		for _, e := range f.k.Plan.Sets[ruleset.SetName4("billing")] {
			out = append(out, e.String())
		}
		return out
	}
	// Loopback from the hosts file is allowed (DNS was never asked: the
	// test server has no records, so a DNS answer would be NXDOMAIN).
	if got, want := set(), []string{"127.0.0.1:5432/tcp", "192.0.2.7:443/tcp"}; !sameElems(got, want) {
		t.Fatalf("set %v, want %v", got, want)
	}

	f.write(t, "hosts", "127.0.0.1 db.local\n192.0.2.8 api.example.test\n")
	m := len(f.events(event.ConfigLoaded))
	f.c.doReload()
	ev := f.events(event.ConfigLoaded)
	if len(ev) != m+1 || !reflect.DeepEqual(ev[m].ContextMap()["changed"], []any{"api.example.test"}) {
		t.Fatalf("config_loaded events after the hosts edit: %v", ev[m:])
	}
	if due := f.c.dns.cache.Due(); len(due) != 2 || due[0].Name != "api.example.test" {
		t.Fatalf("due after the hosts edit: %v", due)
	}
	f.c.dns.resolve(context.Background(), f.c.dns.cache.Due())
	if err := f.c.sync(); err != nil {
		t.Fatal(err)
	}
	// The old address lingers (ttl + linger) like a DNS answer; the new one is in.
	if got := set(); !contains(got, "192.0.2.8:443/tcp") {
		t.Fatalf("set after the edit %v lacks the new address", got)
	}
}

func TestBuildHostsKeepsInternalHostsAddresses(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [db.local:5432]\n"})
	loop := netip.MustParseAddr("127.0.0.1")
	addrs := func(string) []netip.Addr { return []netip.Addr{loop} }
	if d := policy.Build(policy.Inputs{Config: f.c.cfg, Users: f.c.users, Addrs: addrs}).Ruleset; len(d.Allowlists[0].Elements) != 0 {
		t.Errorf("a loopback answer without a source was kept: %v", d.Allowlists[0].Elements)
	}
	fromHosts := func(name string, a netip.Addr) bool { return name == "db.local" && a == loop }
	if d := policy.Build(policy.Inputs{Config: f.c.cfg, Users: f.c.users, Addrs: addrs, FromHosts: fromHosts}).Ruleset; len(d.Allowlists[0].Elements) != 1 {
		t.Errorf("the hosts file's loopback address was dropped: %v", d.Allowlists[0].Elements)
	}
}

func sameElems(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range b {
		if !contains(a, x) {
			return false
		}
	}
	return true
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
