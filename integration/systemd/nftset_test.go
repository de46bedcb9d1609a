package systemd

import "testing"

// trixie is Debian 13: systemd 257, which has NFTSet= (systemd ≥ 255).
const trixie = "trixie"

// TestRootFSTrixie builds the cached Debian 13 root file system if it is
// missing (like TestRootFS, outside the other tests' deadlines).
func TestRootFSTrixie(t *testing.T) {
	require(t)
	t.Logf("root file system: %s", rootfsFor(t, trixie))
}
