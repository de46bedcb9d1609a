package debpkg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// runScript runs a maintainer script from packaging/deb with stub commands
// that log their arguments, inside a fake root (the script's /run, /var/lib
// and /etc/systemd paths are moved there; setup, when set, fills it first),
// and returns the log, the root and what the script printed.
func runScript(t *testing.T, script string, systemd bool, setup func(root string), args ...string) (string, string, string) {
	t.Helper()
	var env []string
	if strings.HasPrefix(t.Name(), "TestMaintainerScripts/disabled") {
		env = append(env, "WAS_DISABLED=1")
	}
	log, root, out, err := runScriptEnv(t, script, systemd, setup, env, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", script, args, err, out)
	}
	return log, root, out
}

// runScriptEnv is runScript with more environment (FAIL_EGRESSD=1: the
// egressd stub fails) and the script's exit status and output.
func runScriptEnv(t *testing.T, script string, systemd bool, setup func(root string), env []string, args ...string) (log, root, out string, err error) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("../../packaging/deb", script))
	if err != nil {
		t.Fatal(err)
	}
	root = t.TempDir()
	s := strings.NewReplacer("/run/", root+"/run/", "/var/lib/", root+"/var/lib/", "/etc/systemd/", root+"/etc/systemd/").Replace(string(body))
	if setup != nil {
		setup(root)
	}
	if systemd {
		if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(root, "log")
	for _, c := range []string{"deb-systemd-helper", "deb-systemd-invoke", "systemctl", "egressd"} {
		stub := "#!/bin/sh\necho \"" + c + " $*\" >> " + logf + "\n"
		if c == "egressd" {
			stub += "[ -n \"$FAIL_EGRESSD\" ] && { echo 'egressd remove: refused: the egressd daemon (pid 7) is running' >&2; exit 1; }\nexit 0\n"
		}
		if c == "deb-systemd-helper" {
			// was-enabled: true on a fresh install, as deb-systemd-helper answers.
			stub += "[ \"$1 $2\" = \"--quiet was-enabled\" ] && [ -n \"$WAS_DISABLED\" ] && exit 1\nexit 0\n"
		}
		if err := os.WriteFile(filepath.Join(bin, c), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/egressd"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", append([]string{"-c", s, script}, args...)...)
	cmd.Env = append(append(os.Environ(), "PATH="+bin+":/usr/bin:/bin"), env...)
	b, err := cmd.CombinedOutput()
	got, _ := os.ReadFile(logf)
	return string(got), root, string(b), err
}

// A table that cannot be removed fails the removal (dpkg keeps the package,
// whose binary is the one thing that can delete it), saying why and how to
// go on; never silently. EGRESSD_REMOVE_KEEP_TABLE is the operator's way out.
func TestPrermRemoveFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("prerm looks at CAP_NET_ADMIN: run as root")
	}
	_, _, out, err := runScriptEnv(t, "prerm", true, nil, []string{"FAIL_EGRESSD=1"}, "remove")
	if err == nil || !strings.Contains(out, "refused: the egressd daemon (pid 7) is running") || !strings.Contains(out, "the package stays installed") {
		t.Errorf("prerm remove with a failing egressd remove: %v\n%s\nwant a failure that says why and that the package stays", err, out)
	}
	_, _, out, err = runScriptEnv(t, "prerm", true, nil, []string{"FAIL_EGRESSD=1", "EGRESSD_REMOVE_KEEP_TABLE=1"}, "remove")
	if err != nil || !strings.Contains(out, "table inet egressd stays") {
		t.Errorf("prerm remove with EGRESSD_REMOVE_KEEP_TABLE: %v\n%s\nwant success that says the table stays", err, out)
	}
}

