package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

// A metrics_socket_group the daemon is not a member of is an error that
// says how to fix the unit, and no socket is left at the path.
func TestListenUnixForeignGroup(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may give a socket any group")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "metrics.sock")
	ln, err := Listen("unix:"+path, 0o660, 0, config.Trust{Above: dir})
	if err == nil {
		ln.Close()
		t.Fatalf("uid %d gave its socket group 0", os.Geteuid())
	}
	if !strings.Contains(err.Error(), "SupplementaryGroups=") {
		t.Errorf("error %v, want the unit's fix", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("something is left at %s: %v", path, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the directory: %v", ents)
	}
}
