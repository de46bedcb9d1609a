package systemd

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

// The container's root file system: Debian 12, whose systemd (252) is the
// one egressd's units and `harden` are written for.
const (
	suite    = "bookworm"
	cacheDir = "/var/cache/egressd-systest"
)

// packages are installed on top of debootstrap's minbase. nftables is there
// to print the table when a test fails.
var packages = []string{"systemd", "systemd-sysv", "dbus", "nftables"}

// rootfs returns the cached root file system, building it when missing.
// Builds go into a temporary directory next to the cache and are renamed
// into place, so a killed build never leaves a half-made cache behind; a
// lock serialises concurrent test processes.
func rootfs(t *testing.T) string { return rootfsFor(t, suite) }

// rootfsFor is rootfs for another Debian suite (trixie: systemd 257, for
// NFTSet=), built from the same mirror.
func rootfsFor(t *testing.T, suite string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(suite + "\n" + strings.Join(packages, ",")))
	dir := filepath.Join(cacheDir, fmt.Sprintf("%s-%x", suite, sum[:6]))
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
		return dir // another process built it while we waited
	}
	// Leftovers of killed builds (we hold the lock: nobody else is building).
	old, _ := filepath.Glob(filepath.Join(cacheDir, ".build-*"))
	for _, o := range old {
		os.RemoveAll(o) //nolint:errcheck
	}
	mirror, err := aptMirror() // the host's mirror carries every suite
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	t.Logf("building the container root file system: debootstrap %s from %s (about a minute, once)", suite, mirror)
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(packages, ","), suite, root, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(out, 40))
	}
	// A fixed machine id is not wanted: each boot gets a fresh one.
	os.Remove(filepath.Join(root, "etc/machine-id")) //nolint:errcheck
	if err := os.Rename(root, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// aptMirror is the Debian mirror the host's apt already uses for suite:
// the first URIs of a deb822 stanza in /etc/apt/sources.list.d/*.sources
// whose Suites name it, or a "deb URI suite" line of sources.list.
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
			if has(fields["Types"], "deb") && has(fields["Suites"], suite) && fields["URIs"] != "" {
				if e := fields["Enabled"]; e == "no" {
					continue
				}
				return strings.Fields(fields["URIs"])[0], nil
			}
		}
	}
	for _, f := range append([]string{"/etc/apt/sources.list"}, must(filepath.Glob("/etc/apt/sources.list.d/*.list"))...) {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 0 && fs[0] == "deb" {
				fs = fs[1:]
				if len(fs) > 0 && strings.HasPrefix(fs[0], "[") { // [signed-by=…] options
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

func must[T any](v T, _ error) T { return v }

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestRootFS builds the cached root file system if it is missing (.ci/run
// runs it first, on its own, so that the build is not counted against the
// other tests' deadlines).
func TestRootFS(t *testing.T) {
	require(t)
	dir := rootfs(t)
	t.Logf("root file system: %s", dir)
}
