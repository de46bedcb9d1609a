package debpkg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Build refuses, before building anything, a tree git cannot describe and
// an architecture Debian has no name for; nothing is written to Out.
func TestBuildRefuses(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing", tool)
		}
	}
	out := t.TempDir()
	if _, err := Build(Options{Repo: t.TempDir(), Out: out, GOARCH: "amd64"}); err == nil || !strings.Contains(err.Error(), "git describe") {
		t.Errorf("a tree that is not a git work tree: %v", err)
	}
	repo, _ := filepath.Abs("../..")
	if _, err := gitRelease(repo); err != nil {
		t.Skipf("the source tree is not a git work tree: %v", err)
	}
	if _, err := Build(Options{Repo: repo, Out: out, GOARCH: "pdp11"}); err == nil || !strings.Contains(err.Error(), "no Debian architecture for GOARCH=pdp11") {
		t.Errorf("GOARCH=pdp11: %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("written to Out: %v", ents)
	}
}

func TestDebArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "amd64", "386": "i386", "arm": "armhf", "ppc64le": "ppc64el", "mips64le": "mips64el"} {
		if got, err := debArch(goarch); err != nil || got != want {
			t.Errorf("debArch(%s) = %q, %v; want %q", goarch, got, err, want)
		}
	}
}
