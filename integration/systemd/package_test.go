package systemd

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/debpkg"
	"github.com/egressd/egressd/internal/systest/nspawn"
)

// TestSystemdPackage is issue 17's test of the Debian package: built from
// this tree (internal/debpkg, as make deb does), installed with dpkg -i in a
// fresh container that has no egressd of its own, then each of
// debpkg.InstallSteps in order: enabled, started, enforcing, removed,
// purged. Before the removal, `egressd harden` of the packaged binary
// hardens a service whose start gate then runs that binary, and the service
// is restricted in the kernel.
func TestSystemdPackage(t *testing.T) {
	require(t, "dpkg-deb")
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	deb, err := debpkg.Build(debpkg.Options{Repo: repo, Out: t.TempDir(), GOARCH: runtime.GOARCH})
	if err != nil {
		t.Fatalf("building the package: %v", err)
	}
	t.Logf("package: %s", filepath.Base(deb))

	// Only the probe is bind-mounted: egressd comes from the package.
	c := newContainer(t, probeBin+":/usr/local/bin/egressd-probe")
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	inside := "/root/" + filepath.Base(deb)
	c.Write(inside, string(b), 0o644)
	c.Write("/etc/systemd/system/targets.service",
		"[Unit]\nDescription=test destinations (root)\n\n[Service]\nExecStart=/usr/local/bin/egressd-probe serve "+
			allowedDst+" "+deniedDst+"\n\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	c.boot()
	if out, err := c.Run("sh", "-c", "! command -v egressd && test ! -e /usr/bin/egressd -a ! -e /usr/local/bin/egressd -a ! -e /lib/systemd/system/egressd.service"); err != nil {
		t.Fatalf("the container has an egressd before the package is installed: %v\n%s", err, out)
	}
	c.Must("systemctl", "enable", "--now", "targets.service")

	steps := debpkg.InstallSteps(inside, "pkguser")
	hardened := false
	for i, s := range steps {
		if len(s.Argv) >= 2 && s.Argv[0] == "dpkg" && s.Argv[1] == "-r" && !hardened {
			if !c.sub(t, "harden with the packaged egressd", c.hardenPackaged) {
				return
			}
			hardened = true
		}
		if !c.sub(t, fmt.Sprintf("%02d %s", i+1, s.Why), func(t *testing.T) { c.step(t, s) }) {
			return
		}
	}
	if !hardened {
		t.Error("InstallSteps has no dpkg -r step: the harden check before the removal did not run")
	}
}

// sub runs f as a subtest whose container helpers report to it.
func (c *container) sub(t *testing.T, name string, f func(t *testing.T)) bool {
	return t.Run(name, func(t *testing.T) {
		parent := c.T
		c.T = t
		defer func() { c.T = parent }()
		f(t)
	})
}

// step runs one InstallStep: its exit status and output must be what it
// says, retried for s.Eventually.
func (c *container) step(t *testing.T, s debpkg.Step) {
	t.Helper()
	deadline := time.Now().Add(s.Eventually)
	for {
		out, err := c.Run(s.Argv...)
		code := 0
		if err != nil {
			code = nspawn.ExitCode(err)
		}
		if code == s.Exit && strings.Contains(out, s.Want) {
			return
		}
		if time.Now().After(deadline) {
			status, _ := c.Run("systemctl", "status", "--no-pager", "--lines=20", "egressd.service")
			t.Fatalf("%s: %q: exit %d (want %d)%s, output:\n%s\nsystemctl status egressd:\n%s",
				s.Why, strings.Join(s.Argv, " "), code, s.Exit, wantNote(s.Want, out), indent(out), indent(status))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func wantNote(want, out string) string {
	if want == "" || strings.Contains(out, want) {
		return ""
	}
	return fmt.Sprintf(", output lacks %q", want)
}

// hardenPackaged hardens pkgweb.service with the packaged egressd (found on
// PATH, as an administrator runs it) and checks what that gives: a start
// gate that runs the packaged binary, a service that starts, and a
// restriction the kernel enforces.
func (c *container) hardenPackaged(t *testing.T) {
	if p := strings.TrimSpace(c.Must("sh", "-c", "command -v egressd")); p != "/usr/bin/egressd" {
		t.Fatalf("egressd on PATH is %s, want the packaged /usr/bin/egressd", p)
	}
	c.Must("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pkgweb")
	// Written after the boot: the first boot's preset-all would have
	// started it, unhardened.
	c.Write("/etc/systemd/system/pkgweb.service", serviceUnit(8085), 0o644)
	c.Write("/etc/egressd/allow.d/pkgweb.yaml", allowlistFor("pkgweb"), 0o644)
	c.Must("egressd", "wait", "--user", "pkgweb", "--timeout", "30s")
	dropIn, _ := c.harden(t, "pkgweb.service", "--allowlist", "pkgweb", "--listen", "tcp:8085")
	if !strings.Contains(dropIn, "\nExecStartPre=+/usr/bin/egressd wait --user pkgweb ") {
		t.Errorf("the drop-in's start gate does not run the packaged /usr/bin/egressd:\n%s", dropIn)
	}
	c.Must("systemctl", "daemon-reload")
	if out, err := c.Run("systemctl", "start", "pkgweb.service"); err != nil {
		log, _ := c.Run("journalctl", "--no-pager", "-o", "cat", "-u", "pkgweb.service")
		t.Fatalf("hardened pkgweb.service does not start: %v\n%s\n%s", err, out, log)
	}
	c.restricted(t, 8085, "pkgweb, hardened with the packaged egressd")
	if a, err := c.Run("egressd", "harden", "--audit", "/etc/systemd/system/pkgweb.service"); strings.Contains(a, "not_restricted") || strings.Contains(a, "ordering") || strings.Contains(a, "path_missing") {
		t.Errorf("audit of pkgweb.service (exit %d):\n%s", nspawn.ExitCode(err), a)
	}
}
