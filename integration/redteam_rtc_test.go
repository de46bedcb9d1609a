//go:build linux

package integration

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
)

// Red team rtc (issue 24, second round): root changes egressd's table
// while the DNS proxy floods it with its own transactions (a new address
// per name, four clients). The monitor takes none of root's changes for
// egressd's: each is repaired (drift_repaired, the table verified and
// answering as before), the flood's transactions are not.
func TestRedteamRTCDriftDuringProxyFlood(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/flood.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - \"**.flood.example.test:443\"\n", uidNone))
	w.dns.Set("*.flood.example.test", dnstest.Record{A: addrs("192.0.2.99"), TTL: 300})
	var n atomic.Uint32
	w.dns.SetMangle(func(m *dns.Msg) {
		if len(m.Question) == 1 && strings.HasSuffix(m.Question[0].Name, ".flood.example.test.") {
			i := n.Add(1)
			for _, rr := range m.Answer {
				if a, ok := rr.(*dns.A); ok {
					a.A = net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
				}
			}
		}
	})
	w.unowned = true // an owned table refuses root's changes
	w.start()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered, failed atomic.Int64
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m, err := w.resolveAs(uidNone, "udp", "192.0.2.53:53", fmt.Sprintf("c%d-%d.flood.example.test", c, i), dns.TypeA)
				if err == nil && m.Rcode == dns.RcodeSuccess {
					answered.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	k := &ruleset.Netlink{NetNSFd: w.ns.Fd()}
	for _, tc := range w.drifts() {
		time.Sleep(300 * time.Millisecond) // the flood runs meanwhile
		m := w.mark()
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ev, err := w.waitEvent(event.DriftRepaired, m, 5*time.Second)
		if err != nil {
			t.Fatalf("%s, during the flood (%d answered): %v", tc.name, answered.Load(), err)
		}
		if !strings.Contains(fmt.Sprint(ev["found"]), tc.found) {
			t.Errorf("%s: drift_repaired found %v, want %s", tc.name, ev["found"], tc.found)
		}
		if _, err := w.waitEvent(event.RulesetApplied, m, 5*time.Second); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if fs, err := k.Verify(ruleset.Render(ruleset.Desired{})); err != nil || len(fs) == 0 {
			t.Fatalf("%s: cannot read the repaired table: %v", tc.name, err)
		}
		w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
		w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
		w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
	}
	if answered.Load() < 100 {
		t.Errorf("the flood was no flood: %d answered, %d failed", answered.Load(), failed.Load())
	}
	t.Logf("the proxy answered %d names (%d failed) during %d of root's changes, each repaired", answered.Load(), failed.Load(), len(w.drifts()))
}
