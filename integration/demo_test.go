//go:build linux

package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/systest"
)

// The quick start's first command works, and shows what it claims: the
// allowlists enforced, a rotating CDN name working with dns: proxy and
// racing egressd's own lookups without it, a DNS tunnel refused.
func TestDemo(t *testing.T) {
	systest.Require(t)
	out, err := exec.Command(egressd, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("egressd demo: %v\n%s", err, out)
	}
	s := string(out)
	count := func(prefix, verdict string) int {
		n := 0
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, prefix) && strings.Contains(l, verdict) {
				n++
			}
		}
		return n
	}
	if n := count("dns: proxy      cdn.example", "ALLOWED"); n != 3 {
		t.Errorf("dns: proxy: %d of 3 connects allowed\n%s", n, s)
	}
	if n := count("dns: resolvers  cdn.example", "DENIED"); n == 0 {
		t.Errorf("dns: resolvers: no connect denied; the demo shows no difference\n%s", s)
	}
	for _, want := range []string{"a DNS tunnel): REFUSED", "billing (uid 64001)        → 192.0.2.10:8080        DENIED", "web (uid 64002)            → 198.51.100.20:443      ALLOWED"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q\n%s", want, s)
		}
	}
}
