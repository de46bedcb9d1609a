package fleet

import (
	"os"
	"os/exec"
	"testing"

	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/internal/systest/nspawn"
)

// require skips (or, under EGRESSD_REQUIRE_SYSTEM_TESTS=1, fails) unless
// this runs as root with the tools of the tier and a cgroup2 hierarchy.
func require(t *testing.T, tools ...string) {
	t.Helper()
	systest.Require(t)
	miss := func(why string) {
		const hint = "apt-get install --no-install-recommends systemd-container debootstrap ansible-core openssh-client"
		if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
			t.Fatalf("fleet tier: %s, and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping (%s)", why, hint)
		}
		t.Skipf("fleet tier: %s (%s)", why, hint)
	}
	for _, tool := range append([]string{"systemd-nspawn", "debootstrap", "nsenter", "ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			miss(tool + " not installed")
		}
	}
	if nspawn.Cgroup2() == "" {
		miss("no cgroup2 hierarchy mounted")
	}
}
