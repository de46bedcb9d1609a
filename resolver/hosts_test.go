package resolver

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const hostsFile = `# /etc/hosts
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
192.0.2.10  db.Internal.example  db   # the database, with an alias
192.0.2.11  db.internal.example.      # a second line for the same name
2001:db8::10 db.internal.example
198.51.100.7 only-v4.example
   # indented comment
not-an-address  broken.example
fe80::1%eth0 zoned.example
::ffff:203.0.113.5 mapped.example
203.0.113.9
192.0.2.10 db.internal.example
`

func TestParseHosts(t *testing.T) {
	h := ParseHosts([]byte(hostsFile))
	tests := []struct {
		name  string
		qtype uint16
		want  []netip.Addr
		found bool
	}{
		{"localhost", dns.TypeA, addrs("127.0.0.1"), true},
		{"localhost", dns.TypeAAAA, addrs("::1"), true},
		{"ip6-loopback", dns.TypeAAAA, addrs("::1"), true},
		{"ip6-loopback", dns.TypeA, nil, true}, // named, but no IPv4: empty, not DNS
		{"DB.internal.EXAMPLE", dns.TypeA, addrs("192.0.2.10", "192.0.2.11"), true},
		{"db.internal.example.", dns.TypeAAAA, addrs("2001:db8::10"), true},
		{"db", dns.TypeA, addrs("192.0.2.10"), true},
		{"only-v4.example", dns.TypeA, addrs("198.51.100.7"), true},
		{"mapped.example", dns.TypeA, addrs("203.0.113.5"), true},
		{"broken.example", dns.TypeA, nil, false},
		{"zoned.example", dns.TypeAAAA, nil, false},
		{"the", dns.TypeA, nil, false}, // words of a comment are not names
		{"absent.example", dns.TypeA, nil, false},
	}
	for _, tc := range tests {
		got, found := h.Lookup(tc.name, tc.qtype)
		if found != tc.found || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Lookup(%s, %s) = %v, %v; want %v, %v", tc.name, dns.TypeToString[tc.qtype], got, found, tc.want, tc.found)
		}
	}
}

type fixedQuerier struct {
	addrs []netip.Addr
	calls int
}

func (f *fixedQuerier) Query(ctx context.Context, name string, qtype uint16) (Result, error) {
	f.calls++
	return Result{Addrs: f.addrs, TTL: time.Minute}, nil
}

func TestHostsFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("10.1.2.3 db.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := NewHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	next := &fixedQuerier{addrs: addrs("198.51.100.1")}
	q := &HostsFirst{Hosts: h, Next: next}
	r, err := q.Query(context.Background(), "db.example", dns.TypeA)
	if err != nil || r.Source != SourceHosts || !reflect.DeepEqual(r.Addrs, addrs("10.1.2.3")) || next.calls != 0 {
		t.Errorf("hosts name: %+v %v (dns asked %d times)", r, err, next.calls)
	}
	r, err = q.Query(context.Background(), "db.example", dns.TypeAAAA)
	if err != nil || r.Source != SourceHosts || !r.Negative || next.calls != 0 {
		t.Errorf("hosts name without IPv6 must not go to DNS: %+v %v", r, err)
	}
	r, err = q.Query(context.Background(), "api.example", dns.TypeA)
	if err != nil || r.Source != SourceDNS || next.calls != 1 {
		t.Errorf("other name: %+v %v", r, err)
	}

	// Atomic replace: a new file renamed over the old one.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte("10.1.2.4 db.example\n192.0.2.5 api.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	changed, err := h.Load(path)
	if err != nil || !reflect.DeepEqual(changed, []string{"api.example", "db.example"}) {
		t.Errorf("changed %v, %v", changed, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	changed, err = h.Load(path)
	if err != nil || len(changed) != 2 || len(h.Names()) != 0 {
		t.Errorf("a missing file is an empty one: changed %v, names %v, %v", changed, h.Names(), err)
	}
}

// The administrator wrote the hosts file: a private answer from it is
// taken like a literal, where the same answer from DNS is refused.
func TestCacheTakesPrivateHostsAnswers(t *testing.T) {
	now := time.Unix(1e9, 0)
	c := NewCache(Policy{MinTTL: 5 * time.Second, MaxTTL: time.Hour, MaxAddrs: 10}, func() time.Time { return now })
	c.Sync(map[string]bool{"db.example": false, "rebind.example": false})
	k := Key{"db.example", dns.TypeA}
	c.Observe(k, Result{Addrs: addrs("10.1.2.3"), Source: SourceHosts}, nil)
	c.Observe(Key{"rebind.example", dns.TypeA}, Result{Addrs: addrs("10.1.2.3"), TTL: time.Minute, Source: SourceDNS}, nil)
	c.Observe(Key{"db.example", dns.TypeAAAA}, Result{Negative: true, Source: SourceHosts}, nil)
	c.Observe(Key{"rebind.example", dns.TypeAAAA}, Result{Negative: true, TTL: time.Minute, Source: SourceDNS}, nil)
	if got := c.Addrs("db.example"); !reflect.DeepEqual(got, addrs("10.1.2.3")) {
		t.Errorf("hosts answer: %v", got)
	}
	if got := c.Addrs("rebind.example"); len(got) != 0 {
		t.Errorf("private DNS answer kept: %v", got)
	}
	if st, _ := c.Status(k); !st.Next.Equal(now.Add(5 * time.Second)) {
		t.Errorf("hosts answers are refreshed at min_ttl: next %v", st.Next.Sub(now))
	}
	c.Refresh([]string{"db.example"})
	if due := c.Due(); !reflect.DeepEqual(due, []Key{{"db.example", dns.TypeA}, {"db.example", dns.TypeAAAA}}) {
		t.Errorf("due after Refresh: %v", due)
	}
}
