package fleet

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The hosts' root file system: Debian 12 as in the real-systemd tier
// (integration/systemd), plus what a fleet needs: sshd and python3 for
// Ansible, systemd-journal-remote (upload on the hosts, remote on the
// collector) and Prometheus.
const (
	suite    = "bookworm"
	cacheDir = "/var/cache/egressd-systest"
)

var packages = []string{"systemd", "systemd-sysv", "dbus", "nftables",
	"python3", "openssh-server", "systemd-journal-remote", "prometheus"}

// rootfs returns the cached root file system, building it when missing
// (into a temporary directory renamed into place, under the cache's lock,
// as integration/systemd does).
func rootfs(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte("fleet\n" + suite + "\n" + strings.Join(packages, ",")))
	dir := filepath.Join(cacheDir, fmt.Sprintf("fleet-%s-%x", suite, sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "usr/lib/systemd/systemd")); err == nil {
		return dir
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr/lib/systemd/systemd")); err == nil {
		return dir
	}
	old, _ := filepath.Glob(filepath.Join(cacheDir, ".build-*"))
	for _, o := range old {
		os.RemoveAll(o) //nolint:errcheck
	}
	mirror, err := aptMirror()
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	t.Logf("building the fleet root file system: debootstrap %s from %s (a few minutes, once)", suite, mirror)
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(packages, ","), suite, root, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(out, 40))
	}
	// Each boot gets a fresh machine id, and each host its own ssh host
	// keys (sshd-keygen at boot: ssh.service runs ssh-keygen -A).
	os.Remove(filepath.Join(root, "etc/machine-id")) //nolint:errcheck
	keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		os.Remove(k) //nolint:errcheck
	}
	if err := os.Rename(root, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// aptMirror is the Debian mirror the host's apt already uses for suite.
func aptMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			fields := map[string]string{}
			for _, l := range strings.Split(stanza, "\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, "#") {
					fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
			if has(fields["Types"], "deb") && has(fields["Suites"], suite) && fields["URIs"] != "" && fields["Enabled"] != "no" {
				return strings.Fields(fields["URIs"])[0], nil
			}
		}
	}
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append([]string{"/etc/apt/sources.list"}, lists...) {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) == 0 || fs[0] != "deb" {
				continue
			}
			fs = fs[1:]
			if len(fs) > 0 && strings.HasPrefix(fs[0], "[") {
				for len(fs) > 0 && !strings.HasSuffix(fs[0], "]") {
					fs = fs[1:]
				}
				if len(fs) > 0 {
					fs = fs[1:]
				}
			}
			if len(fs) >= 2 && fs[1] == suite {
				fh.Close()
				return fs[0], nil
			}
		}
		fh.Close()
	}
	return "", errors.New("no Debian " + suite + " mirror in /etc/apt/sources.list or sources.list.d: debootstrap needs one")
}

func has(list, word string) bool {
	for _, w := range strings.Fields(list) {
		if w == word {
			return true
		}
	}
	return false
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestRootFSFleet builds the cached root file system if it is missing
// (.ci/run runs it first, on its own).
func TestRootFSFleet(t *testing.T) {
	require(t)
	t.Logf("root file system: %s", rootfs(t))
}
