package controller

import (
	"errors"
	"sync"

	"github.com/egressd/egressd/ruleset"
)

// denyCounters keeps denied-packet totals across full rebuilds, which start
// the kernel's counters at zero (and across restarts: the first apply reads
// what the previous run left). The applier adds to it; the metrics endpoint
// reads it from its own goroutine, hence the lock.
type denyCounters struct {
	mu   sync.Mutex
	base map[string]uint64 // denied packets counted before the last full rebuild
}

// carry adds the kernel's counters to the base, just before a full rebuild.
func (d *denyCounters) carry(k ruleset.Kernel) {
	cr, ok := k.(ruleset.CounterReader)
	if !ok {
		return
	}
	cur, err := cr.ReadDenyCounters()
	if err != nil {
		return // no table yet
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.base == nil {
		d.base = map[string]uint64{}
	}
	for n, v := range cur {
		d.base[n] += v
	}
}

// total is the base plus the kernel's counters now.
func (d *denyCounters) total(k ruleset.Kernel) (map[string]uint64, error) {
	cr, ok := k.(ruleset.CounterReader)
	if !ok {
		return nil, errors.New("kernel does not count")
	}
	cur, err := cr.ReadDenyCounters()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]uint64{}
	for n, v := range d.base {
		out[n] = v
	}
	for n, v := range cur {
		out[n] += v
	}
	return out, nil
}

// DeniedPackets returns, per allowlist, every packet rejected since egressd
// first saw the table: the kernel's counters plus what earlier rebuilds
// reset. Safe for concurrent use (the metrics endpoint calls it).
func (c *Controller) DeniedPackets() (map[string]uint64, error) {
	return c.deny.total(c.o.Kernel)
}
