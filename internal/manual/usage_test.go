package manual

import (
	"bytes"
	"strings"
	"testing"
)

// tool is a small page in the shape of egressd(8): the short help comes
// from its SYNOPSIS and COMMANDS.
var tool = &Page{Name: "tool", Section: "8", Sections: []Section{
	{"NAME", []Block{P(`tool - does things to other things`)}},
	{"SYNOPSIS", []Block{Pre(`
tool run [--config FILE]
tool check [--json]
     [--explain USER HOST]
tool checkpoint
`)}},
	{"COMMANDS", []Block{
		Item("run", `Runs the thing. Then more about running.`),
		Item("check", `Checks the thing, then says so.

A second paragraph.`),
		Item("check --explain USER HOST", `Explains a decision.`),
		Item("checkpoint", `Saves the state of every allowlist of the daemon to a file that survives a reboot: the next start reads it; see FILES.`),
	}},
}}

func TestSynopsis(t *testing.T) {
	got := strings.Join(tool.Synopsis("check"), "|")
	// Continuation lines belong to their command; "checkpoint" is another command.
	if want := "tool check [--json]|     [--explain USER HOST]"; got != want {
		t.Errorf("Synopsis(check) = %q, want %q", got, want)
	}
	if got := tool.Synopsis("nope"); len(got) != 0 {
		t.Errorf("Synopsis(nope) = %q, want nothing", got)
	}
}

func TestCommandsAndSummary(t *testing.T) {
	if got := strings.Join(tool.Commands(), " "); got != "run check checkpoint" {
		t.Errorf("Commands() = %q, want each once, in order", got)
	}
	for cmd, want := range map[string]string{
		"run":   "Runs the thing",                 // the first sentence
		"check": "Checks the thing, then says so", // no ". ": the whole paragraph less its full stop
		// Too long for one line: cut at the first clause that explains.
		"checkpoint": "Saves the state of every allowlist of the daemon to a file that survives a reboot",
		"nope":       "",
	} {
		if got := tool.Summary(cmd); got != want {
			t.Errorf("Summary(%s) = %q, want %q", cmd, got, want)
		}
	}
}

func TestWriteUsage(t *testing.T) {
	var b bytes.Buffer
	tool.WriteUsage(&b, "check", []string{"  --json   print JSON"})
	want := `Usage:
  tool check [--json]
       [--explain USER HOST]

  Checks the thing, then says so.

  A second paragraph.

check --explain USER HOST:
  Explains a decision.

Options:
  --json   print JSON

The full manual: man tool (or tool help tool).
`
	if b.String() != want {
		t.Errorf("WriteUsage:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	tool.WriteUsage(&b, "run", nil)
	if strings.Contains(b.String(), "Options:") {
		t.Errorf("WriteUsage without options prints an Options heading:\n%s", b.String())
	}
}

func TestWriteOverview(t *testing.T) {
	var b bytes.Buffer
	tool.WriteOverview(&b)
	out := b.String()
	for _, want := range []string{
		"Usage: tool COMMAND [OPTIONS] [ARGUMENTS]\n\ndoes things to other things\n\nCommands:\n",
		"  run         Runs the thing\n",
		"  check       Checks the thing, then says so\n",
		// Wrapped under its column.
		"  checkpoint  Saves the state of every allowlist of the daemon to a file that\n              survives a reboot\n",
		"Run 'tool COMMAND --help' for a command's options.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteOverview lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if len(l) > width {
			t.Errorf("line over %d columns: %q", width, l)
		}
	}
}

// The real page: every command it lists has a synopsis and a summary, so
// `egressd COMMAND --help` is never empty.
func TestEgressdUsageComplete(t *testing.T) {
	cmds := Egressd.Commands()
	if len(cmds) < 5 {
		t.Fatalf("egressd(8) lists %d commands: %v", len(cmds), cmds)
	}
	for _, c := range cmds {
		if len(Egressd.Synopsis(c)) == 0 {
			t.Errorf("%s: no SYNOPSIS line", c)
		}
		if Egressd.Summary(c) == "" {
			t.Errorf("%s: no summary", c)
		}
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		text string
		w    int
		want string
	}{
		{"a bb ccc dddd", 6, "a bb|ccc|dddd"},
		{"averyveryverylongword x", 5, "averyveryverylongword|x"}, // a longer word stands alone
		{"", 10, ""},
		{"  spaced   out  ", 20, "spaced out"},
	} {
		if got := strings.Join(Wrap(tc.text, tc.w), "|"); got != tc.want {
			t.Errorf("Wrap(%q, %d) = %q, want %q", tc.text, tc.w, got, tc.want)
		}
	}
}
