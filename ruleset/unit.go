package ruleset

import (
	"hash/fnv"
	"sort"
)

// Unit allowlists (docs/units.md): a systemd unit's cgroup, not a uid, is
// the identity. Each unit allowlist has a 32-bit unit key and chains of its
// own (unit_K, unitdeny_K); its elements live in the shared sets uallow4,
// uallow4r, uallow6, uallow6r keyed by it, and the verdict map unitchains
// takes a cgroup id (socket cgroupv2 level N) to a jump to its chain.

// UnitLevels is the deepest cgroup level a restricted unit may sit at (in
// the host's hierarchy: a container's units sit deeper than they see):
// system.slice/foo.service is level 2, a template instance in its own slice
// level 3.
const UnitLevels = 8

// The NFTSet= table (nftset_linux.go).
const (
	// HelperTableName is the NFTSet= table, inet family.
	HelperTableName = TableName + "_units"
	// NFTSetUnits is the set a unit's NFTSet= names.
	NFTSetUnits = "units"
	// NFTSetDirective is the value of the unit setting NFTSet= that has
	// systemd (≥ 255) put the unit's cgroup in the NFTSet= table before any
	// process of the unit runs.
	NFTSetDirective = "cgroup:inet:" + HelperTableName + ":" + NFTSetUnits
)

// Cgroup is one current cgroup of a restricted unit: its id (the inode
// number of its cgroup2 directory) and the allowlist that restricts it.
type Cgroup struct {
	ID        uint64
	Allowlist string
}

// UnitKeys gives each allowlist name a unit key: FNV-1a of the name, moved
// on past a key already taken (names in sorted order) and past 0, which
// labels flows no unit opened. A key stays the same as long as no other
// allowlist's name collides with it, so established flows keep their key
// across reloads.
func UnitKeys(names []string) map[string]uint32 {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	out := make(map[string]uint32, len(sorted))
	taken := map[uint32]bool{0: true}
	for _, n := range sorted {
		h := fnv.New32a()
		h.Write([]byte(n))
		k := h.Sum32()
		for taken[k] {
			k++
		}
		taken[k] = true
		out[n] = k
	}
	return out
}

// unitKeys is allowlist -> unit key, for the unit allowlists of p only.
func unitKeys(p Plan) map[string]uint32 {
	out := map[string]uint32{}
	for _, u := range p.Of(SubjectUnit) {
		out[u.Allowlist] = u.Subject.ID
	}
	return out
}

func sortedCgroups(cs []Cgroup) []Cgroup {
	if len(cs) == 0 {
		return nil
	}
	out := append([]Cgroup(nil), cs...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// CgroupDelta is the change of the cgroup map from old to new: ids to add
// (or whose allowlist changed: deleted, then added) and ids to delete.
func CgroupDelta(old, new []Cgroup) (add, del []Cgroup) {
	have := make(map[uint64]string, len(old))
	for _, c := range old {
		have[c.ID] = c.Allowlist
	}
	want := make(map[uint64]string, len(new))
	for _, c := range new {
		want[c.ID] = c.Allowlist
		if a, ok := have[c.ID]; !ok || a != c.Allowlist {
			add = append(add, c)
			if ok {
				del = append(del, Cgroup{ID: c.ID, Allowlist: a})
			}
		}
	}
	for _, c := range old {
		if _, ok := want[c.ID]; !ok {
			del = append(del, c)
		}
	}
	return sortedCgroups(add), sortedCgroups(del)
}

// unitKernelSets are the unit allowlists' element sets.
func unitKernelSets() []kernelSet { return familySets(kernelSet{Kind: SubjectUnit}) }

// everyKernelSet is every kernel set that holds plan elements.
func everyKernelSet() []kernelSet { return append(allKernelSets(), unitKernelSets()...) }
