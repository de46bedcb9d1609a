package debpkg

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/manual"
)

// DebianChangelog makes changelog.Debian from CHANGELOG.md: one entry for
// this version whose items are those of CHANGELOG.md's newest section (its
// first "## " heading), each "- " item a "  * " item wrapped at 76 columns.
// A CHANGELOG.md without items is an error: the package says what changed.
func DebianChangelog(md []byte, version, describe, commit, maintainer string, date time.Time) (string, error) {
	lines := strings.Split(string(md), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "## ") {
			start = i
			break
		}
	}
	var items []string
	for _, l := range lines[start+1:] {
		if strings.HasPrefix(l, "## ") {
			break
		}
		if strings.HasPrefix(l, "- ") {
			items = append(items, strings.TrimPrefix(l, "- "))
		} else if strings.HasPrefix(l, "  ") && len(items) > 0 {
			items[len(items)-1] += " " + strings.TrimSpace(l)
		}
	}
	if len(items) == 0 {
		return "", errors.New("CHANGELOG.md: no \"- \" items under its first \"## \" heading")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "egressd (%s) unstable; urgency=medium\n\n", version)
	for _, it := range append(items, fmt.Sprintf("Built from %s, commit %s.", describe, commit)) {
		for i, l := range manual.Wrap(it, 72) {
			if i == 0 {
				b.WriteString("  * " + l + "\n")
			} else {
				b.WriteString("    " + l + "\n")
			}
		}
	}
	fmt.Fprintf(&b, "\n -- %s  %s\n", maintainer, date.Format(time.RFC1123Z))
	return b.String(), nil
}
