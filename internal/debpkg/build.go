// Package debpkg builds egressd's Debian package with dpkg-deb (make deb,
// go run ./tools/deb) and lists the steps that check an installed package
// under real systemd (InstallSteps, for the real-systemd test tier).
//
// Build compiles /usr/bin/egressd with -trimpath and the version from git
// describe, renders the man pages and completions from internal/manual (the
// source of `egressd help`), lays out the package tree in a temporary
// directory from packaging/deb/ and egressd.service, writes DEBIAN/control,
// conffiles and md5sums, and runs dpkg-deb --root-owner-group --build.
// Everything is owned by root; /etc/egressd and its directories are 0755,
// as egressd's trust check requires.
package debpkg

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/manual"
)

// Options say what to build from and where to put it.
type Options struct {
	Repo   string // the source tree (a git work tree)
	Out    string // where the .deb goes
	GOARCH string
}

// release is what git says about the tree being packaged.
type release struct {
	Describe string    // git describe --tags --always --dirty
	Tagged   bool      // a tag is reachable (else Describe is a bare hash)
	Commit   string    // full hash
	Date     time.Time // commit date: reproducible timestamps
}

func gitRelease(repo string) (release, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
			}
			return "", fmt.Errorf("git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var r release
	var err error
	if r.Describe, err = git("describe", "--tags", "--always", "--dirty"); err != nil {
		return r, err
	}
	_, tagErr := git("describe", "--tags", "--abbrev=0")
	r.Tagged = tagErr == nil
	if r.Commit, err = git("rev-parse", "HEAD"); err != nil {
		return r, err
	}
	ts, err := git("log", "-1", "--format=%ct")
	if err != nil {
		return r, err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return r, fmt.Errorf("commit time %q: %v", ts, err)
	}
	r.Date = time.Unix(sec, 0).UTC()
	return r, nil
}

var describeRE = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.~+-]*?)(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)

// debVersion turns git describe output into a Debian version that sorts
// right: v1.2.3 -> 1.2.3-1; v1.2.3-4-gabc -> 1.2.3+git4.gabc-1 (after 1.2.3,
// before 1.2.4); v1.2.3-rc.1 -> 1.2.3~rc.1-1 (before 1.2.3); no tag ->
// 0~git.HASH-1 (before any release); -dirty -> +dirty.
func debVersion(describe string, tagged bool) string {
	var v string
	dirty := strings.HasSuffix(describe, "-dirty")
	if m := describeRE.FindStringSubmatch(describe); tagged && m != nil {
		v = strings.Replace(m[1], "-", "~", 1)
		if m[2] != "" {
			v += "+git" + m[2] + ".g" + m[3]
		}
	} else {
		v = "0~git." + strings.TrimSuffix(describe, "-dirty")
	}
	if dirty {
		v += "+dirty"
	}
	return strings.ReplaceAll(v, "-", ".") + "-1"
}

// debArch maps GOARCH to the Debian architecture name.
func debArch(goarch string) (string, error) {
	m := map[string]string{"amd64": "amd64", "arm64": "arm64", "386": "i386", "arm": "armhf",
		"ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64", "loong64": "loong64", "mips64le": "mips64el"}
	if a, ok := m[goarch]; ok {
		return a, nil
	}
	return "", fmt.Errorf("no Debian architecture for GOARCH=%s", goarch)
}

const maintainer = "egressd maintainers <egressd@packages.egressd.invalid>"

