package controller

import (
	"testing"

	"github.com/egressd/egressd/ruleset"
)

// caughtKernel is a driftKernel with a change monitor (MonitorCaughtUp)
// that has or has not read every transaction up to now; it counts the full
// read-backs.
type caughtKernel struct {
	*driftKernel
	caught    bool
	readBacks int
}

func (k *caughtKernel) CaughtUp() (bool, error) { return k.caught, nil }

func (k *caughtKernel) Verify(p ruleset.Plan) ([]ruleset.Finding, error) {
	k.readBacks++
	return k.driftKernel.Verify(p)
}

// The periodic verification reads the table back only when the monitor
// cannot vouch that nothing else changed nftables: it is behind (or lost
// notices, or does not run), another process's transaction was reported
// since the last full verification, or that was fullVerifyEvery ago. A
// foreign change is still found and repaired at once. Failed before: every
// periodic verification read the 20,000 elements back.
func TestPeriodicVerifyReadsBackOnlyWhenNeeded(t *testing.T) {
	d := newDriftFixture(t)
	k := &caughtKernel{driftKernel: d.k, caught: true}
	d.c.o.Kernel, d.c.apply.o.Kernel = k, k
	d.c.setKernelEvents(make(chan struct{}))
	d.c.apply.verifyAt = d.now.Add(d.c.o.VerifyEvery)
	period := func(what string, readBack bool) {
		t.Helper()
		n := k.readBacks
		d.now = d.c.apply.verifyAt
		d.turn()
		if got := k.readBacks > n; got != readBack {
			t.Fatalf("%s: read back %v, want %v", what, got, readBack)
		}
	}
	period("the first verification", true)
	period("nothing changed", false)
	k.caught = false // the monitor is behind, lost notices or stopped
	period("the monitor behind", true)
	k.caught = true
	period("caught up again", false)

	// Another process changes an element: the monitor reports it; the
	// verification that follows reads back and repairs.
	k.findings = []ruleset.Finding{{Kind: "element_missing", Object: ruleset.SetName4("billing"), Detail: "1 missing"}}
	fulls := k.Fulls
	d.c.apply.kernelChanged()
	d.now = d.now.Add(verifyDelay)
	n := k.readBacks
	d.turn()
	if k.readBacks != n+1 || k.Fulls != fulls+1 || k.findings != nil {
		t.Fatalf("after a foreign change: %d read-backs, %d full applies, findings %v", k.readBacks-n, k.Fulls-fulls, k.findings)
	}
	last := d.now
	// The backstop: a full read-back every fullVerifyEvery whatever the monitor says.
	for d.c.apply.verifyAt.Sub(last) < fullVerifyEvery {
		period("within the backstop", false)
	}
	period("the backstop", true)

	// Without a monitor in the loop, every period reads back.
	d.c.setKernelEvents(nil)
	period("no monitor", true)
	period("no monitor again", true)
}
