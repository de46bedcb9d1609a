package ruleset

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
	Kind   string `json:"kind"`   // table_missing, chain_missing, chain_extra, chain_hook, rules_differ, set_missing, set_extra, element_missing, element_extra, users_differ
	Object string `json:"object"` // chain, set or map name
	Detail string `json:"detail"`
}

func (f Finding) String() string { return f.Kind + " " + f.Object + ": " + f.Detail }

// Verifier is implemented by kernels that can read their state back and
// compare it with a plan (drift detection).
type Verifier interface {
	Verify(p Plan) ([]Finding, error)
}

// Fake records plans for callers' unit tests. It is not a test of the kernel:
// ruleset's system tests run against the real one.
type Fake struct {
	Plan    Plan
	Fulls   int
	Deltas  []Delta
	Removed bool
	Err     error // returned by the next call, then cleared
}

func (f *Fake) take() error { err := f.Err; f.Err = nil; return err }

// ApplyFull implements Kernel.
func (f *Fake) ApplyFull(p Plan) error {
	if err := f.take(); err != nil {
		return err
	}
	f.Plan, f.Removed = p, false
	f.Fulls++
	return nil
}

// ApplyDelta implements Kernel.
func (f *Fake) ApplyDelta(_ Plan, d Delta) error {
	if err := f.take(); err != nil {
		return err
	}
	for name, sd := range d {
		del := map[Element]bool{}
		for _, e := range sd.Del {
			del[e] = true
		}
		var out []Element
		for _, e := range f.Plan.Sets[name] {
			if !del[e] {
				out = append(out, e)
			}
		}
		out = append(out, sd.Add...)
		sortElements(out)
		f.Plan.Sets[name] = out
	}
	f.Deltas = append(f.Deltas, d)
	return nil
}

// Remove implements Kernel.
func (f *Fake) Remove() error {
	if err := f.take(); err != nil {
		return err
	}
	f.Removed = true
	return nil
}
