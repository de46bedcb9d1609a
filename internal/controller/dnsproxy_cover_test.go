package controller

import (
	"errors"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnsproxy"
)

// fakeProxy records what the loop gives the DNS proxy.
type fakeProxy struct {
	policies  []*dnsproxy.Policy
	listens   []uint16
	listenErr error
}

func (p *fakeProxy) SetPolicy(pol *dnsproxy.Policy) { p.policies = append(p.policies, pol) }
func (p *fakeProxy) Listen(port uint16) error {
	p.listens = append(p.listens, port)
	return p.listenErr
}
func (p *fakeProxy) Refill() error { return nil }

// The proxy gets the policy of the configuration in force (again only when
// it or the users change) and opens its sockets once an allowlist has
// dns: proxy; a socket that cannot be opened is said (dns_proxy_failed)
// and retried, not at every sync but after a pause.
func TestSyncProxy(t *testing.T) {
	f := newFixture(t, map[string]string{
		"allow.d/billing.yaml": "user: billing\ndns: proxy\nallow: [\"*.cdn.example.test:443\"]\n",
	})
	now := time.Unix(1000, 0)
	p := &fakeProxy{listenErr: errors.New("bind: address already in use")}
	f.c.o.DNSProxy, f.c.o.Now = p, func() time.Time { return now }

	f.c.syncProxy()
	if len(p.policies) != 1 || len(p.listens) != 1 || p.listens[0] != f.c.cfg.DNSProxyPort {
		t.Fatalf("first sync: %d policies, listens %v (port %d)", len(p.policies), p.listens, f.c.cfg.DNSProxyPort)
	}
	if n := len(f.events("dns_proxy_failed")); n != 1 {
		t.Fatalf("%d dns_proxy_failed events, want 1", n)
	}
	f.c.syncProxy() // the same configuration, within the pause: nothing again
	if len(p.policies) != 1 || len(p.listens) != 1 {
		t.Errorf("second sync: %d policies, %d listens; want 1 and 1", len(p.policies), len(p.listens))
	}
	now = now.Add(5 * time.Second)
	p.listenErr = nil
	f.c.syncProxy()
	if len(p.listens) != 2 || len(f.events("dns_proxy_failed")) != 1 {
		t.Errorf("after the pause: %d listens, %d failures; want a retry that works", len(p.listens), len(f.events("dns_proxy_failed")))
	}

	// A configuration without dns: proxy users: a new (empty) policy, no listen.
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
	f.c.doReload()
	listens := len(p.listens)
	f.c.syncProxy()
	if len(p.policies) != 2 || len(p.listens) != listens {
		t.Errorf("without dns: proxy: %d policies, %d listens (was %d)", len(p.policies), len(p.listens), listens)
	}

	f.c.o.DNSProxy = nil
	f.c.syncProxy() // no proxy configured: nothing to do, no panic
}
