package controller

import (
	"context"
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/state"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

type fixture struct {
	dir  string
	dns  *dnstest.Server
	k    *ruleset.Fake
	logs *observer.ObservedLogs
	c    *Controller
	m    *metrics.Metrics
}

func users(name string) (uint32, error) {
	switch name {
	case "billing":
		return 1001, nil
	case "billing-alias":
		return 1001, nil
	}
	return 0, errors.New("no such user")
}

// scrape returns the config metrics the controller exported.
func (f *fixture) scrape() string {
	rec := httptest.NewRecorder()
	f.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var out []string
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(l, "egressd_config_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func newFixture(t *testing.T, files map[string]string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), k: &ruleset.Fake{}, m: metrics.New()}
	var err error
	if f.dns, err = dnstest.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.dns.Close)
	f.write(t, "egressd.yaml", fmt.Sprintf("resolvers: [%q]\n", f.dns.Addr.String()))
	for name, body := range files {
		f.write(t, name, body)
	}
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	f.c, err = New(Options{ConfigPath: filepath.Join(f.dir, "egressd.yaml"), ConfigRequired: true, Kernel: f.k, Log: zap.New(core), Users: users, Trust: config.Trust{Above: f.dir}, Metrics: f.m})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) write(t *testing.T, name, body string) {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) events(name string) []observer.LoggedEntry {
	return f.logs.FilterField(zap.String("event", name)).All()
}

func TestOnceBuildsPlan(t *testing.T) {
	f := newFixture(t, map[string]string{
		"allow.d/billing.yaml": "user: billing\nallow: [api.example.test:443, 198.51.100.0/24:8000-8100, rebind.example.test:443]\n",
		"allow.d/ghost.yaml":   "user: ghost\nallow: [api.example.test:443]\n",
	})
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TTL: 60})
	f.dns.Set("rebind.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("169.254.169.254")}, TTL: 60})
	failed, err := f.c.Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || failed["rebind.example.test"] == nil {
		t.Fatalf("failed = %v, want only the rebinding name", failed)
	}
	p := f.k.Plan
	if f.k.Fulls != 1 || len(p.Allowlists) != 1 || p.Allowlists[0].Subject != ruleset.UserSubject(1001) || !p.Allowlists[0].DNS {
		t.Fatalf("plan allowlists = %+v (fulls %d)", p.Allowlists, f.k.Fulls)
	}
	if got := p.Sets[ruleset.SetName4("billing")]; len(got) != 2 {
		t.Fatalf("v4 set = %v, want the name's address and the CIDR", got)
	}
	if got := p.Sets[ruleset.SetName6("billing")]; len(got) != 1 {
		t.Fatalf("v6 set = %v", got)
	}
	// The name's address carries its lifetime (TTL 60s + linger 5m, the
	// default) as a kernel timeout; the literal CIDR none.
	for i, e := range p.Sets[ruleset.SetName4("billing")] {
		left := time.Until(p.UntilOf(ruleset.SetName4("billing"), i))
		switch lit := e.AddrFrom != e.AddrTo; {
		case lit && !p.UntilOf(ruleset.SetName4("billing"), i).IsZero():
			t.Errorf("literal %s ends", e)
		case !lit && (left < 5*time.Minute || left > 6*time.Minute):
			t.Errorf("%s: %v left, want about 6m (TTL 60s + linger 5m)", e, left)
		}
	}
	if len(f.events(event.UserMissing)) != 1 {
		t.Fatal("missing user not reported")
	}
	if len(f.events(event.RulesetApplied)) != 1 {
		t.Fatal("no ruleset_applied event")
	}
}

