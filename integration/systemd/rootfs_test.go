package systemd

import (
	"testing"

	"github.com/egressd/egressd/internal/systest/nspawn"
)

// The container's root file system: Debian 12, whose systemd (252) is the
// one egressd's units and `harden` are written for.
const (
	suite    = "bookworm"
	cacheDir = nspawn.CacheDir
)

// packages are installed on top of debootstrap's minbase. nftables is there
// to print the table when a test fails.
var packages = []string{"systemd", "systemd-sysv", "dbus", "nftables"}

// rootfs returns the cached root file system, building it when missing
// (nspawn.RootFS).
func rootfs(t *testing.T) string { return rootfsFor(t, suite) }

// rootfsFor is rootfs for another Debian suite (trixie: systemd 257, for
// NFTSet=), built from the same mirror.
func rootfsFor(t *testing.T, suite string) string {
	t.Helper()
	return nspawn.RootFS(t, nspawn.Image{Suite: suite, Packages: packages})
}

// TestRootFS builds the cached root file system if it is missing (.ci/run
// runs it first, on its own, so that the build is not counted against the
// other tests' deadlines).
func TestRootFS(t *testing.T) {
	require(t)
	dir := rootfs(t)
	t.Logf("root file system: %s", dir)
}
