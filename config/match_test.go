package config

import (
	"regexp"
	"strings"
	"testing"
)

// The hand-written checks say what the regular expressions they replaced
// said, for every string of up to three bytes over an alphabet of the
// interesting bytes, and for labels around the length limit.
func TestHandMatchersAgreeWithRegexps(t *testing.T) {
	labelRE := regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)
	runTogetherRE := regexp.MustCompile(`\s-\s`)
	alphabet := []string{"a", "z", "0", "9", "_", "-", ".", "A", " ", "\t", "\n", "\r", "\f", "\v", "é", "*"}
	var all []string
	var grow func(s string, n int)
	grow = func(s string, n int) {
		all = append(all, s)
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			grow(s+c, n-1)
		}
	}
	grow("", 3)
	for _, n := range []int{61, 62, 63, 64} {
		all = append(all, strings.Repeat("a", n), "a"+strings.Repeat("-", n-2)+"a", strings.Repeat("a", n-1)+"-")
	}
	all = append(all, "a:443 - b:443", "a:443\n- b:443", "a-b:443", "a:443 -b", "a - ")
	for _, s := range all {
		if got, want := validLabel(s), labelRE.MatchString(s); got != want {
			t.Errorf("validLabel(%q) = %v, the regexp says %v", s, got, want)
		}
		if got, want := runTogether(s), runTogetherRE.MatchString(s); got != want {
			t.Errorf("runTogether(%q) = %v, the regexp says %v", s, got, want)
		}
	}
}
