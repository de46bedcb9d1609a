package policy

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"github.com/miekg/dns"
)

func TestCacheNames(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{
		{Name: "a", Entries: []config.Entry{{Host: "x.example.test"}, {Host: "y.example.test"}}},
		{Name: "b", AllowPrivateAnswers: true, Entries: []config.Entry{{Host: "y.example.test"}}},
	}}
	got := CacheNames(cfg)
	if len(got) != 2 || got["x.example.test"] || !got["y.example.test"] {
		t.Fatalf("%v", got)
	}
}

// The cache holds a private answer if any allowlist using the name opted in;
// each allowlist's set holds it only if that one did, or the hosts file
// gives it. Allowlists without a uid are left out; the order is by name.
func TestBuildPrivateAnswers(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{
		{Name: "web", Entries: []config.Entry{{Host: "lan.example.test", Proto: config.TCP, PortFrom: 443, PortTo: 443},
			{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Proto: config.TCP, PortFrom: 80, PortTo: 80}}},
		{Name: "ops", AllowPrivateAnswers: true, Entries: []config.Entry{{Host: "lan.example.test", Proto: config.TCP, PortFrom: 22, PortTo: 22}}},
		{Name: "ghost", Entries: []config.Entry{{Host: "lan.example.test", Proto: config.TCP, PortFrom: 1, PortTo: 1}}},
	}}
	u := Users{UIDs: map[string]uint32{"web": 1001, "ops": 1002}}
	addrs := func(string) []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("203.0.113.5")}
	}
	d := Build(Inputs{Config: cfg, Users: u, Addrs: addrs}).Ruleset
	if len(d.Allowlists) != 2 || d.Allowlists[0].Name != "ops" || d.Allowlists[1].Name != "web" {
		t.Fatalf("%+v", d.Allowlists)
	}
	if n := len(d.Allowlists[0].Elements); n != 2 {
		t.Fatalf("ops, opted in: %d elements, want both answers", n)
	}
	if n := len(d.Allowlists[1].Elements); n != 2 { // the public answer and the CIDR
		t.Fatalf("web: %d elements, want the public answer and the CIDR", n)
	}
	fromHosts := func(name string, a netip.Addr) bool { return a == netip.MustParseAddr("10.0.0.5") }
	if n := len(Build(Inputs{Config: cfg, Users: u, Addrs: addrs, FromHosts: fromHosts}).Ruleset.Allowlists[1].Elements); n != 3 {
		t.Fatalf("web with the private answer from the hosts file: %d elements, want 3", n)
	}
	p := ruleset.Render(d)
	if len(p.Allowlists) != 2 {
		t.Fatalf("%+v", p.Allowlists)
	}
}

type slowQuerier struct {
	inflight, peak atomic.Int32
	release        chan struct{}
}

func (q *slowQuerier) Query(ctx context.Context, name string, qtype uint16) (resolver.Result, error) {
	n := q.inflight.Add(1)
	defer q.inflight.Add(-1)
	for {
		p := q.peak.Load()
		if n <= p || q.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-q.release:
	case <-ctx.Done():
		return resolver.Result{}, ctx.Err()
	}
	if name == "bad.example.test" {
		return resolver.Result{}, errors.New("SERVFAIL")
	}
	if _, ok := ctx.Deadline(); !ok {
		return resolver.Result{}, errors.New("no per-query deadline")
	}
	return resolver.Result{Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.1")}, TTL: time.Minute}, nil
}

// Query keeps at most concurrency lookups in flight and returns each
// outcome at its key's index.
func TestQueryBoundedAndOrdered(t *testing.T) {
	q := &slowQuerier{release: make(chan struct{})}
	keys := []resolver.Key{{Name: "bad.example.test", Type: dns.TypeA}}
	for i := 0; i < 20; i++ {
		keys = append(keys, resolver.Key{Name: "ok.example.test", Type: dns.TypeAAAA})
	}
	go func() {
		for range keys {
			q.release <- struct{}{}
		}
	}()
	out := Query(context.Background(), q, keys, 3)
	if len(out) != len(keys) || out[0].Err == nil || out[0].Cancelled {
		t.Fatalf("out[0] = %+v", out[0])
	}
	for i, o := range out[1:] {
		if o.Err != nil || len(o.Res.Addrs) != 1 {
			t.Fatalf("out[%d] = %+v", i+1, o)
		}
	}
	if p := q.peak.Load(); p > 3 {
		t.Fatalf("%d lookups in flight, want at most 3", p)
	}
}

// A cancelled context is not a DNS failure.
func TestQueryCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := Query(ctx, &slowQuerier{release: make(chan struct{})}, []resolver.Key{{Name: "x.example.test", Type: dns.TypeA}}, 0)
	if !out[0].Cancelled || out[0].Err == nil {
		t.Fatalf("%+v", out[0])
	}
}
