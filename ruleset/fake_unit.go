package ruleset

import "fmt"

// Method names for FailNext and Calls (unit allowlists).
const (
	FakeApplyCgroups = "ApplyCgroups"
	FakeReadCgroups  = "ReadCgroups"
)

// ApplyCgroups changes the cgroup map as Netlink.ApplyCgroups does: a
// deletion of an id the map does not hold fails the whole change.
func (f *Fake) ApplyCgroups(p Plan, add, del []Cgroup) error {
	if err := f.call(FakeApplyCgroups, true); err != nil {
		return err
	}
	if !f.exists() {
		return ErrNoTable
	}
	have := map[uint64]string{}
	for _, c := range f.Plan.Cgroups {
		have[c.ID] = c.Allowlist
	}
	keys := unitKeys(p)
	for _, c := range del {
		if _, ok := have[c.ID]; !ok {
			return fmt.Errorf("apply cgroup change: delete cgroup %d: not in the map", c.ID)
		}
	}
	for _, c := range add {
		if _, ok := keys[c.Allowlist]; !ok {
			return fmt.Errorf("cgroup %d: allowlist %q is not a unit allowlist of the plan", c.ID, c.Allowlist)
		}
	}
	for _, c := range del {
		delete(have, c.ID)
	}
	for _, c := range add {
		have[c.ID] = c.Allowlist
	}
	var out []Cgroup
	for id, a := range have {
		out = append(out, Cgroup{ID: id, Allowlist: a})
	}
	f.Plan.Cgroups = sortedCgroups(out)
	return nil
}

// ReadCgroups returns the cgroup map, as Netlink.ReadCgroups does.
func (f *Fake) ReadCgroups() ([]Cgroup, error) {
	if err := f.read(FakeReadCgroups); err != nil {
		return nil, err
	}
	return append([]Cgroup(nil), f.Plan.Cgroups...), nil
}

// unitFindings: the unit allowlists and the cgroup map, compared as the
// netlink adapter compares them.
func (f *Fake) unitFindings(p Plan) []Finding {
	got := map[uint32]string{}
	for _, u := range f.Plan.Of(SubjectUnit) {
		got[u.Subject.ID] = listedAs(u)
	}
	return unitSetFindings(p, got, f.Plan.Cgroups, true)
}

// ReadUnits returns allowlist -> unit, as Netlink.ReadUnits does.
func (f *Fake) ReadUnits() (map[string]string, error) {
	if err := f.read(FakeReadCgroups); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, u := range f.Plan.Of(SubjectUnit) {
		out[u.Allowlist] = u.Subject.Unit
	}
	return out, nil
}
