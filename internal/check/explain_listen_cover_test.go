package check

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/bindguard"
)

// check --explain USER listen PROTO:PORT answers from the restriction the
// kernel holds (read from its pins), naming the listen: entry that allows
// a port; with nothing loaded it says so, and points at check when an
// allowlist has listen: that is not in force.
func TestExplainListen(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\nallow: [192.0.2.1:443]\nlisten: [tcp:8080]\n",
	})
	pinned := map[string]bindguard.Policy{}
	readListen = func(dir string) (bindguard.Policy, error) {
		if p, ok := pinned[dir]; ok {
			return p, nil
		}
		return nil, fmt.Errorf("open %s: %w", dir, os.ErrNotExist)
	}
	defer func() { readListen = bindguard.ReadPinned }()

	for _, c := range []struct {
		name, user, target string
		kernel             bindguard.Policy // nil: nothing pinned
		verdict            string
		want               string
	}{
		{"root", "root", "tcp:22", nil, "unrestricted", "root (uid 0)"},
		{"nothing loaded", "alice", "tcp:8080", nil, "unrestricted", "no listen restriction is loaded in the kernel: egressd restricts nobody's listening ports (but "},
		{"uid not restricted", "alice", "tcp:9090", bindguard.Policy{2002: {}}, "unrestricted", "uid 1001 may listen on any port: no listen: restriction in the kernel for it (but "},
		{"allowed", "alice", "tcp:8080", bindguard.Policy{1001: {Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 8080}}}}, "allowed", "allowed by listen: tcp:8080 ("},
		{"numeric user", "1001", "tcp:8080", bindguard.Policy{1001: {Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 8080}}}}, "allowed", "allowed by listen: tcp:8080"},
		{"other protocol", "alice", "udp:8080", bindguard.Policy{1001: {Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 8080}}}}, "denied", "bind() fails with EPERM"},
		{"other port", "alice", "tcp:9090", bindguard.Policy{1001: {Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 8080}}}}, "denied", "tcp:9090 is not in the allowlist's listen:"},
		{"audit", "alice", "tcp:9090", bindguard.Policy{1001: {Audit: true}}, "allowed", "audit mode: allowed and reported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clear(pinned)
			if c.kernel != nil {
				pinned[bindguard.DefaultDir] = c.kernel
			}
			x, err := ExplainListen(o, c.user, c.target)
			if err != nil {
				t.Fatal(err)
			}
			if x.Verdict != c.verdict || !strings.Contains(x.Reason, c.want) {
				t.Errorf("verdict %q (%s), want %q (%s)", x.Verdict, x.Reason, c.verdict, c.want)
			}
			if x.Target != "listen "+c.target {
				t.Errorf("target %q", x.Target)
			}
			if c.user == "alice" && x.Allowlist != "alice" {
				t.Errorf("allowlist %q, want alice", x.Allowlist)
			}
		})
	}
}

func TestExplainListenCannotAnswer(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\nallow: [192.0.2.1:443]\n",
	})
	readListen = func(dir string) (bindguard.Policy, error) { return nil, fmt.Errorf("bpf: %w", os.ErrPermission) }
	defer func() { readListen = bindguard.ReadPinned }()
	for _, c := range []struct{ name, user, target, want string }{
		{"bad target", "alice", "tcp:http", "target"},
		{"a range", "alice", "tcp:8000-8080", "give one port"},
		{"unknown user", "mallory", "tcp:8080", `user "mallory"`},
		{"unreadable pins", "alice", "tcp:8080", "permission denied"},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, err := ExplainListen(o, c.user, c.target)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("answered %+v, %v; want an error with %q", x, err, c.want)
			}
		})
	}
	o.CanAdmin = func() bool { return false }
	if _, err := ExplainListen(o, "alice", "tcp:8080"); err == nil || !strings.Contains(err.Error(), NotAdminMsg) {
		t.Errorf("without CAP_NET_ADMIN: %v", err)
	}
}
