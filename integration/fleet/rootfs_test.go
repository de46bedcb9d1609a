package fleet

import (
	"testing"

	"github.com/egressd/egressd/internal/systest/nspawn"
)

// The hosts' root file system: Debian 12 as in the real-systemd tier
// (integration/systemd), plus what a fleet needs: sshd and python3 for
// Ansible, systemd-journal-remote (upload on the hosts, remote on the
// collector) and Prometheus.
const suite = "bookworm"

var packages = []string{"systemd", "systemd-sysv", "dbus", "nftables",
	"python3", "openssh-server", "systemd-journal-remote", "prometheus"}

// rootfs returns the cached root file system, building it when missing
// (nspawn.RootFS).
func rootfs(t *testing.T) string {
	t.Helper()
	return nspawn.RootFS(t, nspawn.Image{Name: "fleet", Suite: suite, Packages: packages})
}

// TestRootFSFleet builds the cached root file system if it is missing
// (.ci/run runs it first, on its own).
func TestRootFSFleet(t *testing.T) {
	require(t)
	t.Logf("root file system: %s", rootfs(t))
}
