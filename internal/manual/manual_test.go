package manual

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
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

// needTool finds a tool the real-shell completion tests need: skipped when
// missing, failed when EGRESSD_REQUIRE_SYSTEM_TESTS=1 (CI installs them).
func needTool(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
			t.Fatalf("%s missing, and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping (apt-get install bash-completion zsh)", path)
		}
		t.Skipf("%s missing (apt-get install bash-completion zsh)", path)
	}
}

// completionFixture: a configuration whose allow directory holds NAME.yaml
// and NAME.yml allowlists (and a file that is not one), another whose
// allow_dir: names a directory of its own, and a unit file.
func completionFixture(t *testing.T) (dir string) {
	dir = t.TempDir()
	for p, body := range map[string]string{
		"conf/egressd.yaml": "", "conf/allow.d/billing.yaml": "", "conf/allow.d/web.yml": "", "conf/allow.d/notes.txt": "",
		"conf2.yaml": "allow_dir: \"other\"  # not allow.d\n", "other/x1.yaml": "", "other/x2.yml": "", "unit.service": "",
	} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// completionCases: the command line (completed at its end) and what real
// completion must offer, for both shells (issue 25: harden --unit-file was
// missing; --allowlist knew only *.yaml in /etc).
func completionCases(dir string) []struct{ line, want string } {
	return []struct{ line, want string }{
		{"egressd harden --unit-", "--unit-file"},
		{"egressd harden --unit-file " + dir + "/uni", dir + "/unit.service"},
		{"egressd harden --config " + dir + "/conf/egressd.yaml --allowlist ", "billing web"},
		{"egressd wait --config " + dir + "/conf2.yaml --allowlist ", "x1 x2"},
		{"egressd wait --u", "--unit --user"},
		{"egressd man ", "5 8"},
		{"egressd help egressd", "egressd egressd.yaml"},
		{"egressd completion ", "bash zsh"},
	}
}

func sortedFields(s string) string {
	f := strings.Fields(s)
	sort.Strings(f)
	return strings.Join(f, " ")
}

// The bash completion under the real bash-completion (its _init_completion
// and _filedir).
func TestBashCompletionReal(t *testing.T) {
	const lib = "/usr/share/bash-completion/bash_completion"
	needTool(t, lib)
	dir := completionFixture(t)
	var script bytes.Buffer
	WriteBash(&script)
	if err := os.WriteFile(filepath.Join(dir, "egressd.bash"), script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range completionCases(dir) {
		words := strings.Fields(c.line)
		if strings.HasSuffix(c.line, " ") {
			words = append(words, "")
		}
		cmd := exec.Command("bash", "-c", `source "$1"; source "$2"; shift 2
COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
_egressd; echo "${COMPREPLY[*]}"`, "bash", lib, filepath.Join(dir, "egressd.bash"))
		cmd.Args = append(cmd.Args, words...)
		out, err := cmd.CombinedOutput()
		if err != nil || sortedFields(string(out)) != c.want {
			t.Errorf("bash: %q: %v %q, want %q", c.line, err, out, c.want)
		}
	}
}

// The zsh completion under real zsh (compinit, in a pseudo-terminal:
// testdata/complete.zsh).
func TestZshCompletionReal(t *testing.T) {
	needTool(t, "/usr/bin/zsh")
	dir := completionFixture(t)
	var script bytes.Buffer
	WriteZsh(&script)
	if err := os.WriteFile(filepath.Join(dir, "_egressd"), script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	helper, err := filepath.Abs("testdata/complete.zsh")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range completionCases(dir) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, "zsh", "-f", helper, dir, c.line)
		cmd.Env = append(os.Environ(), "HOME="+dir) // compinit -D: no dump; nothing of the user's
		out, err := cmd.Output()
		cancel()
		want := strings.ReplaceAll(c.want, dir+"/", "") // zsh's file matches are names in their directory
		if err != nil || sortedFields(string(out)) != want {
			t.Errorf("zsh: %q: %v %q, want %q", c.line, err, out, want)
		}
	}
}

// Where metrics_listen is documented, the port egressd.service lets the
// daemon bind is said (issue 25: SocketBindAllow= silently blocked others).
func TestMetricsPortOfTheUnitDocumented(t *testing.T) {
	unit, err := os.ReadFile("../../egressd.service")
	if err != nil {
		t.Fatal(err)
	}
	var allow []string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "SocketBindAllow="); ok {
			allow = append(allow, "SocketBindAllow="+v)
		}
	}
	txt := strings.Join(strings.Fields(Config.Text()), " ")
	for _, a := range allow {
		if !strings.Contains(txt, a) {
			t.Errorf("egressd.service has %s, which egressd.yaml(5) does not say", a)
		}
	}
	if len(allow) > 0 && !strings.Contains(txt, "SocketBindAllow=tcp:PORT") {
		t.Error("egressd.yaml(5) does not say how to allow another metrics port")
	}
}
