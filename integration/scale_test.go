//go:build linux

package integration

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// 10,000 names over 100 allowlists, resolved (A and AAAA) and applied by
// run --once against the namespace's DNS server; every address must be in
// the kernel afterwards. The duration is logged, not asserted (benchmarks
// measure speed; this test checks that scale works).
func TestTenThousandNamesOnce(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", mainConfig)
	const lists, per = 100, 100
	for i := 0; i < lists; i++ {
		var b strings.Builder
		// 198.18.0.0/15 (benchmarking) is not globally reachable: opted in.
		fmt.Fprintf(&b, "user: %d\nallow_private_answers: true\nallow:\n", 70000+i)
		for j := 0; j < per; j++ {
			n := i*per + j
			name := fmt.Sprintf("n%d.scale.test", n)
			fmt.Fprintf(&b, "  - %s:443\n", name)
			w.dns.Set(name, dnstest.Record{A: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)})}, TTL: 300})
		}
		w.write(fmt.Sprintf("allow.d/list%03d.yaml", i), b.String())
	}
	cmd := exec.Command(egressd, w.tw.RunArgs("--once")...)
	var out strings.Builder
	cmd.Stderr = &out
	start := time.Now()
	if err := w.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, tail(out.String(), 2000))
	}
	took := time.Since(start)
	sets, err := (&ruleset.Netlink{NetNSFd: w.ns.Fd()}).ReadSets()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, es := range sets {
		if id, ok := ruleset.ParseSetName(name); ok && id.Allowlist != "" && !id.V6 {
			n += len(es)
		}
	}
	if n != lists*per {
		t.Fatalf("kernel holds %d elements, want %d", n, lists*per)
	}
	t.Logf("run --once: %d names (A+AAAA: %d queries) over %d allowlists, %d elements in the kernel, %v from process start to exit",
		lists*per, w.dns.Queries(), lists, n, took)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
