package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/systest"
)

// tool finds a command of the Ansible tier: skip without it, unless CI
// (EGRESSD_REQUIRE_SYSTEM_TESTS=1, .ci/run installs Debian's ansible-core and
// ansible-lint).
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
			t.Fatalf("%s is missing (apt-get install ansible-core ansible-lint), and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping", name)
		}
		t.Skipf("%s is not installed (apt-get install ansible-core ansible-lint)", name)
	}
	return p
}

// The collection is ansible-lint clean (its production profile) and builds.
func TestAnsibleLintAndBuild(t *testing.T) {
	lint := exec.Command(tool(t, "ansible-lint"), "--nocolor")
	lint.Dir = "ansible"
	lint.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_LOCAL_TEMP="+t.TempDir())
	if out, err := lint.CombinedOutput(); err != nil {
		t.Errorf("ansible-lint: %v\n%s", err, out)
	}
	out := t.TempDir()
	build := exec.Command(tool(t, "ansible-galaxy"), "collection", "build", "--output-path", out)
	build.Dir = "ansible"
	build.Env = lint.Env
	if b, err := build.CombinedOutput(); err != nil {
		t.Errorf("ansible-galaxy collection build: %v\n%s", err, b)
	}
	if m, _ := filepath.Glob(filepath.Join(out, "egressd-egressd-*.tar.gz")); len(m) != 1 {
		t.Errorf("no egressd-egressd-*.tar.gz built: %v", m)
	}
	// The role ships the check timer's units as deploy/prometheus has them.
	for _, f := range []string{"egressd-check.service", "egressd-check.timer"} {
		a, _ := os.ReadFile(filepath.Join("prometheus", f))
		b, _ := os.ReadFile(filepath.Join("ansible/roles/egressd/files", f))
		if len(a) == 0 || string(a) != string(b) {
			t.Errorf("ansible/roles/egressd/files/%s differs from prometheus/%s", f, f)
		}
	}
}

type play struct {
	t    *testing.T
	dir  string // the host's configuration directory
	env  []string
	bin  string
	tool string
}

