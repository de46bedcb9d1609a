//go:build linux

package integration

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
)

// A name only the hosts file knows is enforced; editing the file (an
// atomic replace) moves the kernel set to the new address; a loopback
// address there is allowed (the administrator wrote it), where the same
// answer from DNS is refused; check says which source answered.
func TestHostsFileNames(t *testing.T) {
	w := newWorld(t)
	w.serveTCP("127.0.0.1:8080")
	w.serveTCP("127.0.0.1:8081")
	hosts := filepath.Join(w.dir, "hosts")
	w.write("hosts", "# test hosts\n192.0.2.11 db.hosts.test db # alias\n127.0.0.1 local.hosts.test\n")
	// linger 5s: the hosts file's elements carry min_ttl + linger in the
	// kernel; with 2s a daemon slowed down by -race renewed them too late
	// and check saw them missing (drift).
	w.write("egressd.yaml", strings.Replace(mainConfig, "linger: 2s", "linger: 5s", 1)+"hosts_file: "+hosts+"\n")
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - db.hosts.test:443\n  - local.hosts.test:8080\n  - rebind.example.test:8081\n", uidA))
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 2})
	w.dns.Set("rebind.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, TTL: 2})
	w.start()

	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected) // hosts only: DNS has no such name
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected) // DNS name, unaffected
	w.expect(uidA, "tcp", "127.0.0.1:8080", okConnected) // loopback from hosts: allowed
	w.expect(uidA, "tcp", "127.0.0.1:8081", okRefused)   // the same from DNS: rebinding, refused
	w.expect(uidA, "tcp", "192.0.2.12:443", okRefused)   // not yet
	w.expect(uidNone, "tcp", "192.0.2.12:443", okConnected)

	code, m := w.checkJSON()
	src, _ := m["config"].(map[string]any)["sources"].(map[string]any)
	// The one problem: the DNS name that rebinds to loopback.
	if kinds := problemKinds(m); code != 1 || len(kinds) != 1 || kinds[0] != "answers_dropped" ||
		src["db.hosts.test"] != "hosts" || src["local.hosts.test"] != "hosts" || src["api.example.test"] != "dns" {
		t.Errorf("check exit %d, sources %v, problems %v", code, src, m["problems"])
	}
	if _, out := w.check("--explain", fmt.Sprint(uidA), "db.hosts.test:443"); !strings.Contains(out, "answered by: hosts") {
		t.Errorf("check --explain does not say the hosts file answered:\n%s", out)
	}

	// An atomic replace of the file: the new address is allowed, the old
	// one goes after min_ttl + linger.
	m0 := w.mark()
	w.write("hosts", "192.0.2.12 db.hosts.test\n127.0.0.1 local.hosts.test\n")
	if _, err := w.waitEvent(event.ConfigLoaded, m0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	w.eventually(uidA, "tcp", "192.0.2.12:443", okConnected, 3*time.Second)
	w.eventually(uidA, "tcp", "192.0.2.11:443", okRefused, 15*time.Second)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
}
