// Package systest decides whether tests that need root and the real kernel
// run: they skip with a reason when not root, and fail instead of skipping
// when EGRESSD_REQUIRE_SYSTEM_TESTS=1 (CI sets it).
package systest

import (
	"os"
	"testing"
)

// Require skips or fails t unless it runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
		t.Fatal("system test needs root, and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping it")
	}
	t.Skip("system test: needs root (network namespaces, nftables); run as root or set EGRESSD_REQUIRE_SYSTEM_TESTS=1 to make this a failure")
}
