package debpkg

import (
	"os"
	"strings"
	"testing"
	"time"
)

// changelog.Debian says what changed: the newest section of CHANGELOG.md.
func TestDebianChangelog(t *testing.T) {
	md := "# Changelog\n\nintro\n\n## 1.2.0\n\n- First change,\n  wrapped.\n- Second.\n\n## 1.1.0\n\n- Old.\n"
	got, err := DebianChangelog([]byte(md), "1.2.0-1", "v1.2.0", "abc123", "M <m@example.org>", time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	want := "egressd (1.2.0-1) unstable; urgency=medium\n\n  * First change, wrapped.\n  * Second.\n  * Built from v1.2.0, commit abc123.\n\n -- M <m@example.org>  Mon, 07 Dec 2026 00:00:00 +0000\n"
	if err != nil || got != want {
		t.Errorf("got %v\n%s\nwant\n%s", err, got, want)
	}
	if _, err := DebianChangelog([]byte("# Changelog\n\n## 1.0\n\nnothing listed\n"), "1", "", "", "", time.Time{}); err == nil {
		t.Error("a section without items was accepted")
	}
	// The repository's own CHANGELOG.md makes one.
	b, err := os.ReadFile("../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	got, err = DebianChangelog(b, "0~git.x-1", "x", "y", "M <m@example.org>", time.Now())
	if err != nil || !strings.Contains(got, "  * ") {
		t.Errorf("CHANGELOG.md: %v\n%s", err, got)
	}
	for _, l := range strings.Split(got, "\n") {
		if len(l) > 80 {
			t.Errorf("changelog line over 80 columns: %q", l)
		}
	}
}

// A long item wraps at 72 columns of text, its continuation lines indented
// under the text of its "  * " line.
func TestDebianChangelogWraps(t *testing.T) {
	item := strings.Repeat("word ", 20) + "end"
	got, err := DebianChangelog([]byte("## 1.0\n\n- "+item+"\n"), "1.0-1", "v1.0", "c", "M <m@example.org>", time.Unix(0, 0).UTC())
	if err != nil {
		t.Fatal(err)
	}
	want := "  * " + strings.TrimSpace(strings.Repeat("word ", 14)) + "\n    " + strings.Repeat("word ", 6) + "end\n"
	if !strings.Contains(got, want) {
		t.Errorf("got\n%s\nwant it to hold\n%s", got, want)
	}
}
