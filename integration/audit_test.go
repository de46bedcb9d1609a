//go:build linux

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// mode: audit (issue 15): an audited user reaches an unlisted destination,
// and a deny event with "audit": true says so; check shows the mode;
// switching to enforce is a reload, after which the same connect is refused.
func TestAuditMode(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	billing := fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\nmode: audit\n", uidA)
	w.write("allow.d/billing.yaml", billing)
	w.start()

	m := w.mark()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okConnected) // unlisted: logged, then let through
	ev, err := w.waitEvent("deny", m, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev["audit"] != true || ev["allowlist"] != "billing" || ev["dst"] != "198.51.100.20" || ev["dport"] != float64(4444) {
		t.Errorf("audit deny event = %v", ev)
	}
	// The enforced allowlist beside it still rejects, and says audit: false.
	m = w.mark()
	w.expect(uidB, "tcp", "198.51.100.20:4444", okRefused)
	if ev, err := w.waitEvent("deny", m, 2*time.Second); err != nil || ev["audit"] != false || ev["allowlist"] != "web" {
		t.Errorf("enforced deny event = %v, %v", ev, err)
	}
	code, out := w.check()
	if !strings.Contains(out, "audit") {
		t.Errorf("check does not show the audit mode (exit %d):\n%s", code, out)
	}
	code, out = w.check("--explain", fmt.Sprint(uidA), "198.51.100.20:4444")
	if code != 1 || !strings.Contains(out, "audit mode") {
		t.Errorf("--explain of an audited would-be deny: exit %d\n%s", code, out)
	}

	// audit → enforce: a reload, no restart.
	w.write("allow.d/billing.yaml", strings.Replace(billing, "mode: audit", "mode: enforce", 1))
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okRefused, 5*time.Second)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
}