func TestReloadRejectsBadConfigAndKeepsState(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := f.c.Config()
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:99999]\n")
	f.c.doReload()
	if f.c.Config() != before {
		t.Fatal("a bad reload replaced the configuration")
	}
	ev := f.events(event.ConfigRejected)
	if len(ev) != 1 || ev[0].ContextMap()["line"] != int64(2) {
		t.Fatalf("config_rejected events = %v", ev)
	}
	// The fleet sees it: the flag drops, the hash in force stays.
	hash := `egressd_config_info{hash="` + state.Hash(before) + `"} 1`
	if got := f.scrape(); !strings.Contains(got, "egressd_config_last_reload_successful 0") || !strings.Contains(got, hash) {
		t.Errorf("after a rejected reload, metrics:\n%s", got)
	}
	if err := f.c.sync(); err != nil || f.k.Fulls != 1 || len(f.k.Deltas) != 0 {
		t.Fatalf("after a rejected reload the kernel changed: fulls %d deltas %d err %v", f.k.Fulls, len(f.k.Deltas), err)
	}

	// An unchanged file (an editor's touch) does not rebuild.
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
	f.c.doReload()
	if err := f.c.sync(); err != nil || f.k.Fulls != 1 {
		t.Fatalf("identical reload rebuilt: fulls %d", f.k.Fulls)
	}
	// A change of entries only is an element delta.
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.2:443]\n")
	f.c.doReload()
	if got := f.scrape(); !strings.Contains(got, "egressd_config_last_reload_successful 1") || strings.Contains(got, hash) ||
		!strings.Contains(got, `egressd_config_info{hash="`+state.Hash(f.c.Config())+`"} 1`) {
		t.Errorf("after a good reload, metrics:\n%s", got)
	}
	if err := f.c.sync(); err != nil || f.k.Fulls != 1 || len(f.k.Deltas) != 1 {
		t.Fatalf("changed entries: fulls %d deltas %d, err %v", f.k.Fulls, len(f.k.Deltas), err)
	}
	// A structural change (DNS access) rebuilds in full.
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.2:443]\ndns: none\n")
	f.c.doReload()
	if err := f.c.sync(); err != nil || f.k.Fulls != 2 {
		t.Fatalf("structural change: fulls %d, err %v", f.k.Fulls, err)
	}
}

func TestApplyFailureForcesFullRebuild(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [api.example.test:443]\n"})
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, TTL: 60})
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	// DNS churn is an element delta.
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.2")}, TTL: 60})
	k := resolver.KeysFor("api.example.test")
	f.c.dns.resolve(context.Background(), k[:]) // as if the TTL had run out
	f.k.Err = errors.New("netlink: boom")
	if err := f.c.sync(); err == nil {
		t.Fatal("sync did not report the kernel error")
	}
	if len(f.events(event.ApplyFailed)) != 1 || f.c.apply.retry.At().IsZero() {
		t.Fatal("failure not logged or no retry scheduled")
	}
	if err := f.c.sync(); err != nil {
		t.Fatal(err)
	}
	if f.k.Fulls != 2 {
		t.Fatalf("after a failure the next apply was not a full rebuild (fulls %d)", f.k.Fulls)
	}
	if got := f.k.Plan.Sets[ruleset.SetName4("billing")]; len(got) != 2 {
		t.Fatalf("set = %v, want old (lingering) and new address", got)
	}
}

func TestRunStopsAndRemoves(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	f.write(t, "egressd.yaml", fmt.Sprintf("resolvers: [%q]\non_exit: remove\n", f.dns.Addr.String()))
	f.c.doReload()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.events(event.Started)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !f.k.Removed || len(f.events(event.Stopping)) == 0 {
		t.Fatal("on_exit: remove did not remove the table")
	}
}

