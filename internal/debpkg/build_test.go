package debpkg

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/manual"
)

var raceEnabled bool

func TestDebVersion(t *testing.T) {
	for _, tc := range []struct {
		describe string
		tagged   bool
		want     string
	}{
		{"v1.2.3", true, "1.2.3-1"},
		{"v1.2.3-4-gabcdef0", true, "1.2.3+git4.gabcdef0-1"},
		{"v1.2.3-4-gabcdef0-dirty", true, "1.2.3+git4.gabcdef0+dirty-1"},
		{"v1.2.3-rc.1", true, "1.2.3~rc.1-1"},
		{"v1.2.3-rc.1-2-gabcdef0", true, "1.2.3~rc.1+git2.gabcdef0-1"},
		{"69a0c26", false, "0~git.69a0c26-1"},
		{"69a0c26-dirty", false, "0~git.69a0c26+dirty-1"},
	} {
		if got := debVersion(tc.describe, tc.tagged); got != tc.want {
			t.Errorf("debVersion(%q) = %q, want %q", tc.describe, got, tc.want)
		}
	}
	// Order: untagged < release < later commits < next release.
	if dpkg, err := exec.LookPath("dpkg"); err == nil {
		order := []string{"0~git.69a0c26-1", "1.2.3~rc.1-1", "1.2.3~rc.1+git2.gabcdef0-1", "1.2.3-1", "1.2.3+git4.gabcdef0-1", "1.2.4-1"}
		for i := 1; i < len(order); i++ {
			if err := exec.Command(dpkg, "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
				t.Errorf("dpkg: %s is not before %s", order[i-1], order[i])
			}
		}
	}
}

func TestPackagedUnit(t *testing.T) {
	got, err := packagedUnit([]byte("[Service]\nExecStart=/usr/local/bin/egressd run\nExecReload=/bin/kill -HUP $MAINPID\n"))
	if err != nil || !strings.Contains(string(got), "\nExecStart=/usr/bin/egressd run\n") {
		t.Errorf("%v\n%s", err, got)
	}
	if _, err := packagedUnit([]byte("[Service]\nExecStart=/bin/true\n")); err == nil {
		t.Error("a unit without egressd in ExecStart was accepted")
	}
	unit, err := os.ReadFile("../../egressd.service")
	if err != nil {
		t.Fatal(err)
	}
	got, err = packagedUnit(unit)
	if err != nil {
		t.Errorf("the repository's egressd.service: %v", err)
	}
	// Its comments too: an operator copies the start gate from them.
	if strings.Contains(string(got), "/usr/local/bin") || !strings.Contains(string(got), "ExecStartPre=+/usr/bin/egressd wait") {
		t.Errorf("the packaged unit still names /usr/local/bin or lost the start gate's example:\n%s", got)
	}
}

// The packaged egressd.yaml shows every key of the main file, each with its
// default, commented out: uncommented, it parses to exactly the defaults.
func TestPackagedConfigIsDefaults(t *testing.T) {
	data, err := os.ReadFile("../../packaging/deb/egressd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keyRE := regexp.MustCompile(`^#([a-z_]+): `)
	example := map[string]bool{"resolvers": true, "metrics_listen": true, "metrics_socket_mode": true, "metrics_socket_group": true, "state_group": true}
	var active, uncommented []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := sc.Text()
		if l != "" && !strings.HasPrefix(l, "#") {
			active = append(active, l)
		}
		// resolvers, metrics_listen and the groups show an example: their
		// defaults are "from /etc/resolv.conf", "off" and "egressd's own";
		// the socket's mode applies to a unix metrics_listen only.
		if m := keyRE.FindStringSubmatch(l); m != nil && !example[m[1]] {
			uncommented = append(uncommented, l[1:])
		}
	}
	if len(active) > 0 {
		t.Errorf("lines not commented out: %q", active)
	}
	file := "/etc/egressd/egressd.yaml"
	got, err := config.ParseMain(file, []byte(strings.Join(uncommented, "\n")))
	if err != nil {
		t.Fatalf("uncommented defaults do not parse: %v", err)
	}
	want, _ := config.ParseMain(file, nil)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("uncommented file differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	for _, k := range config.MainKeys() {
		if !regexp.MustCompile(`(?m)^#` + k + `: `).Match(data) {
			t.Errorf("key %s is not shown in the packaged egressd.yaml", k)
		}
	}
}

func TestExamplesParse(t *testing.T) {
	data, err := os.ReadFile("../../packaging/deb/examples/billing.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.ParseAllowlist("billing.yaml", "billing", data); err != nil {
		t.Errorf("example allowlist: %v", err)
	}
	data, err = os.ReadFile("../../packaging/deb/examples/lists/os-updates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.ParseList("os-updates.yaml", data); err != nil {
		t.Errorf("example list: %v", err)
	}
}

