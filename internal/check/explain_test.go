package check

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"github.com/miekg/dns"
)

// answers is a DNS server in a map: name -> A and AAAA answers.
func answers(m map[string][]string, source string) func(*config.Config) resolver.Querier {
	return func(*config.Config) resolver.Querier {
		return dnsFunc(func(name string, qtype uint16) (resolver.Result, error) {
			addrs, ok := m[name]
			if !ok {
				return resolver.Result{}, errors.New("NXDOMAIN")
			}
			res := resolver.Result{Source: source, TTL: time.Minute}
			for _, s := range addrs {
				a := mustAddr(s)
				if a.Is4() == (qtype == dns.TypeA) {
					res.Addrs = append(res.Addrs, a)
				}
			}
			return res, nil
		})
	}
}

func explainFixture(t *testing.T) Options {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\nallow: [192.0.2.1:443, api.example.test:443, 198.51.100.0/24:53/udp]\n",
	})
	o.NewQuerier = answers(map[string][]string{"api.example.test": {"203.0.113.5", "2001:db8::5"}}, resolver.SourceDNS)
	o.Kernel = applied(t, o, map[string][]string{"api.example.test": {"203.0.113.5", "2001:db8::5"}})
	return o
}

func TestExplainVerdicts(t *testing.T) {
	for _, c := range []struct {
		name, user, target, verdict, want string
		setup                             func(*Options)
	}{
		{name: "root", user: "root", target: "192.0.2.1:443", verdict: "unrestricted", want: "root (uid 0)"},
		{name: "uid 0", user: "0", target: "192.0.2.1:443", verdict: "unrestricted", want: "root (uid 0)"},
		{name: "literal allowed", user: "alice", target: "192.0.2.1:443", verdict: "allowed", want: "every address"},
		{name: "numeric user", user: "1001", target: "192.0.2.1:443", verdict: "allowed", want: "every address"},
		{name: "range entry", user: "alice", target: "198.51.100.7:53/udp", verdict: "allowed", want: "every address"},
		{name: "other port", user: "alice", target: "192.0.2.1:80", verdict: "denied", want: "logged, then rejected"},
		{name: "name allowed", user: "alice", target: "api.example.test:443", verdict: "allowed", want: "every address"},
		{name: "name does not resolve", user: "alice", target: "nowhere.example.test:443", verdict: "denied", want: "does not resolve"},
		{name: "resolver through the dns set", user: "alice", target: "192.0.2.53:53/udp", verdict: "allowed", want: "every address"},
		{name: "unrestricted uid", user: "bob", target: "192.0.2.1:443", verdict: "unrestricted", want: "has no allowlist in the kernel",
			setup: func(o *Options) {
				users := o.Users
				o.Users = func(n string) (uint32, error) {
					if n == "bob" {
						return 2002, nil
					}
					return users(n)
				}
			}},
		{name: "no table", user: "alice", target: "192.0.2.1:443", verdict: "unrestricted", want: "does not exist",
			setup: func(o *Options) { o.Kernel.(*planKernel).usersErr = ruleset.ErrNoTable }},
		{name: "audit mode", user: "alice", target: "192.0.2.1:80", verdict: "denied", want: "audit mode",
			setup: func(o *Options) { o.Kernel.(*planKernel).audited[1001] = true }},
		{name: "some addresses", user: "alice", target: "api.example.test:443", verdict: "allowed", want: "some addresses are allowed",
			setup: func(o *Options) {
				o.NewQuerier = answers(map[string][]string{"api.example.test": {"203.0.113.5", "203.0.113.6"}}, resolver.SourceDNS)
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := explainFixture(t)
			if c.setup != nil {
				c.setup(&o)
			}
			x, err := Explain(context.Background(), o, c.user, c.target)
			if err != nil {
				t.Fatal(err)
			}
			if x.Verdict != c.verdict || !strings.Contains(x.Reason, c.want) {
				t.Fatalf("verdict %q (%s), want %q (%s)", x.Verdict, x.Reason, c.verdict, c.want)
			}
			wantExit := ExitOK
			if c.verdict == "denied" {
				wantExit = ExitProblem
			}
			if x.ExitCode != wantExit || x.Version != 1 {
				t.Fatalf("exit %d version %d", x.ExitCode, x.Version)
			}
			var b strings.Builder
			x.WriteText(&b)
			if !strings.HasPrefix(b.String(), strings.ToUpper(c.verdict)+": user "+c.user) {
				t.Fatalf("text:\n%s", b.String())
			}
		})
	}
}