// Build makes the package and returns its path, OUT/egressd_VERSION_ARCH.deb.
func Build(o Options) (string, error) {
	for _, tool := range []string{"dpkg-deb", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s is needed (apt-get install dpkg git)", tool)
		}
	}
	rel, err := gitRelease(o.Repo)
	if err != nil {
		return "", err
	}
	arch, err := debArch(o.GOARCH)
	if err != nil {
		return "", err
	}
	version := debVersion(rel.Describe, rel.Tagged)
	tmp, err := os.MkdirTemp("", "egressd-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	st := stager{root: root, mtime: rel.Date}

	// The binary: trimmed paths, the release stamped in.
	bin := filepath.Join(root, "usr/bin/egressd")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	// External linking with relro and bindnow, fortified cgo: Debian's
	// hardening flags (lintian hardening-no-bindnow, -no-fortify-functions).
	ldflags := fmt.Sprintf("-s -w -buildid= -linkmode=external -extldflags=-Wl,-z,relro,-z,now -X github.com/egressd/egressd/internal/version.Version=%s -X github.com/egressd/egressd/internal/version.Commit=%s", rel.Describe, rel.Commit)
	goBuild := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-ldflags", ldflags, "-o", bin, "./cmd/egressd")
	goBuild.Dir = o.Repo
	goBuild.Env = append(os.Environ(), "GOARCH="+o.GOARCH, "GOOS=linux", "CGO_ENABLED=1",
		"CGO_CFLAGS=-g -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong", "CGO_LDFLAGS=-Wl,-z,relro,-z,now")
	if out, err := goBuild.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	// What dh_strip removes besides symbols (the C compiler's identification).
	if objcopy, err := exec.LookPath("objcopy"); err == nil {
		if out, err := exec.Command(objcopy, "--remove-section=.comment", "--remove-section=.note", bin).CombinedOutput(); err != nil {
			return "", fmt.Errorf("objcopy: %v\n%s", err, out)
		}
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		return "", err
	}

	unit, err := os.ReadFile(filepath.Join(o.Repo, "egressd.service"))
	if err != nil {
		return "", err
	}
	unit, err = packagedUnit(unit)
	if err != nil {
		return "", err
	}
	socket, err := os.ReadFile(filepath.Join(o.Repo, "egressd.socket"))
	if err != nil {
		return "", err
	}
	socket = bytes.ReplaceAll(socket, []byte("Install as\n# /etc/systemd/system/egressd.socket beside egressd.service, which wants it:"),
		[]byte("Installed by\n# the package beside egressd.service, which wants it:"))
	read := func(p string) []byte {
		b, e := os.ReadFile(filepath.Join(o.Repo, "packaging/deb", p))
		if e != nil && err == nil {
			err = e
		}
		return b
	}
	readme, _ := os.ReadFile(filepath.Join(o.Repo, "README.md"))
	var man8, man5, bash, zsh bytes.Buffer
	manual.Egressd.WriteRoff(&man8, rel.Describe)
	manual.Config.WriteRoff(&man5, rel.Describe)
	manual.WriteBash(&bash)
	manual.WriteZsh(&zsh)
	upstream, err := os.ReadFile(filepath.Join(o.Repo, "CHANGELOG.md"))
	if err != nil {
		return "", err
	}
	changelog, err := DebianChangelog(upstream, version, rel.Describe, rel.Commit, maintainer, rel.Date)
	if err != nil {
		return "", err
	}
	files := []struct {
		path string
		data []byte
		mode fs.FileMode
		gz   bool
	}{
		{"lib/systemd/system/egressd.service", unit, 0o644, false},
		{"lib/systemd/system/egressd.socket", socket, 0o644, false},
		{"etc/egressd/egressd.yaml", read("egressd.yaml"), 0o644, false},
		{"usr/share/doc/egressd/examples/billing.yaml", read("examples/billing.yaml"), 0o644, false},
		{"usr/share/doc/egressd/examples/lists/os-updates.yaml", read("examples/lists/os-updates.yaml"), 0o644, false},
		{"usr/share/doc/egressd/copyright", read("copyright"), 0o644, false},
		{"usr/share/doc/egressd/changelog.Debian.gz", []byte(changelog), 0o644, true},
		{"usr/share/doc/egressd/README.md.gz", readme, 0o644, true},
		{"usr/share/doc/egressd/changelog.gz", upstream, 0o644, true},
		{"usr/share/man/man8/egressd.8.gz", man8.Bytes(), 0o644, true},
		{"usr/share/man/man5/egressd.yaml.5.gz", man5.Bytes(), 0o644, true},
		{"usr/share/bash-completion/completions/egressd", bash.Bytes(), 0o644, false},
		{"usr/share/zsh/vendor-completions/_egressd", zsh.Bytes(), 0o644, false},
		{"usr/share/lintian/overrides/egressd", read("lintian-overrides"), 0o644, false},
		{"DEBIAN/postinst", read("postinst"), 0o755, false},
		{"DEBIAN/prerm", read("prerm"), 0o755, false},
		{"DEBIAN/postrm", read("postrm"), 0o755, false},
		{"DEBIAN/conffiles", []byte("/etc/egressd/egressd.yaml\n"), 0o644, false},
	}
	// docs/*.md, which the README and the man pages point to.
	docs, _ := filepath.Glob(filepath.Join(o.Repo, "docs", "*.md"))
	if len(docs) == 0 && err == nil {
		err = errors.New("no docs/*.md to install")
	}
	for _, d := range docs {
		b, e := os.ReadFile(d)
		if e != nil && err == nil {
			err = e
		}
		files = append(files, struct {
			path string
			data []byte
			mode fs.FileMode
			gz   bool
		}{"usr/share/doc/egressd/docs/" + filepath.Base(d) + ".gz", b, 0o644, true})
	}
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if err := st.file(f.path, f.data, f.mode, f.gz); err != nil {
			return "", err
		}
	}
	// Empty directories the package owns; root-owned 0755 (egressd refuses
	// configuration paths others can write).
	for _, d := range []string{"etc/egressd/allow.d", "etc/egressd/lists"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	sums, size, err := st.md5sums()
	if err != nil {
		return "", err
	}
	if err := st.file("DEBIAN/md5sums", sums, 0o644, false); err != nil {
		return "", err
	}
	control := fmt.Sprintf(`Package: egressd
Version: %s
Architecture: %s
Maintainer: %s
Installed-Size: %d
Depends: %s
Suggests: nftables
Section: net
Priority: optional
Homepage: https://github.com/egressd/egressd
Description: per-service egress allowlists enforced by nftables
 egressd limits where each service user on a Linux host may connect out to.
 The administrator writes, per service user, an allowlist of host:port
 destinations; egressd resolves the names (the hosts file first, then DNS,
 honouring TTLs) and keeps an nftables table current in atomic netlink
 transactions. Everything else the user sends is logged, then rejected.
 .
 The package installs and starts the daemon with an empty allow directory:
 nobody is restricted until an allowlist is written to /etc/egressd/allow.d.
`, version, arch, maintainer, (size+1023)/1024, depends(bin))
	if err := st.file("DEBIAN/control", []byte(control), 0o644, false); err != nil {
		return "", err
	}
	if err := st.touchAll(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", err
	}
	deb := filepath.Join(o.Out, fmt.Sprintf("egressd_%s_%s.deb", version, arch))
	cmd := exec.Command("dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", rel.Date.Unix()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb: %v\n%s", err, out)
	}
	return deb, nil
}

