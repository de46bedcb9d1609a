package systemd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/systest/nspawn"
)

// readmeInstall returns the commands of the README's "Installation" / "From
// source" section, one argument list each: its sh blocks, with
// continuations joined, comments dropped and "&&" split. A redirection
// ("> FILE") is kept as the last two arguments.
func readmeInstall(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n## Installation\n")
	if i < 0 {
		t.Fatal("README has no installation section")
	}
	s = s[i+1:]
	if j := strings.Index(s[3:], "\n## "); j >= 0 {
		s = s[:j+3]
	}
	i = strings.Index(s, "\n### From source\n")
	if i < 0 {
		t.Fatal("README's installation section has no \"From source\" part")
	}
	s = s[i+1:]
	var cmds [][]string
	for _, block := range strings.Split(s, "```sh\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		block = strings.ReplaceAll(block, "\\\n", " ")
		for _, line := range strings.Split(block, "\n") {
			if k := strings.Index(line, " #"); k >= 0 {
				line = line[:k]
			}
			for _, part := range strings.Split(line, "&&") {
				if f := strings.Fields(part); len(f) > 0 {
					cmds = append(cmds, f)
				}
			}
		}
	}
	return cmds
}

// installPerREADME runs the README's installation steps in the container,
// from the repository (bind-mounted at /src). The binary is already in
// place (bind-mounted where `go build -o` puts it), and the editor step
// writes the given allowlist.
func installPerREADME(t *testing.T, c *container, allowlist string) {
	t.Helper()
	cmds := readmeInstall(t)
	if len(cmds) < 8 {
		t.Fatalf("README installation steps: %d commands, expected more: %v", len(cmds), cmds)
	}
	for _, cmd := range cmds {
		switch {
		case cmd[0] == "go":
			if cmd[len(cmd)-2] != "/usr/local/bin/egressd" && !contains(cmd, "/usr/local/bin/egressd") {
				t.Fatalf("README builds egressd elsewhere than egressd.service runs it: %v", cmd)
			}
			continue // the freshly built binary is bind-mounted there
		case cmd[0] == "$EDITOR":
			c.Write(cmd[1], allowlist, 0o644)
			continue
		}
		var redirect string
		if n := len(cmd); n > 2 && cmd[n-2] == ">" {
			cmd, redirect = cmd[:n-2], cmd[n-1]
		}
		args := append([]string{"env", "--chdir=/src"}, cmd...)
		stdout, stderr, err := c.RunSplit(args...)
		audit := contains(cmd, "--audit")
		if err != nil && !(audit && nspawn.ExitCode(err) == 1) { // audit: 1 means findings, reported below
			t.Fatalf("README step %q: %v\n%s%s", strings.Join(cmd, " "), err, stdout, stderr)
		}
		t.Logf("README: %s\n%s%s", strings.Join(cmd, " "), indent(stderr), indent(stdout))
		if redirect != "" {
			if _, err := os.Stat(filepath.Join(c.Root, filepath.Dir(redirect))); err != nil {
				t.Fatalf("README step %q: the shell could not open %s: %v", strings.Join(cmd, " "), redirect, err)
			}
			c.Write(redirect, stdout, 0o644)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// The README says what `go test ./...` does as root here: the download
// and the disk space of this tier's root file systems, how to leave the
// tier out and how to delete the cache (issue 25).
func TestREADMESaysWhatTheTierCosts(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	quick, _, _ := strings.Cut(string(b), "\n## Installation")
	for _, want := range []string{"go test -timeout 30m ./...", "debootstrap", cacheDir, "grep -v -e /integration/systemd -e /integration/fleet", "rm -rf " + cacheDir} {
		if !strings.Contains(quick, want) {
			t.Errorf("README before Installation does not say %q", want)
		}
	}
}