var recapRE = regexp.MustCompile(`ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// run runs the role on this host (connection local) against a throwaway
// configuration directory, with extra vars as YAML, and returns changed,
// failed and the output.
func (p *play) run(vars string, args ...string) (changed, failed int, out string) {
	p.t.Helper()
	pb := filepath.Join(filepath.Dir(p.dir), "play.yml")
	body := fmt.Sprintf(`- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    egressd_install: false
    egressd_manage_service: false
    egressd_binary: %s
    egressd_config_dir: %s
    egressd_systemd_dir: %s
    egressd_config: {resolvers: ["192.0.2.53"]}
%s
  roles:
    - egressd.egressd.egressd
`, p.bin, p.dir, filepath.Join(filepath.Dir(p.dir), "systemd"), indent(vars, "    "))
	if err := os.WriteFile(pb, []byte(body), 0o644); err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.tool, append([]string{"-i", "localhost,", pb}, args...)...)
	cmd.Env = p.env
	b, _ := cmd.CombinedOutput()
	m := recapRE.FindStringSubmatch(string(b))
	if m == nil {
		p.t.Fatalf("ansible-playbook printed no recap:\n%s", b)
	}
	fmt.Sscan(m[2], &changed)
	fmt.Sscan(m[4], &failed)
	return changed, failed, string(b)
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n")
}

func (p *play) read(rel string) string {
	b, _ := os.ReadFile(filepath.Join(p.dir, rel))
	return string(b)
}

// The role on a real host (this one, connection local, confined to a
// throwaway configuration directory): files land validated; a second run
// changes nothing; check mode with --diff shows a change and makes none; a
// bad allowlist is stopped by egressd validate and the host keeps its files;
// group and host variables compose; egressd harden writes the drop-in.
func TestAnsibleRole(t *testing.T) {
	systest.Require(t) // the configuration directory passes the trust rules under /run
	pb := tool(t, "ansible-playbook")
	root, err := config.TrustedTempDir("egressd-ansible-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	bin := filepath.Join(root, "egressd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/egressd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	coll := filepath.Join(root, "collections", "ansible_collections", "egressd")
	if err := os.MkdirAll(coll, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("ansible")
	if err := os.Symlink(abs, filepath.Join(coll, "egressd")); err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(root, "etc")
	os.Mkdir(etc, 0o755) //nolint:errcheck
	p := &play{t: t, dir: etc, bin: bin, tool: pb, env: append(os.Environ(), "ANSIBLE_COLLECTIONS_PATH="+filepath.Join(root, "collections"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(root, "atmp"), "ANSIBLE_REMOTE_TEMP="+t.TempDir(), "ANSIBLE_NOCOLOR=1", "HOME="+root)}

	const good = `egressd_lists: {os: ["deb.debian.org:80"]}
egressd_allowlists:
  billing: {user: billing, allow: ["api.example.com:443"], include: [os], tests: {allow: ["deb.debian.org:80"], deny: ["api.example.com:22"]}}
egressd_allowlists__web:
  web: {user: www-data, allow: ["198.51.100.0/24:8000-8100", "[2001:db8::1]:53/udp"]}
egressd_harden:
  billing.service: {user: billing, allowlist: billing, writable: [/var/lib/billing]}`
	if changed, failed, out := p.run(good); failed != 0 || changed == 0 {
		t.Fatalf("first run: changed=%d failed=%d\n%s", changed, failed, out)
	}
	if _, err := config.LoadTrusted(filepath.Join(etc, "egressd.yaml"), true, config.Trust{}); err != nil {
		t.Fatalf("the files the role wrote do not load: %v", err)
	}
	billing, web := p.read("allow.d/billing.yaml"), p.read("allow.d/web.yaml")
	if !strings.Contains(billing, "api.example.com:443") || !strings.Contains(web, "198.51.100.0/24:8000-8100") || !strings.Contains(p.read("lists/os.yaml"), "deb.debian.org:80") {
		t.Fatalf("files:\n%s\n%s", billing, web)
	}
	dropIn, _ := os.ReadFile(filepath.Join(root, "systemd", "billing.service.d", "egressd-hardening.conf"))
	if !strings.Contains(string(dropIn), "\nUser=billing\n") || !strings.Contains(string(dropIn), "egressd wait --user billing") {
		t.Errorf("the hardening drop-in of billing.service:\n%s", dropIn)
	}

	if changed, failed, out := p.run(good); changed != 0 || failed != 0 {
		t.Errorf("second run: changed=%d failed=%d, want 0 and 0\n%s", changed, failed, out)
	}

	wider := strings.Replace(good, `"api.example.com:443"]`, `"api.example.com:443", "api.example.com:8443"]`, 1)
	changed, failed, out := p.run(wider, "--check", "--diff")
	if changed != 1 || failed != 0 || !strings.Contains(out, "+- api.example.com:8443") {
		t.Errorf("--check --diff: changed=%d failed=%d, want the new entry in the diff\n%s", changed, failed, out)
	}
	if p.read("allow.d/billing.yaml") != billing {
		t.Error("check mode changed the file")
	}

	// A change that breaks billing's tests: (port 22 allowed) is refused by
	// validate before it replaces the file.
	broken := strings.Replace(good, `"api.example.com:443"]`, `"api.example.com:1-65535"]`, 1)
	changed, failed, out = p.run(broken)
	if failed == 0 || !strings.Contains(out, "tests.deny: api.example.com:22 is allowed by entry") {
		t.Errorf("a broken test: changed=%d failed=%d, want the task failed by validate\n%s", changed, failed, out)
	}
	if p.read("allow.d/billing.yaml") != billing {
		t.Error("the refused allowlist replaced the installed one")
	}

	// Two variables defining one file: refused before anything is written.
	twice := good + "\negressd_allowlists__more: {web: {user: other, allow: []}}"
	if changed, failed, out := p.run(twice); failed == 0 || changed != 0 || !strings.Contains(out, "defined by more than one") {
		t.Errorf("a name defined twice: changed=%d failed=%d\n%s", changed, failed, out)
	}
}