// packagedUnit points the repository's unit at the packaged binary: the
// unit in the source tree is written for a manual install in /usr/local/bin.
var execStartRE = regexp.MustCompile(`(?m)^(ExecStart=)\S*/egressd( |$)`)

func packagedUnit(unit []byte) ([]byte, error) {
	if !execStartRE.Match(unit) {
		return nil, errors.New("egressd.service: no ExecStart=.../egressd line to point at /usr/bin/egressd")
	}
	unit = execStartRE.ReplaceAll(unit, []byte("${1}/usr/bin/egressd${2}"))
	// The comments' examples (the start gate) too: operators copy them.
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/egressd"), []byte("/usr/bin/egressd"))
	return bytes.ReplaceAll(unit, []byte("Install as /etc/systemd/system/egressd.service."),
		[]byte("Installed by the egressd package; override with systemctl edit egressd.")), nil
}

// depends is the package's Depends: libc6 when the binary links it (cgo:
// os/user then asks NSS, so LDAP and sssd users work), with the version
// dpkg-shlibdeps computes when it is installed.
func depends(bin string) string {
	out, err := exec.Command("objdump", "-p", bin).Output()
	if err != nil || !bytes.Contains(out, []byte("NEEDED")) {
		if err == nil {
			return "init-system-helpers (>= 1.54)"
		}
	}
	libc := "libc6 (>= 2.34)"
	if _, err := exec.LookPath("dpkg-shlibdeps"); err == nil {
		if v := shlibdeps(bin); v != "" {
			libc = v
		}
	}
	return libc + ", init-system-helpers (>= 1.54)"
}

func shlibdeps(bin string) string {
	dir, err := os.MkdirTemp("", "egressd-shlibdeps-")
	if err != nil {
		return ""
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "debian"), 0o755); err != nil {
		return ""
	}
	if err := os.WriteFile(filepath.Join(dir, "debian/control"), []byte("Source: egressd\n\nPackage: egressd\nArchitecture: any\n"), 0o644); err != nil {
		return ""
	}
	cmd := exec.Command("dpkg-shlibdeps", "-O", bin)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	_, v, ok := strings.Cut(strings.TrimSpace(string(out)), "shlibs:Depends=")
	if !ok {
		return ""
	}
	return v
}

type stager struct {
	root  string
	mtime time.Time
}

func (s stager) file(rel string, data []byte, mode fs.FileMode, gz bool) error {
	if gz {
		var b bytes.Buffer
		w, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
		if err != nil {
			return err
		}
		// No name and no time in the header (gzip -n): reproducible.
		if _, err := w.Write(data); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		data = b.Bytes()
	}
	p := filepath.Join(s.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode) // umask-proof
}

// md5sums lists every file outside DEBIAN and returns the installed size in bytes.
func (s stager) md5sums() ([]byte, int64, error) {
	var lines []string
	var size int64
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		if rel == "DEBIAN" && d.IsDir() {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		size += max(info.Size(), 1024) // dpkg counts at least a block per entry
		if d.IsDir() || rel == "etc/egressd/egressd.yaml" {
			return nil // conffiles have their own checksums
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := md5.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%x  %s", h.Sum(nil), rel))
		return nil
	})
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n") + "\n"), size, err
}

// touchAll sets every path's time to the commit's: reproducible archives.
func (s stager) touchAll() error {
	return filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, s.mtime, s.mtime)
	})
}
