//go:build linux

package ruleset

import (
	"strings"
)

// textShape is what a rule of nft text must keep when nft prints it: the
// sets it looks up or updates, in order (! for a negated lookup), and its
// verdict.
func textShape(r string) string {
	r, _, _ = strings.Cut(r, " # ")
	f := strings.Fields(r)
	var refs []string
	verdict := ""
	for i, w := range f {
		switch {
		case strings.HasPrefix(w, "@") && len(w) > 1 && (w[1] < '0' || w[1] > '9'): // @30,16,16: a raw offset, not a set
			n := w
			if i > 0 && f[i-1] == "!=" {
				n = "!" + n
			}
			refs = append(refs, n)
		case w == "accept", w == "reject", w == "return", w == "drop":
			verdict = w
		case (w == "goto" || w == "jump") && i+1 < len(f):
			verdict = w + " " + f[i+1]
		}
	}
	return strings.Join(refs, " ") + " -> " + verdict
}