// TestDeb builds the package as make deb does and checks what it holds.
func TestDeb(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds the whole package (about a minute); not under -short or -race")
	}
	for _, tool := range []string{"dpkg-deb", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
				t.Fatalf("%s is missing (apt-get install dpkg git)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	repo, _ := filepath.Abs("../..")
	out := t.TempDir()
	rel, err := gitRelease(repo) // before the build: a commit during the test must not confuse it
	if err != nil {
		t.Fatal(err)
	}
	deb, err := Build(Options{Repo: repo, Out: out, GOARCH: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "egressd_" + debVersion(rel.Describe, rel.Tagged) + "_amd64.deb"; filepath.Base(deb) != want {
		t.Errorf("file %s, want %s", filepath.Base(deb), want)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		o, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, o)
		}
		return string(o)
	}
	info := run("dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: egressd\n", "Version: " + debVersion(rel.Describe, rel.Tagged) + "\n",
		"Architecture: amd64\n", "Depends: libc6", "init-system-helpers", " conffiles", " postinst", " prerm", " postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	contents := run("dpkg-deb", "--contents", deb)
	for path, mode := range map[string]string{
		"./usr/bin/egressd":                                      "-rwxr-xr-x",
		"./lib/systemd/system/egressd.service":                   "-rw-r--r--",
		"./etc/egressd/egressd.yaml":                             "-rw-r--r--",
		"./etc/egressd/allow.d/":                                 "drwxr-xr-x",
		"./etc/egressd/lists/":                                   "drwxr-xr-x",
		"./usr/share/doc/egressd/examples/billing.yaml":          "-rw-r--r--",
		"./usr/share/doc/egressd/copyright":                      "-rw-r--r--",
		"./usr/share/doc/egressd/changelog.Debian.gz":            "-rw-r--r--",
		"./usr/share/man/man8/egressd.8.gz":                      "-rw-r--r--",
		"./usr/share/man/man5/egressd.yaml.5.gz":                 "-rw-r--r--",
		"./usr/share/bash-completion/completions/egressd":        "-rw-r--r--",
		"./usr/share/zsh/vendor-completions/_egressd":            "-rw-r--r--",
		"./usr/share/doc/egressd/examples/lists/os-updates.yaml": "-rw-r--r--",
	} {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(mode) + ` root/root +\d+ \S+ \S+ ` + regexp.QuoteMeta(path) + `$`)
		if !re.MatchString(contents) {
			t.Errorf("contents lack %s %s root/root", mode, path)
		}
	}
	// Every document the README and the man pages name is installed
	// (issue 25), and the upstream changelog.
	docs, _ := filepath.Glob("../../docs/*.md")
	named := regexp.MustCompile(`docs/([a-z-]+\.md)`)
	readme, _ := os.ReadFile("../../README.md")
	pages := string(readme)
	for _, p := range manual.Pages {
		pages += p.Text()
	}
	for _, m := range named.FindAllStringSubmatch(pages, -1) {
		if _, err := os.Stat("../../docs/" + m[1]); err != nil {
			t.Errorf("docs/%s is named but does not exist", m[1])
		}
	}
	for _, d := range append(docs, "changelog") {
		p := "./usr/share/doc/egressd/docs/" + filepath.Base(d) + ".gz"
		if d == "changelog" {
			p = "./usr/share/doc/egressd/changelog.gz"
		}
		if !regexp.MustCompile(`(?m)^-rw-r--r-- root/root +\d+ \S+ \S+ ` + regexp.QuoteMeta(p) + `$`).MatchString(contents) {
			t.Errorf("contents lack %s", p)
		}
	}
	if strings.Contains(contents, "./etc/egressd/allow.d/billing") {
		t.Error("the package ships an allowlist in allow.d: it would restrict a user on install")
	}

	dir := t.TempDir()
	run("dpkg-deb", "--extract", deb, dir)
	ctl := filepath.Join(t.TempDir(), "DEBIAN")
	run("dpkg-deb", "--control", deb, ctl)
	if c, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); string(c) != "/etc/egressd/egressd.yaml\n" {
		t.Errorf("conffiles: %q", c)
	}
	if v := run(filepath.Join(dir, "usr/bin/egressd"), "version"); !strings.HasPrefix(v, "egressd "+rel.Describe+" (commit "+rel.Commit) {
		t.Errorf("egressd version: %q, want %s and %s", v, rel.Describe, rel.Commit)
	}
	unit, _ := os.ReadFile(filepath.Join(dir, "lib/systemd/system/egressd.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/egressd run") {
		t.Errorf("packaged unit does not start /usr/bin/egressd:\n%s", unit)
	}
	if _, err := exec.LookPath("man"); err == nil {
		for _, page := range []string{"usr/share/man/man8/egressd.8.gz", "usr/share/man/man5/egressd.yaml.5.gz"} {
			cmd := exec.Command("man", "--warnings", "-l", filepath.Join(dir, page))
			cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=0")
			o, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(o), "NAME") || strings.Contains(string(o), "warning") {
				t.Errorf("man -l %s: %v\n%s", page, err, o)
			}
		}
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run("sh", "-n", filepath.Join(ctl, s))
	}
	if lintian, err := exec.LookPath("lintian"); err == nil {
		o, _ := exec.Command(lintian, "--fail-on", "none", deb).CombinedOutput()
		for _, l := range strings.Split(string(o), "\n") {
			if strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "W:") {
				t.Errorf("lintian: %s", l)
			}
		}
	} else {
		t.Log("lintian not installed: not run")
	}
}
