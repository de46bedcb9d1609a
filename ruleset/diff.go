package ruleset

import (
	"time"

	"github.com/egressd/egressd/internal/setdiff"
)

// SetDelta is the element change of one set.
type SetDelta struct {
	Add, Del []Element
	// DelEnding, when not nil, is aligned with Del: whether the element had a
	// lifetime, so that the kernel may have run its timeout out already.
	DelEnding []bool
	// AddUntil, when not nil, is aligned with Add: when each added element
	// ends (zero: never).
	AddUntil []time.Time
	// Renew are elements the set keeps whose lifetime now ends later
	// (RenewUntil, aligned): their kernel timeouts are renewed. A lifetime
	// that ends earlier, or that starts or stops ending, is a Del and an Add.
	Renew      []Element
	RenewUntil []time.Time
}

// Delta is an element-only change between two plans with the same structure.
type Delta map[string]SetDelta

// Elements counts the elements a delta adds, deletes and renews.
func (d Delta) Elements() int {
	n := 0
	for _, sd := range d {
		n += len(sd.Add) + len(sd.Del) + len(sd.Renew)
	}
	return n
}

// SameStructure reports whether two plans differ only in set elements, so
// that an element delta can take one to the other.
func SameStructure(a, b Plan) bool {
	if a.DenyLog != b.DenyLog || a.ProxyPort != b.ProxyPort || a.Inbound != b.Inbound || len(a.Allowlists) != len(b.Allowlists) || len(a.Sets) != len(b.Sets) {
		return false
	}
	for i := range a.Allowlists {
		if a.Allowlists[i] != b.Allowlists[i] {
			return false
		}
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
		var sd SetDelta
		if old.Until[name] == nil && new.Until[name] == nil {
			sd.Add, sd.Del = setdiff.Of(have, want)
		} else {
			sd = diffTimed(have, old.Until[name], want, new.Until[name])
		}
		if len(sd.Add)+len(sd.Del)+len(sd.Renew) > 0 {
			d[name] = sd
		}
	}
	return d
}

// diffTimed is the element change of one set whose elements have lifetimes
// (hu, wu aligned with have, want; nil: none ends).
func diffTimed(have []Element, hu []time.Time, want []Element, wu []time.Time) SetDelta {
	at := func(u []time.Time, i int) time.Time {
		if u == nil {
			return time.Time{}
		}
		return u[i]
	}
	before := make(map[Element]time.Time, len(have))
	for i, e := range have {
		before[e] = at(hu, i)
	}
	var sd SetDelta
	add := func(e Element, u time.Time) {
		sd.Add = append(sd.Add, e)
		sd.AddUntil = append(sd.AddUntil, u)
	}
	for i, e := range want {
		u := at(wu, i)
		was, ok := before[e]
		delete(before, e)
		switch {
		case !ok:
			add(e, u)
		case was.Equal(u):
		case !was.IsZero() && u.After(was):
			sd.Renew = append(sd.Renew, e)
			sd.RenewUntil = append(sd.RenewUntil, u)
		default: // ends earlier, or starts or stops ending
			sd.Del = append(sd.Del, e)
			sd.DelEnding = append(sd.DelEnding, !was.IsZero())
			add(e, u)
		}
	}
	for _, e := range have {
		if u, gone := before[e]; gone {
			sd.Del = append(sd.Del, e)
			sd.DelEnding = append(sd.DelEnding, !u.IsZero())
		}
	}
	return sd
}
