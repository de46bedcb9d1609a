package systemd

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/internal/systest/nspawn"
)

// require skips (or, under EGRESSD_REQUIRE_SYSTEM_TESTS=1, fails) unless
// this runs as root with the container tools, the given other tools (of the
// host) and a cgroup2 hierarchy.
func require(t *testing.T, tools ...string) {
	t.Helper()
	systest.Require(t)
	miss := func(why string) {
		if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
			t.Fatalf("real-systemd test: %s, and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping (apt-get install --no-install-recommends systemd-container debootstrap)", why)
		}
		t.Skipf("real-systemd test: %s (apt-get install --no-install-recommends systemd-container debootstrap)", why)
	}
	for _, tool := range append([]string{"systemd-nspawn", "debootstrap", "nsenter"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			miss(tool + " not installed")
		}
	}
	if nspawn.Cgroup2() == "" {
		miss("no cgroup2 hierarchy mounted")
	}
}

// container is an nspawn.Container with a private network namespace
// holding only lo, and the binds and capabilities the test sets before boot.
type container struct {
	*nspawn.Container
	binds []string
	rw    []string // read-write binds (SRC:DST), set before boot
	caps  []string // capabilities beyond systemd-nspawn's default set, set before boot
}

func newContainer(t *testing.T, binds ...string) *container {
	t.Helper()
	return newContainerFrom(t, rootfs(t), binds...)
}

// newContainerFrom is newContainer on another cached root file system
// (rootfsFor).
func newContainerFrom(t *testing.T, lower string, binds ...string) *container {
	t.Helper()
	return &container{Container: nspawn.New(t, "egressd-systest", lower), binds: binds}
}

// boot starts the container and waits until systemd reports the boot done.
func (c *container) boot() {
	c.T.Helper()
	opts := []string{"--private-network"}
	for _, b := range c.binds {
		opts = append(opts, "--bind-ro="+b)
	}
	for _, b := range c.rw {
		opts = append(opts, "--bind="+b)
	}
	for _, cp := range c.caps {
		opts = append(opts, "--capability="+cp)
	}
	c.Start(opts...)
	c.Booted()
}

// reboot reboots systemd inside: systemd-nspawn exits with 133, and the
// container is booted again on the same file system.
func (c *container) reboot() {
	c.T.Helper()
	c.Run("systemctl", "reboot") //nolint:errcheck // the connection may drop
	code, ok := c.Wait(2 * time.Minute)
	if !ok || code != 133 {
		c.T.Fatalf("after systemctl reboot: systemd-nspawn exit %d (want 133), exited %v\n%s", code, ok, c.Console())
	}
	c.boot()
}
