package ruleset

import "github.com/egressd/egressd/internal/setdiff"

// SetDelta is the element change of one set.
type SetDelta struct {
	Add, Del []Element
}

// Delta is an element-only change between two plans with the same structure.
type Delta map[string]SetDelta

// Elements counts the elements a delta adds and deletes.
func (d Delta) Elements() int {
	n := 0
	for _, sd := range d {
		n += len(sd.Add) + len(sd.Del)
	}
	return n
}

// SameStructure reports whether two plans differ only in set elements, so
// that an element delta can take one to the other.
func SameStructure(a, b Plan) bool {
	if a.DenyLog != b.DenyLog || a.ProxyPort != b.ProxyPort || len(a.Chains) != len(b.Chains) || len(a.Sets) != len(b.Sets) {
		return false
	}
	for i := range a.Chains {
		if a.Chains[i] != b.Chains[i] {
			return false
		}
	}
	if !sameUnits(a.Units, b.Units) {
		return false
	}
	for name := range a.Sets {
		if _, ok := b.Sets[name]; !ok {
			return false
		}
	}
	return true
}

// Diff returns the element changes from old to new. Both must have the same
// structure (see SameStructure). It is pure and linear in the elements.
func Diff(old, new Plan) Delta {
	d := Delta{}
	for name, want := range new.Sets {
		have := old.Sets[name]
		if len(have) == len(want) && (len(want) == 0 || &have[0] == &want[0]) {
			continue // the same slice: a Renderer reused an unchanged allowlist's set
		}
		add, del := setdiff.Of(have, want)
		if len(add)+len(del) > 0 {
			d[name] = SetDelta{Add: add, Del: del}
		}
	}
	return d
}
