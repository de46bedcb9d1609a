package privilege

import (
	"os"
	"strings"
	"testing"
)

// NetAdmin agrees with the effective capability set the kernel reports.
func TestNetAdmin(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	want := false
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			v = strings.TrimSpace(v)
			// CAP_NET_ADMIN is bit 12: the fourth hex digit from the right.
			d := v[len(v)-4]
			want = strings.IndexByte("0123456789abcdef", d)&1 != 0
		}
	}
	if got := NetAdmin(); got != want {
		t.Errorf("NetAdmin() = %v, CapEff says %v", got, want)
	}
}