func TestMaintainerScripts(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		args    []string
		systemd bool
		want    string
	}{
		{"install enables and starts", "postinst", []string{"configure", ""}, true,
			"deb-systemd-helper unmask egressd.service\ndeb-systemd-helper --quiet was-enabled egressd.service\ndeb-systemd-helper enable egressd.service\n" +
				"systemctl --system daemon-reload\ndeb-systemd-invoke start egressd.service\n"},
		{"upgrade restarts", "postinst", []string{"configure", "0.9-1"}, true,
			"deb-systemd-helper unmask egressd.service\ndeb-systemd-helper --quiet was-enabled egressd.service\ndeb-systemd-helper enable egressd.service\n" +
				"systemctl --system daemon-reload\ndeb-systemd-invoke restart egressd.service\n"},
		{"disabled by the administrator stays disabled", "postinst", []string{"configure", "0.9-1"}, true,
			"deb-systemd-helper unmask egressd.service\ndeb-systemd-helper --quiet was-enabled egressd.service\ndeb-systemd-helper update-state egressd.service\n" +
				"systemctl --system daemon-reload\ndeb-systemd-invoke restart egressd.service\n"},
		{"install without systemd running starts nothing", "postinst", []string{"configure", ""}, false,
			"deb-systemd-helper unmask egressd.service\ndeb-systemd-helper --quiet was-enabled egressd.service\ndeb-systemd-helper enable egressd.service\n"},
		{"remove stops, then deletes the table", "prerm", []string{"remove"}, true,
			"deb-systemd-invoke stop egressd.service egressd.socket\negressd remove\n"},
		{"upgrade stops nothing", "prerm", []string{"upgrade", "1.1-1"}, true, ""},
		{"postrm remove", "postrm", []string{"remove"}, true,
			"systemctl --system daemon-reload\ndeb-systemd-helper mask egressd.service\n"},
		{"purge", "postrm", []string{"purge"}, false,
			"deb-systemd-helper purge egressd.service\ndeb-systemd-helper unmask egressd.service\n"},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got, root, out := runScript(t, tc.script, tc.systemd, nil, tc.args...)
			want := tc.want
			if strings.HasSuffix(want, "egressd remove\n") && !hasNetAdmin(t) {
				// Without CAP_NET_ADMIN (not root, or a container without
				// it) prerm does not try, and says how to delete the table.
				want = strings.TrimSuffix(want, "egressd remove\n")
				if !strings.Contains(out, "no CAP_NET_ADMIN here") || !strings.Contains(out, "nft delete table inet egressd") {
					t.Errorf("%s %v without CAP_NET_ADMIN said\n%s\nwant why and how to delete the table", tc.script, tc.args, out)
				}
			}
			if got != want {
				t.Errorf("%s %v ran\n%s\nwant\n%s", tc.script, tc.args, got, want)
			}
			_, err := os.Stat(filepath.Join(root, "var/lib/egressd"))
			if purged := tc.args[0] == "purge"; purged != os.IsNotExist(err) {
				t.Errorf("state directory removed: %v, want %v", os.IsNotExist(err), purged)
			}
		})
	}
}

// Issue 22: after a move from a source install to the package, every
// hardened service's start gate may still run /usr/local/bin/egressd; once
// that is gone, the service no longer starts. postinst names each unit
// whose gate runs another egressd than the package's, with the fix; a gate
// that runs the package's is not named (control).
func TestPostinstNamesForeignGates(t *testing.T) {
	gates := map[string]string{
		"etc/systemd/system/old.service.d/hardening.conf": "[Service]\nExecStartPre=+/usr/local/bin/egressd wait --user old --timeout 90s\n",
		"etc/systemd/system/pkg.service.d/hardening.conf": "[Service]\nExecStartPre=+/usr/bin/egressd wait --user pkg --timeout 90s\n",
		"etc/systemd/system/my unit.service":              "[Service]\nExecStart=/bin/true\nExecStartPre=-+/opt/egressd/bin/egressd wait --user x\n",
		"etc/systemd/system/other.service":                "[Service]\nExecStartPre=/usr/local/bin/prepare wait\n",
	}
	_, root, out := runScript(t, "postinst", true, func(root string) {
		for name, body := range gates {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}, "configure", "0.9-1")
	t.Logf("postinst printed:\n%s", out)
	for _, want := range []string{root + "/etc/systemd/system/old.service.d/hardening.conf", "/usr/local/bin/egressd",
		root + "/etc/systemd/system/my unit.service", "/opt/egressd/bin/egressd", "ExecStartPre=+/usr/bin/egressd wait"} {
		if !strings.Contains(out, want) {
			t.Errorf("postinst does not name %q", want)
		}
	}
	if strings.Contains(out, "pkg.service") || strings.Contains(out, "other.service") {
		t.Errorf("postinst names a gate that runs the package's egressd, or no gate at all")
	}
}

// hasNetAdmin says whether this process has CAP_NET_ADMIN in its effective
// set, as prerm reads it from /proc/self/status (the script's shell inherits it).
func hasNetAdmin(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", v, err)
			}
			return caps&(1<<12) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}
