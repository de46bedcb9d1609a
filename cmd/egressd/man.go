package main

import (
	"fmt"
	"io"

	"github.com/egressd/egressd/internal/manual"
	"github.com/egressd/egressd/internal/version"
)

// usage is egressd(8) as text; the man pages come from the same source.
var usage = manual.Egressd.Text()

// cmdHelp prints egressd(8), or egressd.yaml(5) as text.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(stdout, usage)
	case len(args) == 1 && (args[0] == "egressd.yaml" || args[0] == "5"):
		manual.Config.WriteText(stdout)
	default:
		fmt.Fprintln(stderr, "usage: egressd help [egressd.yaml]")
		return 2
	}
	return 0
}

// cmdMan prints a man page in roff (used by make deb; not in the manual).
func cmdMan(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || manual.Pages[args[0]] == nil {
		fmt.Fprintln(stderr, "usage: egressd man 8|5")
		return 2
	}
	manual.Pages[args[0]].WriteRoff(stdout, version.Get().Version)
	return 0
}

func cmdCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: egressd completion bash|zsh")
		return 2
	}
	switch args[0] {
	case "bash":
		manual.WriteBash(stdout)
	case "zsh":
		manual.WriteZsh(stdout)
	default:
		fmt.Fprintf(stderr, "egressd completion: unknown shell %q (bash or zsh)\n", args[0])
		return 2
	}
	return 0
}
