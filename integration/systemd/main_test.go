package systemd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Built once per run, bind-mounted read-only into every container.
var egressdBin, probeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "egressd-systemd-tier-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	egressdBin, probeBin = filepath.Join(dir, "egressd"), filepath.Join(dir, "egressd-probe")
	for _, b := range [][2]string{{egressdBin, "../../cmd/egressd"}, {probeBin, "./probe"}} {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b[1], err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	// EGRESSD_SYSTEST_BINARY runs the tier against another egressd build
	// (to show a test failing on an older one).
	if b := os.Getenv("EGRESSD_SYSTEST_BINARY"); b != "" {
		egressdBin = b
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binds are the container's bind mounts: the binaries under test and the
// repository (for the README's install steps), read-only.
func binds(t *testing.T) []string {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return []string{egressdBin + ":/usr/local/bin/egressd", probeBin + ":/usr/local/bin/egressd-probe", repo + ":/src"}
}