// A user deleted while its allowlist is enforced stays enforced by its last
// uid: its processes may still run.
func TestVanishedUserStaysEnforced(t *testing.T) {
	exists := true
	f := newFixture(t, map[string]string{"allow.d/svc.yaml": "user: svc\nallow: [192.0.2.1:443]\n"})
	f.c.o.Users = func(name string) (uint32, error) {
		if name == "svc" && exists {
			return 4242, nil
		}
		return 0, errors.New("unknown user")
	}
	f.c.lookupUsers(true)
	if f.c.users.UIDs["svc"] != 4242 {
		t.Fatalf("uids = %v", f.c.users.UIDs)
	}
	exists = false
	f.c.lookupUsers(false)
	if f.c.users.UIDs["svc"] != 4242 || f.c.users.Vanished["svc"] == nil {
		t.Fatalf("a vanished user was dropped: %+v", f.c.users)
	}
	// Naming a user that does not exist (a typo) does not lift the
	// restriction: the uid in force stays until the new user exists.
	exists = true
	f.c.lookupUsers(false)
	other := false
	f.c.o.Users = func(name string) (uint32, error) {
		switch {
		case name == "svc":
			return 4242, nil
		case name == "other" && other:
			return 5000, nil
		}
		return 0, errors.New("unknown user")
	}
	f.write(t, "allow.d/svc.yaml", "user: other\nallow: [192.0.2.1:443]\n")
	f.c.doReload()
	if f.c.users.UIDs["svc"] != 4242 || f.c.users.Was["svc"] != "svc" || len(f.c.users.Missing) != 0 {
		t.Fatalf("an edit naming a missing user lifted the restriction: %+v", f.c.users)
	}
	if got := f.events(event.UserMissing); len(got) == 0 || got[len(got)-1].ContextMap()["previous_user"] != "svc" {
		t.Fatalf("no user_missing event naming the previous user: %v", got)
	}
	// Still held across another reload, and once the user exists it takes over.
	f.write(t, "allow.d/svc.yaml", "user: other\nallow: [192.0.2.1:443, 192.0.2.2:443]\n")
	f.c.doReload()
	if f.c.users.UIDs["svc"] != 4242 {
		t.Fatalf("the held uid was dropped at the next reload: %+v", f.c.users)
	}
	other = true
	f.c.lookupUsers(false)
	if f.c.users.UIDs["svc"] != 5000 || len(f.c.users.Vanished) != 0 {
		t.Fatalf("the new user did not take over: %+v", f.c.users)
	}
}

// Deny events name only the denied allowlist's own names whose addresses
// (current or lingering) include the destination.
func TestNameIndexPerAllowlist(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{
		{Name: "billing", Entries: []config.Entry{{Host: "api.example.test"}}},
		{Name: "web", Entries: []config.Entry{{Host: "cdn.example.test"}, {Host: "api.example.test"}}},
	}}
	addrs := map[string][]netip.Addr{
		"api.example.test": {netip.MustParseAddr("192.0.2.10")},
		"cdn.example.test": {netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("192.0.2.10")},
	}
	var x nameIndex
	x.store(buildNameIndex(cfg, func(n string) []netip.Addr { return addrs[n] }))
	for _, c := range []struct {
		allowlist, addr, want string
	}{
		{"billing", "198.51.100.20", ""},
		{"billing", "192.0.2.10", "api.example.test"},
		{"web", "198.51.100.20", "cdn.example.test"},
		{"web", "192.0.2.10", "api.example.test,cdn.example.test"},
		{"gone", "192.0.2.10", ""},
	} {
		got := fmt.Sprint(x.lookup(c.allowlist, netip.MustParseAddr(c.addr)))
		want := fmt.Sprint(strings.Split(c.want, ","))
		if c.want == "" {
			want = "[]"
		}
		if got != want {
			t.Errorf("%s %s: names %s, want %s", c.allowlist, c.addr, got, want)
		}
	}
	// cdn.example.test moves: only the allowlists using it are rebuilt, correctly.
	addrs["cdn.example.test"] = []netip.Addr{netip.MustParseAddr("203.0.113.5")}
	x.store(updateNameIndex(x.load(), cfg, map[string]bool{"cdn.example.test": true}, func(n string) []netip.Addr { return addrs[n] }))
	if got := x.lookup("web", netip.MustParseAddr("198.51.100.20")); len(got) != 0 {
		t.Errorf("after the change, web 198.51.100.20: %v, want none", got)
	}
	if got := x.lookup("web", netip.MustParseAddr("203.0.113.5")); len(got) != 1 {
		t.Errorf("after the change, web 203.0.113.5: %v", got)
	}
	if got := x.lookup("billing", netip.MustParseAddr("192.0.2.10")); len(got) != 1 {
		t.Errorf("billing lost its index: %v", got)
	}
}

// A configuration that took effect is published at once, not within the
// state file's once-a-second limit: check must not report a just-applied
// edit as not applied.
func TestConfigPublishedAtOnce(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	now := time.Unix(1000, 0)
	f.c.o.Now = func() time.Time { return now }
	f.c.o.StateDir = t.TempDir()
	f.c.sync()         //nolint:errcheck
	f.c.publish(false) // the first write sets the limit: the next one is due at now+1s
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.2:443]\n")
	f.c.doReload()
	f.c.sync() //nolint:errcheck
	f.c.publish(false)
	st, err := state.Read(f.c.o.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConfigHash != state.Hash(f.c.cfg) {
		t.Fatal("the state file still holds the previous configuration after a reload")
	}
}
