package controller

import "testing"

// Red team of the periodic verification's skip (issue 24), in the loop.
// The kernel can remove egressd's table without a transaction, so without
// a new generation: when the socket that owns it closes (NFT_TABLE_F_OWNER
// without PERSIST; on kernels before 6.9 another process can replace the
// unowned table with an identical copy it owns, then exit:
// ruleset.TestRedteamRTVOwnerExitRemovesTableWithoutNewGen). The monitor
// reports nothing and CaughtUp stays true. The periodic verification must
// still find the missing table at its next period (60 s), as it did when
// it always read the table back; a cheap presence check (TablePresence,
// one request) is enough.
func TestRedteamRTVQuietPeriodFindsRemovedTable(t *testing.T) {
	d := newDriftFixture(t)
	k := &caughtKernel{driftKernel: d.k, caught: true}
	d.c.o.Kernel, d.c.apply.o.Kernel = k, k
	d.c.setKernelEvents(make(chan struct{}))
	d.c.apply.verifyAt = d.now.Add(d.c.o.VerifyEvery)
	period := func() {
		d.now = d.c.apply.verifyAt
		d.turn()
	}
	period() // the first, full verification
	// Control: a quiet period skips the read-back.
	n := k.readBacks
	period()
	if k.readBacks != n {
		t.Fatal("control: a quiet period read the table back")
	}
	// The attack: the table is gone, no NEWGEN (no kernelChanged), and
	// the monitor still vouches (caught).
	k.gone = true
	restores, fulls := k.restores, k.Fulls
	period()
	if k.gone {
		t.Fatalf("HOLE: the table is missing after a periodic verification that the monitor vouched for "+
			"(%d read-backs, %d restores, %d full applies); it stays missing until the %v backstop",
			k.readBacks-n, k.restores-restores, k.Fulls-fulls, fullVerifyEvery)
	}
}
