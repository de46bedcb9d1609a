package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/egressd/egressd/internal/manual"
	"github.com/egressd/egressd/internal/version"
)

// One help system, from egressd(8): `egressd --help` lists the commands,
// `egressd COMMAND --help` (or `egressd help COMMAND`) prints that
// command's short help with its options, both on stdout with exit 0; a
// wrong option prints the error and a pointer to --help on stderr, exit 2.
// The long text is the manual (`egressd help egressd`, man egressd).

// helpOut is where --help prints: run sets it to its stdout.
var helpOut io.Writer = os.Stdout

// flagValues names the value of each flag in the help, as the synopsis does.
var flagValues = map[string]string{
	"config": "FILE", "runtime-dir": "DIR", "state-dir": "DIR", "unit-file": "FILE", "audit": "UNIT_FILE",
	"egressd": "PATH", "log-level": "LEVEL", "writable": "PATH", "listen": "tcp:PORT|udp:PORT", "user": "USER",
	"group": "GROUP", "unit": "UNIT", "allowlist": "NAME", "apparmor": "PROFILE", "selinux": "CONTEXT",
	"target-features": "FEATURES", "systemd-version": "N", "nproc": "N", "fsize": "SIZE",
}

// flagLines renders fs's flags GNU style: --name VALUE, then what it does.
func flagLines(fs *flag.FlagSet) []string {
	var out []string
	const col = 28 // where the text starts
	add := func(left, use string) {
		lines := manual.Wrap(use, 78-col)
		if len(left) <= col-3 {
			out = append(out, fmt.Sprintf("  %-*s %s", col-3, left, lines[0]))
		} else {
			out = append(out, "  "+left, strings.Repeat(" ", col)+lines[0])
		}
		for _, l := range lines[1:] {
			out = append(out, strings.Repeat(" ", col)+l)
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		typ, use := flag.UnquoteUsage(f)
		v, ok := flagValues[f.Name]
		if !ok {
			v = map[string]string{"duration": "DURATION", "int": "N", "uint": "N", "string": "VALUE", "value": "VALUE"}[typ]
		}
		left := "--" + f.Name
		if v != "" {
			left += " " + v
		}
		switch f.DefValue {
		case "", "false", "0", "0s", "[]":
		default:
			use += " (default " + f.DefValue + ")"
		}
		add(left, use)
	})
	add("-h, --help", "print this help")
	return out
}

// writeUsage prints the short help of fs's command.
func writeUsage(w io.Writer, fs *flag.FlagSet) {
	manual.Egressd.WriteUsage(w, fs.Name(), flagLines(fs))
}

// parseFlags parses flags wherever they stand among the positional
// arguments (`check --explain U H:P --json`); "--" ends the flags. On
// --help it prints the command's help (exit 0); on a bad flag, the error
// and where the help is (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	var pos []string
	out := fs.Output()
	fs.SetOutput(io.Discard) // errors are printed below, GNU style
	defer fs.SetOutput(out)
	fs.Usage = func() {}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				writeUsage(helpOut, fs)
				return 0, true
			}
			fmt.Fprintf(out, "egressd %s: %s\nRun 'egressd %s --help' for usage.\n", fs.Name(), gnuFlagError(err), fs.Name())
			return 2, true
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	fs.Parse(append([]string{"--"}, pos...)) //nolint:errcheck // only positionals left
	return 0, false
}

var flagNameRE = regexp.MustCompile(`(flag|defined:|argument:) -+([A-Za-z0-9][A-Za-z0-9-]*)`)

// gnuFlagError says the flag package's error with --option names.
func gnuFlagError(err error) string {
	msg := flagNameRE.ReplaceAllString(err.Error(), "$1 --$2")
	msg = strings.Replace(msg, "flag provided but not defined:", "unknown option", 1)
	msg = strings.Replace(msg, "flag needs an argument:", "option needs an argument:", 1)
	return strings.Replace(msg, "for flag --", "for option --", 1)
}

// noFlags parses the arguments of a command without options (demo,
// version, completion, man): only -h/--help.
func noFlags(name string, args []string, stderr io.Writer) (pos []string, code int, done bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if code, done := parseFlags(fs, args); done {
		return nil, code, true
	}
	return fs.Args(), 0, false
}

// usageError reports wrong arguments: the error, where the help is; exit 2.
func usageError(stderr io.Writer, cmd, format string, a ...any) int {
	fmt.Fprintf(stderr, "egressd %s: %s\nRun 'egressd %s --help' for usage.\n", cmd, fmt.Sprintf(format, a...), cmd)
	return 2
}

// cmdHelp: the commands; a command's help; egressd(8); egressd.yaml(5).
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	pos, code, done := noFlags("help", args, stderr)
	if done {
		return code
	}
	switch {
	case len(pos) == 0:
		manual.Egressd.WriteOverview(stdout)
	case len(pos) == 1 && (pos[0] == "egressd" || pos[0] == "8"):
		manual.Egressd.WriteText(stdout)
	case len(pos) == 1 && (pos[0] == "egressd.yaml" || pos[0] == "5"):
		manual.Config.WriteText(stdout)
	case len(pos) == 1 && commands[pos[0]] != nil:
		return commands[pos[0]]([]string{"--help"}, stdout, stderr)
	default:
		return usageError(stderr, "help", "no help for %q (a command, egressd or egressd.yaml)", strings.Join(pos, " "))
	}
	return 0
}

// cmdMan prints a man page in roff (make deb installs them).
func cmdMan(args []string, stdout, stderr io.Writer) int {
	pos, code, done := noFlags("man", args, stderr)
	if done {
		return code
	}
	if len(pos) != 1 || manual.Pages[pos[0]] == nil {
		return usageError(stderr, "man", "name a section: 8 (egressd) or 5 (egressd.yaml)")
	}
	manual.Pages[pos[0]].WriteRoff(stdout, version.Get().Version)
	return 0
}

func cmdCompletion(args []string, stdout, stderr io.Writer) int {
	pos, code, done := noFlags("completion", args, stderr)
	if done {
		return code
	}
	if len(pos) != 1 {
		return usageError(stderr, "completion", "name a shell: bash or zsh")
	}
	switch pos[0] {
	case "bash":
		manual.WriteBash(stdout)
	case "zsh":
		manual.WriteZsh(stdout)
	default:
		return usageError(stderr, "completion", "unknown shell %q (bash or zsh)", pos[0])
	}
	return 0
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	pos, code, done := noFlags("version", args, stderr)
	if done {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, "version", "unexpected argument %q", pos[0])
	}
	fmt.Fprintln(stdout, version.Get())
	return 0
}
