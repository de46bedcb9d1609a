package main

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// The unit's LimitNOFILE= covers the budget; a limit below it is reported.
func TestDescriptorLimit(t *testing.T) {
	if descriptorBudget > 8192 {
		t.Errorf("the descriptor budget (%d) exceeds egressd.service's LimitNOFILE=8192", descriptorBudget)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old) //nolint:errcheck
	for _, tc := range []struct {
		soft uint64
		warn bool
	}{{1024, true}, {min(old.Max, 8192), old.Max < descriptorBudget}} {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: tc.soft, Max: old.Max}); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.InfoLevel)
		checkDescriptorLimit(zap.New(core))
		if got := logs.Len() > 0; got != tc.warn {
			t.Errorf("limit %d (budget %d): warned %v, want %v", tc.soft, descriptorBudget, got, tc.warn)
		}
	}
}
