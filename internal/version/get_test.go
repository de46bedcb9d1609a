package version

import "testing"

// The running binary's description: the linker-set release wins.
func TestGetLinkerSet(t *testing.T) {
	old, oldCommit := Version, Commit
	defer func() { Version, Commit = old, oldCommit }()
	Version, Commit = "v9.8.7", "abcdef0123"
	in := Get()
	if in.Version != "v9.8.7" || in.Commit != "abcdef0123" || in.Source != "ldflags" || in.GoVersion == "" {
		t.Errorf("Get() = %+v", in)
	}
}
