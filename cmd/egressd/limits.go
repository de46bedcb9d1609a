package main

import (
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/policy"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// descriptorReserve is kept for what is not capped by a count of clients:
// configuration and hosts reads, netlink sockets (nftables, NFLOG,
// conntrack, the monitor), the watches, the lock, the logs, sd_notify.
const descriptorReserve = 128

// descriptorBudget is the most descriptors egressd can hold at once: every
// use that local users drive is capped (metrics connections, the DNS
// proxy's clients and upstream queries), DNS lookups are bounded by their
// concurrency (a TCP retry each at most), and the reserve.
const descriptorBudget = metrics.MaxConns + dnsproxy.MaxDescriptors + 2*policy.Concurrency + descriptorReserve

// checkDescriptorLimit warns when the descriptor limit is below the budget:
// then a flood of clients could take what configuration reads, DNS and
// netlink need. The Go runtime has raised the soft limit to the hard one
// where it may; under egressd.service LimitNOFILE= sets both.
func checkDescriptorLimit(log *zap.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= descriptorBudget {
		return
	}
	log.Warn("the descriptor limit is below what egressd may hold at once; raise it (LimitNOFILE= in the unit, ulimit -n by hand)",
		event.Field(event.DescriptorLimitLow), zap.Uint64("limit", lim.Cur), zap.Int("needed", descriptorBudget))
}
