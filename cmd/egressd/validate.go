package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/egressd/egressd/config"
)

// cmdValidate checks candidate files offline: the hook of configuration
// management (Ansible's validate:, Puppet's validate_cmd, Salt's check_cmd).
func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "the installed main file: check the candidates together with the configuration it names")
	as := fs.String("as", "", "where the one candidate will be installed (its allowlist name; with --config, what it replaces)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: egressd validate [--config F] [--as DEST] PATH...")
		return 2
	}
	verdicts, err := config.Validate(fs.Args(), config.ValidateOptions{ConfigPath: *cfgPath, As: *as})
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(stderr, e.Error())
				if e.Fix != "" {
					fmt.Fprintln(stderr, "  fix:", e.Fix)
				}
			}
		} else {
			fmt.Fprintln(stderr, "egressd validate:", err)
		}
		fmt.Fprintln(stderr, "egressd validate: invalid; nothing was changed")
		return 2
	}
	for _, v := range verdicts {
		what := string(v.Kind)
		if v.Name != "" {
			what += " " + v.Name
		}
		if v.Target != v.Path {
			what += " for " + v.Target
		}
		switch {
		case v.Tests == 1:
			what += " (1 test passed)"
		case v.Tests > 1:
			what += fmt.Sprintf(" (%d tests passed)", v.Tests)
		}
		fmt.Fprintf(stdout, "%s: valid %s\n", v.Path, what)
		for _, n := range v.Notes {
			fmt.Fprintf(stdout, "  note: %s\n", n)
		}
	}
	return 0
}
