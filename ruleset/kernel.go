package ruleset

import "time"

// Kernel is the narrow interface between the controller and nftables.
// Every call that changes state is one netlink transaction: the kernel holds
// the old state or the new one, never a mix.
type Kernel interface {
	// ApplyFull replaces the whole table with the plan (delete and re-add in
	// one transaction). Used at start, after a configuration change and after
	// any failure.
	ApplyFull(p Plan) error
	// ApplyDelta changes only set elements. The caller guarantees the kernel
	// holds the structure of the plan the delta was computed against; p is
	// the plan the delta leads to.
	ApplyDelta(p Plan, d Delta) error
	// Remove deletes the table; a missing table is not an error.
	Remove() error
}

// CounterReader is implemented by kernels that count denied packets per
// allowlist. A full rebuild starts the counters at zero again.
type CounterReader interface {
	ReadDenyCounters() (map[string]uint64, error)
}

// Finding is one difference between the kernel and a plan.
type Finding struct {
	Kind   string `json:"kind"`   // table_missing, table_dormant, chain_missing, chain_extra, chain_hook, rules_differ, set_missing, set_differs, set_extra, element_missing, element_extra, users_differ
	Object string `json:"object"` // chain, set or map name
	Detail string `json:"detail"`
}

func (f Finding) String() string { return f.Kind + " " + f.Object + ": " + f.Detail }

// Verifier is implemented by kernels that can read their state back and
// compare it with a plan (drift detection).
type Verifier interface {
	Verify(p Plan) ([]Finding, error)
}

// LifetimeReader is implemented by kernels whose elements from DNS carry
// timeouts: for each logical set, the time each such element has left
// (literal entries, which never end, are not listed).
type LifetimeReader interface {
	ReadLifetimes() (map[string]map[Element]time.Duration, error)
}
