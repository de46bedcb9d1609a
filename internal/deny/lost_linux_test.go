//go:build linux

package deny

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The kernel's count of lost reports becomes one bind_reports_lost event per
// window that saw an increase; what was lost before this egressd is the
// baseline, not news.
func TestLostCounter(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	kernel := uint64(40) // lost before egressd started
	l := &lostCounter{read: func() (uint64, error) { return kernel, nil }, log: zap.New(core), window: 10 * time.Second}
	l.check()
	l.check()
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d events without new losses", n)
	}
	kernel += 4542 // a flood
	l.check()
	l.check()
	ev := logs.FilterField(zap.String("event", "bind_reports_lost")).All()
	if len(ev) != 1 || ev[0].ContextMap()["count"] != uint64(4542) || ev[0].ContextMap()["total"] != uint64(4582) {
		t.Fatalf("events %v", ev)
	}
}
