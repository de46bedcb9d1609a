// Package manual owns egressd's manual: one source for `egressd help` (plain
// text), the man pages egressd(8) and egressd.yaml(5) (roff), and the shell
// completions, so that none of them can drift from the others.
package manual

import (
	"fmt"
	"io"
	"strings"
)

// Page is one manual page.
type Page struct {
	Name     string // egressd, egressd.yaml
	Section  string // 8, 5
	Title    string // the header's centre: "System Administration"
	Sections []Section
}

// Section is a top-level heading (NAME, SYNOPSIS, ...) and its blocks.
type Section struct {
	Heading string
	Blocks  []Block
}

// Block is a paragraph, a tagged paragraph (Tag set) or literal lines (Pre).
type Block struct {
	Tag  string
	Text string // reflowed; a blank line separates paragraphs
	Pre  bool   // Text is printed as written
}

// P is a paragraph.
func P(text string) Block { return Block{Text: text} }

// Item is a tagged paragraph: a command, an option, a key.
func Item(tag, text string) Block { return Block{Tag: tag, Text: text} }

// Pre is literal text (synopses, examples).
func Pre(text string) Block { return Block{Text: strings.Trim(text, "\n"), Pre: true} }

const (
	width     = 78
	indent    = 4
	tagIndent = 14
)

// WriteText renders the page for a terminal, as `egressd help` prints it.
func (p *Page) WriteText(w io.Writer) {
	for i, s := range p.Sections {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, s.Heading)
		for j, b := range s.Blocks {
			if j > 0 && (b.Tag == "" || s.Blocks[j-1].Tag == "") {
				fmt.Fprintln(w)
			}
			switch {
			case b.Pre:
				for _, l := range strings.Split(b.Text, "\n") {
					fmt.Fprintln(w, strings.TrimRight(strings.Repeat(" ", indent)+l, " "))
				}
			case b.Tag != "":
				first := strings.Repeat(" ", indent) + b.Tag
				paras := paragraphs(b.Text)
				lines := wrap(paras[0], width-tagIndent)
				if len(first) < tagIndent-1 {
					fmt.Fprintf(w, "%-*s%s\n", tagIndent, first, lines[0])
					lines = lines[1:]
				} else {
					fmt.Fprintln(w, first)
				}
				for _, l := range lines {
					fmt.Fprintln(w, strings.Repeat(" ", tagIndent)+l)
				}
				for _, para := range paras[1:] {
					fmt.Fprintln(w)
					for _, l := range wrap(para, width-tagIndent) {
						fmt.Fprintln(w, strings.Repeat(" ", tagIndent)+l)
					}
				}
			default:
				for k, para := range paragraphs(b.Text) {
					if k > 0 {
						fmt.Fprintln(w)
					}
					for _, l := range wrap(para, width-indent) {
						fmt.Fprintln(w, strings.Repeat(" ", indent)+l)
					}
				}
			}
		}
	}
}

// Text returns WriteText's output as a string.
func (p *Page) Text() string {
	var b strings.Builder
	p.WriteText(&b)
	return b.String()
}

// WriteRoff renders the page as a man page (man(7) macros).
func (p *Page) WriteRoff(w io.Writer, version string) {
	fmt.Fprintf(w, ".\\\" Generated from internal/manual by egressd man %s; do not edit.\n", p.Section)
	fmt.Fprintf(w, ".TH %s %s \"\" \"egressd %s\" \"%s\"\n", roffArg(strings.ToUpper(p.Name)), p.Section, roffArg(version), roffArg(p.Title))
	for _, s := range p.Sections {
		fmt.Fprintf(w, ".SH %s\n", roffArg(s.Heading))
		for j, b := range s.Blocks {
			switch {
			case b.Pre:
				// Literal lines fit 80 columns at the section's indent;
				// examples are indented further, synopses are not.
				indent := s.Heading != "SYNOPSIS"
				if indent {
					fmt.Fprintln(w, ".PP\n.RS 4")
				}
				fmt.Fprintln(w, ".nf")
				for _, l := range strings.Split(b.Text, "\n") {
					fmt.Fprintln(w, roffLine(l))
				}
				fmt.Fprintln(w, ".fi")
				if indent {
					fmt.Fprintln(w, ".RE")
				}
			case b.Tag != "":
				fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n", roffEscape(b.Tag))
				for k, para := range paragraphs(b.Text) {
					if k > 0 {
						fmt.Fprintln(w, ".IP")
					}
					fmt.Fprintln(w, roffLine(para))
				}
			default:
				for k, para := range paragraphs(b.Text) {
					if s.Heading != "NAME" && (j > 0 || k > 0) {
						fmt.Fprintln(w, ".PP")
					}
					fmt.Fprintln(w, roffLine(para))
				}
			}
		}
	}
}

// Roff returns WriteRoff's output as a string.
func (p *Page) Roff(version string) string {
	var b strings.Builder
	p.WriteRoff(&b, version)
	return b.String()
}

// paragraphs splits reflowable text at blank lines and joins each one's lines.
func paragraphs(text string) []string {
	var out []string
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		out = append(out, strings.Join(strings.Fields(para), " "))
	}
	return out
}

// Wrap breaks text into lines of at most w columns (a longer word stands alone).
func Wrap(text string, w int) []string { return wrap(text, w) }

func wrap(text string, w int) []string {
	var lines []string
	cur := ""
	for _, word := range strings.Fields(text) {
		if cur != "" && len(cur)+1+len(word) > w {
			lines = append(lines, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += word
	}
	if cur != "" || len(lines) == 0 {
		lines = append(lines, cur)
	}
	return lines
}

// roffEscape makes text literal for roff: backslashes, and hyphens as
// minus signs (options and commands must be copyable).
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// roffLine escapes a whole input line: a leading dot or apostrophe would be a request.
func roffLine(s string) string {
	s = roffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") || s == "" {
		s = `\&` + s
	}
	return s
}

func roffArg(s string) string { return strings.ReplaceAll(roffEscape(s), `"`, `\(dq`) }
