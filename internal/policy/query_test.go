package policy

import (
	"context"
	"net/netip"
	"sync"
	"testing"

	"github.com/egressd/egressd/resolver"
	"github.com/miekg/dns"
)

// bothQuerier answers every type with one address and counts how it was asked.
type bothQuerier struct {
	mu     sync.Mutex
	single []resolver.Key
	both   []string
}

func (q *bothQuerier) Query(_ context.Context, name string, qtype uint16) (resolver.Result, error) {
	q.mu.Lock()
	q.single = append(q.single, resolver.Key{Name: name, Type: qtype})
	q.mu.Unlock()
	a := netip.MustParseAddr("192.0.2.1")
	if qtype == dns.TypeAAAA {
		a = netip.MustParseAddr("2001:db8::1")
	}
	return resolver.Result{Addrs: []netip.Addr{a}}, nil
}

func (q *bothQuerier) QueryBoth(ctx context.Context, name string) [2]resolver.Lookup {
	q.mu.Lock()
	q.both = append(q.both, name)
	q.mu.Unlock()
	var out [2]resolver.Lookup
	out[0].Res = resolver.Result{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.2")}}
	out[1].Res = resolver.Result{Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::2")}}
	return out
}

// A name's A and AAAA keys are asked together; a key without its partner alone.
func TestQueryPairsTypes(t *testing.T) {
	keys := []resolver.Key{{Name: "b.test", Type: dns.TypeAAAA}, {Name: "a.test", Type: dns.TypeA}, {Name: "b.test", Type: dns.TypeA},
		{Name: "c.test", Type: dns.TypeAAAA}, {Name: "a.test", Type: dns.TypeAAAA}, {Name: "d.test", Type: dns.TypeA}}
	q := &bothQuerier{}
	out := Query(context.Background(), q, keys, 2)
	if len(q.both) != 2 || len(q.single) != 2 {
		t.Fatalf("asked %v together and %v alone; want a.test and b.test together, c.test AAAA and d.test A alone", q.both, q.single)
	}
	for i, k := range keys {
		want := "192.0.2.1" // alone
		switch {
		case k.Name <= "b.test" && k.Type == dns.TypeA:
			want = "192.0.2.2"
		case k.Name <= "b.test":
			want = "2001:db8::2"
		case k.Type == dns.TypeAAAA:
			want = "2001:db8::1"
		}
		if o := out[i]; o.Err != nil || len(o.Res.Addrs) != 1 || o.Res.Addrs[0].String() != want {
			t.Errorf("%v: %+v, want %s", k, o, want)
		}
	}
	// A plain Querier is asked one key at a time.
	plain := struct{ resolver.Querier }{&bothQuerier{}}
	for i, o := range Query(context.Background(), plain, keys, 2) {
		if o.Err != nil || len(o.Res.Addrs) != 1 || (keys[i].Type == dns.TypeA) != o.Res.Addrs[0].Is4() {
			t.Errorf("%v: %+v", keys[i], o)
		}
	}
}

// QueryEach hands every key's outcome, once, to its callback on the calling
// goroutine (which may own state the workers must not touch): the same
// outcomes Query returns, paired and single keys alike.
func TestQueryEachHandsEveryOutcomeOnce(t *testing.T) {
	keys := []resolver.Key{{Name: "b.test", Type: dns.TypeAAAA}, {Name: "a.test", Type: dns.TypeA}, {Name: "b.test", Type: dns.TypeA},
		{Name: "c.test", Type: dns.TypeAAAA}, {Name: "a.test", Type: dns.TypeAAAA}, {Name: "d.test", Type: dns.TypeA}}
	seen := make([]int, len(keys))
	got := make([]Outcome, len(keys))
	owned := 0 // touched by the callback only: the race detector sees a worker touching it
	out := QueryEach(context.Background(), &bothQuerier{}, keys, 3, func(i int, o Outcome) {
		owned++
		seen[i]++
		got[i] = o
	})
	if owned != len(keys) {
		t.Fatalf("%d callbacks for %d keys", owned, len(keys))
	}
	for i := range keys {
		if seen[i] != 1 || got[i].Res.Addrs[0] != out[i].Res.Addrs[0] {
			t.Errorf("%v: handed %d times, %+v, want once, %+v", keys[i], seen[i], got[i], out[i])
		}
	}
}
