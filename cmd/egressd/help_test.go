package main

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/manual"
)

func runCmd(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

var optionRE = regexp.MustCompile(`(?m)^  (--[a-z-]+)`)

// One help system (issue 25): every command answers -h and --help with its
// short help on stdout and exit 0, GNU style (--options), with the options
// its synopsis names; a wrong option is an error on stderr, exit 2.
func TestHelpEveryCommand(t *testing.T) {
	for name := range commands {
		for _, h := range []string{"--help", "-h"} {
			code, out, errs := runCmd(name, h)
			if code != 0 || errs != "" || !strings.HasPrefix(out, "Usage:\n  egressd "+name) || !strings.Contains(out, "  -h, --help ") {
				t.Errorf("egressd %s %s: exit %d, stderr %q, stdout:\n%s", name, h, code, errs, out)
				continue
			}
			if regexp.MustCompile(`(?m)^\s+-[a-z][a-z-]+`).MatchString(out) || strings.Contains(out, "SYNOPSIS") {
				t.Errorf("egressd %s %s: single-dash options or the whole manual:\n%s", name, h, out)
			}
		}
		_, out, _ := runCmd(name, "--help")
		if _, viaHelp, _ := runCmd("help", name); viaHelp != out {
			t.Errorf("egressd help %s differs from egressd %s --help", name, name)
		}
		syn := strings.Join(manual.Egressd.Synopsis(name), "\n")
		if syn == "" {
			t.Errorf("%s is in no synopsis", name)
		}
		_, opts, _ := strings.Cut(out, "\nOptions:\n")
		for _, m := range optionRE.FindAllStringSubmatch(opts, -1) {
			if m[1] != "--help" && !strings.Contains(syn, m[1]+" ") && !strings.Contains(syn, m[1]+"]") && !strings.HasSuffix(syn, m[1]) {
				t.Errorf("egressd %s takes %s, which its synopsis does not name:\n%s", name, m[1], syn)
			}
		}
		// Completion offers exactly the options the command takes.
		var want, got []string
		for _, m := range optionRE.FindAllStringSubmatch(opts, -1) {
			if m[1] != "--help" {
				want = append(want, m[1])
			}
		}
		found := false
		for _, c := range manual.Commands {
			if c.Name == name {
				found = true
				for _, f := range c.Flags {
					got = append(got, f.Name)
				}
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		if !found || strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("completion of %s offers %v (found %v), the command takes %v", name, got, found, want)
		}
		code, out, errs := runCmd(name, "--no-such-option")
		if code != 2 || out != "" || !strings.Contains(errs, "egressd "+name+": unknown option --no-such-option\nRun 'egressd "+name+" --help' for usage.") {
			t.Errorf("egressd %s --no-such-option: exit %d, stdout %q, stderr %q", name, code, out, errs)
		}
	}
}

// egressd alone, --help, help and an unknown command.
func TestHelpTopLevel(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errs := runCmd(args...)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "Usage: egressd COMMAND") {
			t.Errorf("egressd %v: exit %d, stderr %q\n%s", args, code, errs, out)
		}
		for name := range commands {
			if !strings.Contains(out, "\n  "+name+" ") {
				t.Errorf("egressd %v does not list %s:\n%s", args, name, out)
			}
		}
		if len(strings.Split(out, "\n")) > 40 {
			t.Errorf("egressd %v: %d lines, want a short overview", args, len(strings.Split(out, "\n")))
		}
	}
	// No command: the overview on stderr (a usage error), not the manual.
	if code, out, errs := runCmd(); code != 2 || out != "" || !strings.HasPrefix(errs, "Usage: egressd COMMAND") || strings.Contains(errs, "EXIT STATUS") {
		t.Errorf("egressd: exit %d, stdout %q, stderr:\n%s", code, out, errs)
	}
	if code, _, errs := runCmd("frobnicate"); code != 2 || errs != "egressd: unknown command \"frobnicate\"\nRun 'egressd --help' for the commands.\n" {
		t.Errorf("egressd frobnicate: exit %d, stderr %q", code, errs)
	}
	// The manuals, in full, where asked for.
	if code, out, _ := runCmd("help", "egressd"); code != 0 || !strings.Contains(out, "EXIT STATUS") {
		t.Errorf("egressd help egressd: exit %d", code)
	}
	if code, out, _ := runCmd("help", "egressd.yaml"); code != 0 || !strings.Contains(out, "ALLOWLISTS") {
		t.Errorf("egressd help egressd.yaml: exit %d", code)
	}
	if code, _, errs := runCmd("help", "nosuch"); code != 2 || !strings.Contains(errs, "Run 'egressd help --help'") {
		t.Errorf("egressd help nosuch: exit %d, %q", code, errs)
	}
}