func TestExplainCannotAnswer(t *testing.T) {
	for _, c := range []struct {
		name, user, target, want string
		setup                    func(*Options)
	}{
		{name: "bad target", user: "alice", target: "not a target", want: "target"},
		{name: "a range", user: "alice", target: "192.0.2.0/24:443", want: "one address or name and one port"},
		{name: "a port range", user: "alice", target: "192.0.2.1:1-2", want: "one address or name and one port"},
		{name: "not admin", user: "alice", target: "192.0.2.1:443", want: "CAP_NET_ADMIN",
			setup: func(o *Options) { o.CanAdmin = func() bool { return false } }},
		{name: "invalid configuration", user: "alice", target: "192.0.2.1:443", want: "configuration invalid",
			setup: func(o *Options) { os.WriteFile(o.ConfigPath, []byte("resolvers: nope: [\n"), 0o644) }}, //nolint:errcheck
		{name: "unknown user", user: "mallory", target: "192.0.2.1:443", want: `user "mallory"`},
		{name: "kernel users unreadable", user: "alice", target: "192.0.2.1:443", want: "netlink",
			setup: func(o *Options) { o.Kernel.(*planKernel).usersErr = errors.New("netlink") }},
		{name: "kernel sets unreadable", user: "alice", target: "192.0.2.1:443", want: "netlink",
			setup: func(o *Options) { o.Kernel.(*planKernel).setsErr = errors.New("netlink") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := explainFixture(t)
			if c.setup != nil {
				c.setup(&o)
			}
			x, err := Explain(context.Background(), o, c.user, c.target)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("explanation %+v, error %v; want an error with %q", x, err, c.want)
			}
			ca := CannotAnswer(c.user, c.target, err)
			if ca.ExitCode != ExitInvalid || ca.Verdict != "cannot_answer" {
				t.Fatalf("%+v", ca)
			}
		})
	}
}

// Asking about an allowlist's name instead of its user says so.
func TestExplainAllowlistNameForUser(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":         "resolvers: [192.0.2.53]\n",
		"allow.d/billing.yaml": "user: alice\nallow: [192.0.2.1:443]\n",
	})
	o.Kernel = applied(t, o, nil)
	_, err := Explain(context.Background(), o, "billing", "192.0.2.1:443")
	if err == nil || !strings.Contains(err.Error(), "is an allowlist") || !strings.Contains(err.Error(), "--explain alice") {
		t.Fatalf("error %v", err)
	}
}

// A name egressd saw at other addresses: the denied answer is explained,
// with the allowlist's entry and the addresses the kernel does allow; an
// address that left the answers is noted as lingering.
func TestExplainNameNearestAndLingering(t *testing.T) {
	o := explainFixture(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.Now = func() time.Time { return now }
	o.NewQuerier = answers(map[string][]string{"api.example.test": {"203.0.113.99"}}, resolver.SourceDNS)
	x, err := Explain(context.Background(), o, "alice", "api.example.test:443")
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "denied" || len(x.Nearest) == 0 || !strings.Contains(strings.Join(x.Nearest, "\n"), "same name, other address") {
		t.Fatalf("%+v", x)
	}
	// The daemon still holds 203.0.113.5, lingering.
	st := &state.State{Version: 1, PID: os.Getpid(), Names: map[string]state.Name{"api.example.test": {
		Addrs: []string{"203.0.113.5"}, Lingering: map[string]time.Time{"203.0.113.5": now.Add(time.Minute)}}}}
	if err := state.Write(o.RuntimeDir, st); err != nil {
		t.Fatal(err)
	}
	x, err = Explain(context.Background(), o, "alice", "api.example.test:443")
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "allowed" || len(x.Addresses) != 2 {
		t.Fatalf("%+v", x)
	}
	a := x.Addresses[0]
	if !a.Allowed || !strings.Contains(a.Note, "lingering") || !strings.Contains(a.Entry, "api.example.test:443") || a.Set == "" {
		t.Fatalf("lingering address: %+v", a)
	}
	var b strings.Builder
	x.WriteText(&b)
	for _, want := range []string{"allowlist: alice", "answered by: dns", "allowed by", "denied: not in the allowlist's set", "note:"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	// Without the lingering deadline: held by the daemon, gone from DNS.
	st.Names["api.example.test"] = state.Name{Addrs: []string{"203.0.113.5"}}
	if err := state.Write(o.RuntimeDir, st); err != nil {
		t.Fatal(err)
	}
	x, _ = Explain(context.Background(), o, "alice", "api.example.test:443")
	if !strings.Contains(x.Addresses[0].Note, "until its TTL and then linger") {
		t.Fatalf("%+v", x.Addresses[0])
	}
}

// Denied on another port of an allowed address: the nearest entry says so.
func TestExplainNearestOtherPort(t *testing.T) {
	o := explainFixture(t)
	x, err := Explain(context.Background(), o, "alice", "192.0.2.1:80")
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Nearest) != 1 || !strings.Contains(x.Nearest[0], "same host, other port: 192.0.2.1:443") {
		t.Fatalf("nearest %v", x.Nearest)
	}
}

// An address allowed by a name's entry that resolves elsewhere is still
// attributed to the allowlist's name entry.
func TestAttribute(t *testing.T) {
	al := &config.Allowlist{Entries: []config.Entry{{Host: "api.example.test", Proto: config.TCP, PortFrom: 443, PortTo: 443, Raw: "api.example.test:443"}}}
	got := attribute(al, config.TCP, mustAddr("203.0.113.7"), 443, nil, "other.example.test")
	if !strings.Contains(got, "which resolves to 203.0.113.7") {
		t.Fatalf("%q", got)
	}
	if attribute(nil, config.TCP, mustAddr("203.0.113.7"), 443, nil, "") != "" || nearest(nil, config.Entry{}, nil, nil) != nil {
		t.Fatal("no allowlist, yet an attribution")
	}
	if attribute(al, config.UDP, mustAddr("203.0.113.7"), 443, nil, "") != "" {
		t.Fatal("attributed to an entry of another protocol")
	}
}
