package manual

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestTextLayout(t *testing.T) {
	txt := Egressd.Text()
	for _, want := range []string{
		"NAME\n    egressd - per-service egress allowlists",
		"\nCOMMANDS\n    run       Run the daemon in the foreground",
		"\n    check --explain USER|UNIT HOST:PORT[/udp]\n              Would USER (or the unit",
		"\n    egressd run [--config FILE] [--once]",
		"\n                   [--allowlist NAME [--keep-system-bus]] [--unit NAME]\n",
	} {
		if !strings.Contains(txt, want) {
			t.Errorf("help text lacks %q", want)
		}
	}
	for i, l := range strings.Split(txt, "\n") {
		if len(l) > 80 {
			t.Errorf("line %d is %d characters: %q", i+1, len(l), l)
		}
	}
}

// Every flag that completion offers is documented in the manual.
func TestCompletionFlagsDocumented(t *testing.T) {
	txt := Egressd.Text()
	for _, c := range Commands {
		if !strings.Contains(txt, "egressd "+c.Name) {
			t.Errorf("command %s is not in the SYNOPSIS", c.Name)
		}
		for _, f := range c.Flags {
			if !strings.Contains(txt, f.Name) {
				t.Errorf("%s %s is not in the manual", c.Name, f.Name)
			}
		}
	}
}

func TestRoffEscapes(t *testing.T) {
	p := &Page{Name: "x", Section: "1", Title: "T", Sections: []Section{
		{"NAME", []Block{P(`x - a "thing"`)}},
		{"S", []Block{P(`.starts with a dot and has a \ backslash`), Item("--flag", "text"), Pre(".nf\n'quote")}},
	}}
	r := p.Roff("v1")
	for _, want := range []string{`.TH X 1 "" "egressd v1" "T"`, "\\&.starts with a dot and has a \\e backslash", ".TP\n\\fB\\-\\-flag\\fR\ntext", "\\&.nf\n\\&'quote", `x \- a "thing"`} {
		if !strings.Contains(r, want) {
			t.Errorf("roff lacks %q:\n%s", want, r)
		}
	}
}

// The man pages are valid to groff (and to man, when installed): warnings fail.
func TestManPagesRender(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed (apt-get install groff-base)")
	}
	for sec, p := range Pages {
		var out, errb bytes.Buffer
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(p.Roff("v0.0.0-test")), &out, &errb
		if err := cmd.Run(); err != nil || errb.Len() > 0 {
			t.Errorf("%s(%s): groff: %v\n%s", p.Name, sec, err, errb.String())
		}
	}
}

func TestCompletionsParse(t *testing.T) {
	var b bytes.Buffer
	WriteBash(&b)
	if bash, err := exec.LookPath("bash"); err == nil {
		cmd := exec.Command(bash, "-n")
		cmd.Stdin = &b
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("bash -n: %v\n%s", err, out)
		}
	}
	b.Reset()
	WriteZsh(&b)
	if !strings.HasPrefix(b.String(), "#compdef egressd\n") {
		t.Error("zsh completion must start with #compdef")
	}
	if zsh, err := exec.LookPath("zsh"); err == nil {
		cmd := exec.Command(zsh, "-n")
		cmd.Stdin = &b
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	}
}

// The bash completion completes commands, flags and values (bash-completion's
// helpers stubbed).
func TestBashCompletionBehaviour(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	var script bytes.Buffer
	script.WriteString(`_init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
_filedir() { COMPREPLY=(FILES); }
`)
	WriteBash(&script)
	script.WriteString(`t() { COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); COMPREPLY=(); _egressd; echo "${COMPREPLY[*]}"; }
t egressd ch
t egressd run --log-level ""
t egressd check --
t egressd harden --config ""
t egressd completion ""
`)
	out, err := exec.Command(bash, "-c", script.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "check\ndebug info warn error\n--config --json --runtime-dir --explain --textfile\nFILES\nbash zsh\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}
