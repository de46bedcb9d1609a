package nspawn

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

// CacheDir holds the cached root file systems (README: how to drop them).
const CacheDir = "/var/cache/egressd-systest"

// mirrorSuite is the suite whose entry in the host's apt sources names the
// Debian mirror; that mirror carries every suite.
const mirrorSuite = "bookworm"

// Image is a root file system: debootstrap's minbase of Suite plus Packages.
type Image struct {
	Name     string // "" or a prefix of the cache's directory name (and its key)
	Suite    string
	Packages []string
}

// RootFS returns img's cached root file system, building it when missing.
// Builds go into a temporary directory next to the cache and are renamed
// into place, so a killed build never leaves a half-made cache behind; a
// lock serialises concurrent test processes. The build drops the machine
// id and ssh host keys: each boot and host makes its own.
func RootFS(t testing.TB, img Image) string {
	t.Helper()
	key, base := img.Suite+"\n"+strings.Join(img.Packages, ","), img.Suite
	if img.Name != "" {
		key, base = img.Name+"\n"+key, img.Name+"-"+base
	}
	sum := sha256.Sum256([]byte(key))
	dir := filepath.Join(CacheDir, fmt.Sprintf("%s-%x", base, sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "usr/lib/systemd/systemd")); err == nil {
		return dir
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(CacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
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
	old, _ := filepath.Glob(filepath.Join(CacheDir, ".build-*"))
	for _, o := range old {
		os.RemoveAll(o) //nolint:errcheck
	}
	mirror, err := aptMirror(mirrorSuite)
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(CacheDir, ".build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	t.Logf("building the root file system %s: debootstrap %s from %s (a few minutes, once)", filepath.Base(dir), img.Suite, mirror)
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(img.Packages, ","), img.Suite, root, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, Tail(out, 40))
	}
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

// aptMirror is the Debian mirror the host's apt already uses for suite:
// the first URIs of a deb822 stanza in /etc/apt/sources.list.d/*.sources
// whose Suites name it, or a "deb URI suite" line of sources.list.
func aptMirror(suite string) (string, error) {
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
