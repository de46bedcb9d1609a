package dnsproxy

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// Queries read in one batch (recvmmsg) are each answered, to its own
// client, under its own ID; a datagram larger than any query is dropped
// and the next query is answered.
func TestBatchedReads(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.example.com:443"))
	r.up.Set("*.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan string, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			q := new(dns.Msg)
			q.SetQuestion(dns.Fqdn(strings.Repeat("x", i%10+1)+".example.com"), dns.TypeA)
			q.Id = uint16(1000 + i)
			<-start
			m, _, err := (&dns.Client{Net: "udp", Timeout: 3 * time.Second}).Exchange(q, r.addr)
			if err != nil || m.Id != q.Id || m.Question[0].Name != q.Question[0].Name || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
				errs <- "query " + q.Question[0].Name + ": " + m.String()
			}
		}(i)
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	c, err := net.Dial("udp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, maxQuery+1)); err != nil {
		t.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("after.example.com.", dns.TypeA)
	m, _, err := (&dns.Client{Net: "udp", Timeout: 3 * time.Second}).ExchangeWithConn(q, &dns.Conn{Conn: c})
	if err != nil || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("the query after an oversized datagram: %v %v", m, err)
	}
}
