package manual

import (
	"fmt"
	"io"
	"strings"
)

// The short help that `egressd COMMAND --help` and `egressd --help` print
// comes from egressd(8) too: a command's synopsis lines and its COMMANDS
// entries. The long text stays in the manual (`egressd help egressd`,
// man egressd).

func (p *Page) section(heading string) []Block {
	for _, s := range p.Sections {
		if s.Heading == heading {
			return s.Blocks
		}
	}
	return nil
}

// Synopsis is cmd's lines of the SYNOPSIS (each with its continuation
// lines), as the manual prints them.
func (p *Page) Synopsis(cmd string) []string {
	var out []string
	in := false
	for _, b := range p.section("SYNOPSIS") {
		for _, l := range strings.Split(b.Text, "\n") {
			if !strings.HasPrefix(l, " ") {
				in = l == p.Name+" "+cmd || strings.HasPrefix(l, p.Name+" "+cmd+" ")
			}
			if in {
				out = append(out, l)
			}
		}
	}
	return out
}

// commandItems is cmd's entries under COMMANDS ("check" and "check
// --explain ...").
func (p *Page) commandItems(cmd string) []Block {
	var out []Block
	for _, b := range p.section("COMMANDS") {
		if b.Tag == cmd || strings.HasPrefix(b.Tag, cmd+" ") {
			out = append(out, b)
		}
	}
	return out
}

// Commands are the command names of COMMANDS, in order, once each.
func (p *Page) Commands() []string {
	var out []string
	seen := map[string]bool{}
	for _, b := range p.section("COMMANDS") {
		name, _, _ := strings.Cut(b.Tag, " ")
		if name != "" && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// Summary is the first sentence of cmd's first COMMANDS entry.
func (p *Page) Summary(cmd string) string {
	items := p.commandItems(cmd)
	if len(items) == 0 {
		return ""
	}
	t := paragraphs(items[0].Text)[0]
	if i := strings.Index(t, ". "); i >= 0 {
		t = t[:i]
	}
	t = strings.TrimSuffix(t, ".")
	// One line where it can be: up to the first clause that explains.
	if len(t) > width-14 {
		cut := len(t)
		for _, sep := range []string{": ", "; ", " (", ", then"} {
			if i := strings.Index(t, sep); i >= 20 && i < cut {
				cut = i
			}
		}
		t = t[:cut]
	}
	return t
}

// WriteUsage prints cmd's short help: "Usage:" with its synopsis, what it
// does (its COMMANDS entries), and options, the flags' lines the caller
// renders from its flag set (GNU style), and where the manual is.
func (p *Page) WriteUsage(w io.Writer, cmd string, options []string) {
	fmt.Fprintln(w, "Usage:")
	for _, l := range p.Synopsis(cmd) {
		fmt.Fprintln(w, "  "+l)
	}
	for i, b := range p.commandItems(cmd) {
		fmt.Fprintln(w)
		if i > 0 { // the first is the command itself; the synopsis shows its arguments
			fmt.Fprintln(w, b.Tag+":")
		}
		for i, para := range paragraphs(b.Text) {
			if i > 0 {
				fmt.Fprintln(w)
			}
			for _, l := range wrap(para, width-2) {
				fmt.Fprintln(w, "  "+l)
			}
		}
	}
	if len(options) > 0 {
		fmt.Fprintln(w, "\nOptions:")
		for _, o := range options {
			fmt.Fprintln(w, o)
		}
	}
	fmt.Fprintf(w, "\nThe full manual: man %s (or %s help %s).\n", p.Name, p.Name, p.Name)
}

// WriteOverview prints `egressd --help`: the commands, one line each.
func (p *Page) WriteOverview(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s COMMAND [OPTIONS] [ARGUMENTS]\n\n", p.Name)
	for _, b := range p.section("NAME") {
		fmt.Fprintln(w, strings.TrimPrefix(paragraphs(b.Text)[0], p.Name+" - "))
	}
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range p.Commands() {
		s := wrap(p.Summary(c), width-14)
		fmt.Fprintf(w, "  %-11s %s\n", c, s[0])
		for _, l := range s[1:] {
			fmt.Fprintln(w, strings.Repeat(" ", 14)+l)
		}
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's options.\nThe manual: man %s (or %s help %s); the configuration: man egressd.yaml\n(or %s help egressd.yaml).\n", p.Name, p.Name, p.Name, p.Name, p.Name)
}
