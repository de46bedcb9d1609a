package startgate

import (
	"os"
	"testing"

	"github.com/egressd/egressd/internal/privilege"
)

// The gate's capability check is the kernel's: CAP_NET_ADMIN in the
// effective set (an unprivileged test process has none).
func TestHasNetAdmin(t *testing.T) {
	if HasNetAdmin() != privilege.NetAdmin() {
		t.Error("HasNetAdmin differs from CAP_NET_ADMIN's presence")
	}
	if os.Geteuid() != 0 && HasNetAdmin() {
		t.Errorf("uid %d without capabilities has CAP_NET_ADMIN", os.Geteuid())
	}
}
