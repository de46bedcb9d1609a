//go:build linux

// Package bindguard owns egressd's listen restriction (an allowlist's
// listen: key): cgroup BPF programs on the bind, ingress and setsockopt
// hooks of a cgroup, the policy map the daemon keeps current, the ring buffer the
// programs report refused binds on, and their pins on bpffs, which keep the
// programs attached and the policy in force while egressd restarts (as the
// nftables table stays).
package bindguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// key is the policy map's key; {uid, 0, 0} marks a restricted uid.
type key struct {
	UID   uint32
	Port  uint16
	Proto uint8
	_     uint8
}

// cgroupKey is the cgroup map's key; {id, 0, 0} marks a restricted unit's
// cgroup, {0, 0, 0} (value 1) says that there are such cgroups, or that a
// unit allowlist's listen: expects them (the programs look no further
// without it).
type cgroupKey struct {
	ID    uint64
	Port  uint16
	Proto uint8
	_     [5]uint8
}

// MaxEntries bounds the policy map (uid markers plus listed ports), and the
// cgroup map likewise.
const MaxEntries = 65536

const eventsSize = 256 << 10

var (
	policySpec  = &ebpf.MapSpec{Name: "egressd_listen", Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: MaxEntries}
	cgroupsSpec = &ebpf.MapSpec{Name: "egressd_lunits", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: MaxEntries}
	eventsSpec  = &ebpf.MapSpec{Name: "egressd_binddeny", Type: ebpf.RingBuf, MaxEntries: eventsSize}
	lostSpec    = &ebpf.MapSpec{Name: "egressd_bindlost", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}
)

// hook is one attachment: a program on one cgroup hook, pinned under a name.
type hook struct {
	name   string
	typ    ebpf.ProgramType
	attach ebpf.AttachType
	insns  func(progMaps) asm.Instructions
}

var hooks = []hook{
	{"bind4", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind, func(m progMaps) asm.Instructions { return bindProgram(m, afInet) }},
	{"bind6", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Bind, func(m progMaps) asm.Instructions { return bindProgram(m, afInet6) }},
	{"ingress", ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress, ingressProgram},
	{"setsockopt", ebpf.CGroupSockopt, ebpf.AttachCGroupSetsockopt, func(m progMaps) asm.Instructions { return sockoptProgram(m, os.Getpagesize()) }},
}

// Hooks names the pinned links, in attach order (for plan and check).
func Hooks() []string {
	out := make([]string, len(hooks))
	for i, h := range hooks {
		out[i] = h.name
	}
	return out
}

// Guard is the loaded restriction: its maps and links.
type Guard struct {
	dir    string
	cgroup string // where the programs attach
	progMaps
	links []link.Link
}

// ErrUnsupported wraps a kernel that lacks a feature the restriction needs
// (cgroup v2 BPF hooks, ring buffers; Linux ≥ 5.8).
var ErrUnsupported = errors.New("the kernel cannot enforce listen: (needs cgroup v2 BPF bind, ingress and setsockopt hooks and BPF ring buffers, Linux 5.8 or later)")

// Open loads the programs and attaches them to the cgroup at cgroupPath, or
// takes over those pinned in dir by an earlier egressd (replacing their
// programs in place, so the hooks are never empty). dir must be on bpffs.
func Open(cgroupPath, dir string) (_ *Guard, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bpf pin directory: %w", err)
	}
	g := &Guard{dir: dir, cgroup: cgroupPath}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if g.policy, err = pinnedMap(policySpec, filepath.Join(dir, "policy")); err != nil {
		return nil, err
	}
	if g.cgroups, err = pinnedMap(cgroupsSpec, filepath.Join(dir, "cgroups")); err != nil {
		return nil, err
	}
	if g.events, err = pinnedMap(eventsSpec, filepath.Join(dir, "events")); err != nil {
		return nil, err
	}
	if g.lost, err = pinnedMap(lostSpec, filepath.Join(dir, "lost")); err != nil {
		return nil, err
	}
	for _, h := range hooks {
		l, err := attach(h, g.progMaps, cgroupPath, filepath.Join(dir, h.name))
		if err != nil {
			return nil, err
		}
		g.links = append(g.links, l)
	}
	return g, nil
}

func pinnedMap(spec *ebpf.MapSpec, pin string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err == nil {
		if cerr := spec.Compatible(m); cerr != nil {
			m.Close()
			return nil, fmt.Errorf("pinned map %s is not egressd's (%v): remove it (egressd remove) and restart", pin, cerr)
		}
		return m, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load pinned map %s: %w", pin, err)
	}
	if m, err = ebpf.NewMap(spec); err != nil {
		return nil, fmt.Errorf("create map %s: %w: %w", spec.Name, ErrUnsupported, err)
	}
	if err := m.Pin(pin); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin map %s: %w", pin, err)
	}
	return m, nil
}

func attach(h hook, m progMaps, cgroupPath, pin string) (link.Link, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "egressd_" + h.name,
		Type:         h.typ,
		AttachType:   h.attach,
		Instructions: h.insns(m),
		License:      "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load %s program: %w: %w", h.name, ErrUnsupported, err)
	}
	defer prog.Close() // the link holds it
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if err := l.Update(prog); err != nil {
			l.Close()
			return nil, fmt.Errorf("replace the %s program of pinned link %s: %w", h.name, pin, err)
		}
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w: %w", h.name, cgroupPath, ErrUnsupported, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin link %s: %w", pin, err)
	}
	return l, nil
}

// Repair finds what another process (root: bpftool, a cleanup script)
// undid of the restriction and puts it back: a link detached from its
// cgroup (BPF_LINK_DETACH) is replaced by a new attachment, a link or map
// whose pin was removed is pinned again (while egressd holds it, an
// unpinned program stays attached; it would go with egressd). It returns
// what it found, in words, empty when nothing was undone.
func (g *Guard) Repair() ([]string, error) {
	var found []string
	var errs []error
	for i, h := range hooks {
		pin := filepath.Join(g.dir, h.name)
		l := g.links[i]
		info, err := l.Info()
		if err != nil || info.Cgroup() == nil || info.Cgroup().CgroupId == 0 {
			found = append(found, fmt.Sprintf("listen %s program detached from its cgroup", h.name))
			os.Remove(pin) //nolint:errcheck // the defunct link's pin, if any
			nl, err := attach(h, g.progMaps, g.cgroup, pin)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			l.Close()
			g.links[i] = nl
			continue
		}
		if !pinnedHere(pin, info.ID) {
			found = append(found, fmt.Sprintf("listen %s link unpinned", h.name))
			os.Remove(pin) //nolint:errcheck // another object pinned in its place
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
				continue
			}
			if err := l.Pin(pin); err != nil {
				errs = append(errs, fmt.Errorf("pin link %s: %w", pin, err))
			}
		}
	}
	for name, m := range map[string]*ebpf.Map{"policy": g.policy, "cgroups": g.cgroups, "events": g.events, "lost": g.lost} {
		pin := filepath.Join(g.dir, name)
		if _, err := os.Stat(pin); err == nil {
			continue
		}
		found = append(found, fmt.Sprintf("listen %s map unpinned", name))
		if err := m.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
			continue
		}
		if err := m.Pin(pin); err != nil {
			errs = append(errs, fmt.Errorf("pin map %s: %w", pin, err))
		}
	}
	sort.Strings(found)
	return found, errors.Join(errs...)
}

// pinnedHere reports whether pin holds the link id.
func pinnedHere(pin string, id link.ID) bool {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	return err == nil && info.ID == id
}

// Attached reports what of the restriction pinned in dir is missing or
// detached (check): a hook whose pin is gone, or whose link no longer
// attaches its program to a cgroup.
func Attached(dir string) []string {
	var out []string
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(filepath.Join(dir, h.name), nil)
		if err != nil {
			out = append(out, fmt.Sprintf("listen %s program not pinned", h.name))
			continue
		}
		info, err := l.Info()
		if err != nil || info.Cgroup() == nil || info.Cgroup().CgroupId == 0 {
			out = append(out, fmt.Sprintf("listen %s program detached from its cgroup", h.name))
		}
		l.Close()
	}
	return out
}

// Close releases egressd's handles; the pins keep the programs attached.
func (g *Guard) Close() error {
	for _, l := range g.links {
		l.Close()
	}
	g.links = nil
	for _, m := range []*ebpf.Map{g.policy, g.cgroups, g.events, g.lost} {
		if m != nil {
			m.Close()
		}
	}
	g.progMaps = progMaps{}
	return nil
}

// Remove detaches the programs pinned in dir and deletes the pins: the end
// of the listen restriction (egressd remove, on_exit: remove). Nothing
// pinned is not an error.
func Remove(dir string) error {
	var errs []error
	for _, h := range hooks {
		pin := filepath.Join(dir, h.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", pin, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
		}
		l.Close()
	}
	for _, name := range []string{"policy", "cgroups", "events", "lost"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Pinned reports whether dir holds egressd's pinned links (plan, check).
func Pinned(dir string) []string {
	var out []string
	for _, h := range hooks {
		if _, err := os.Stat(filepath.Join(dir, h.name)); err == nil {
			out = append(out, h.name)
		}
	}
	return out
}

// Apply makes the policy map hold p. Ports are added before the uid's marker
// and removed after it, so a uid never passes through a state stricter or
// looser than both the old and the new policy allow.
func (g *Guard) Apply(p Policy) error {
	have, err := entries[key](g.policy)
	if err != nil {
		return err
	}
	return applyPolicy(g.policy, have, p)
}

// kvMap is what syncing writes to a map (an *ebpf.Map).
type kvMap interface {
	Put(key, value interface{}) error
	Delete(key interface{}) error
}

// applyPolicy brings m, which holds have, to p (Apply).
func applyPolicy(m kvMap, have map[key]uint8, p Policy) error {
	want := map[key]uint8{}
	for uid, r := range p {
		want[key{UID: uid}] = r.mode()
		for _, pt := range r.Ports {
			if pt.Port == 0 {
				return fmt.Errorf("uid %d: port 0 cannot be listed", uid)
			}
			want[key{UID: uid, Port: pt.Port, Proto: pt.Proto}] = 1
		}
	}
	return syncMap(m, have, want, func(k key) bool { return k.Port == 0 },
		func(k key) string { return fmt.Sprintf("uid %d port %d/%d", k.UID, k.Port, k.Proto) }, nil)
}

// ApplyCgroups makes the cgroup map hold c, in the order Apply keeps; its
// key 0 (units restricted or expected) is set before the first marker goes
// in and deleted after the last one went, unless c holds Expected.
func (g *Guard) ApplyCgroups(c Cgroups) error {
	have, err := entries[cgroupKey](g.cgroups)
	if err != nil {
		return err
	}
	return applyCgroups(g.cgroups, have, c)
}

// applyCgroups brings m, which holds have, to c (ApplyCgroups).
func applyCgroups(m kvMap, have map[cgroupKey]uint8, c Cgroups) error {
	want := map[cgroupKey]uint8{}
	_, expected := c[Expected]
	for id, r := range c {
		if id == Expected {
			continue
		}
		want[cgroupKey{ID: id}] = r.mode()
		for _, pt := range r.Ports {
			if pt.Port == 0 {
				return fmt.Errorf("cgroup %d: port 0 cannot be listed", id)
			}
			want[cgroupKey{ID: id, Port: pt.Port, Proto: pt.Proto}] = 1
		}
	}
	old, hadMask := have[cgroupKey{}]
	delete(have, cgroupKey{})
	setMask := func(v uint8) error {
		if hadMask && v == old {
			return nil
		}
		if err := m.Put(cgroupKey{}, v); err != nil {
			return fmt.Errorf("listen policy: set the units marker: %w", err)
		}
		hadMask, old = true, v
		return nil
	}
	beforeMarkers := func() error {
		if len(want) == 0 && !expected {
			return nil
		}
		return setMask(1)
	}
	if err := syncMap(m, have, want, func(k cgroupKey) bool { return k.Port == 0 },
		func(k cgroupKey) string { return fmt.Sprintf("cgroup %d port %d/%d", k.ID, k.Port, k.Proto) }, beforeMarkers); err != nil {
		return err
	}
	if len(want) == 0 && !expected {
		if hadMask {
			if err := m.Delete(cgroupKey{}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("listen policy: delete the units marker: %w", err)
			}
		}
		return nil
	}
	return setMask(1)
}

func (r Rule) mode() uint8 {
	if r.Audit {
		return modeAudit
	}
	return modeEnforce
}

// syncMap brings m from have to want: markers lifted first, then new ports,
// (beforeMarkers,) new markers, stale ports last.
func syncMap[K comparable](m kvMap, have, want map[K]uint8, marker func(K) bool, what func(K) string, beforeMarkers func() error) error {
	if len(want) > MaxEntries {
		return fmt.Errorf("listen policy has %d entries, more than the %d the map holds", len(want), MaxEntries)
	}
	put := func(markers bool) error {
		for k, v := range want {
			if marker(k) != markers {
				continue
			}
			if hv, ok := have[k]; ok && hv == v {
				continue
			}
			if err := m.Put(k, v); err != nil {
				return fmt.Errorf("listen policy: set %s: %w", what(k), err)
			}
		}
		return nil
	}
	del := func(markers bool) error {
		for k := range have {
			if _, ok := want[k]; ok || marker(k) != markers {
				continue
			}
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("listen policy: delete %s: %w", what(k), err)
			}
		}
		return nil
	}
	steps := []func() error{func() error { return del(true) }, func() error { return put(false) }}
	if beforeMarkers != nil {
		steps = append(steps, beforeMarkers)
	}
	steps = append(steps, func() error { return put(true) }, func() error { return del(false) })
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func entries[K comparable](m *ebpf.Map) (map[K]uint8, error) {
	have := map[K]uint8{}
	var k K
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read listen policy: %w", err)
	}
	return have, nil
}

// ReadPinned returns the policy the kernel holds in the map pinned in dir
// (check, plan), without loading or attaching anything.
func ReadPinned(dir string) (Policy, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "policy"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read the listen restriction pinned in %s: %w", dir, err)
	}
	defer m.Close()
	return (&Guard{progMaps: progMaps{policy: m}}).Loaded()
}

// Loaded returns the policy the kernel holds (plan, check).
func (g *Guard) Loaded() (Policy, error) {
	have, err := entries[key](g.policy)
	if err != nil {
		return nil, err
	}
	return policyOf(have), nil
}

// policyOf is the policy a policy map holding have enforces.
func policyOf(have map[key]uint8) Policy {
	p := Policy{}
	for k, v := range have {
		if k.Port == 0 {
			p[k.UID] = Rule{Audit: v == modeAudit, Ports: p[k.UID].Ports}
		}
	}
	for k := range have {
		if r, ok := p[k.UID]; ok && k.Port != 0 {
			r.Ports = append(r.Ports, Port{Proto: k.Proto, Port: k.Port})
			p[k.UID] = r
		}
	}
	for _, r := range p {
		sortPorts(r.Ports)
	}
	return p
}

// ReadPinnedCgroups returns the unit cgroups' restriction the kernel holds
// in the map pinned in dir (check, plan).
// An earlier egressd's pins without the cgroup map hold none.
func ReadPinnedCgroups(dir string) (Cgroups, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "cgroups"), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, "policy")); perr == nil {
			return Cgroups{}, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read the listen restriction pinned in %s: %w", dir, err)
	}
	defer m.Close()
	return (&Guard{progMaps: progMaps{cgroups: m}}).LoadedCgroups()
}

// UnitsExpected reports whether the cgroup map pinned in dir says that unit
// rules are in force or expected (its key 0): the start gate's answer when
// it cannot read the configuration. No map: none expected.
func UnitsExpected(dir string) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "cgroups"), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("the listen restriction pinned in %s: %w", dir, err)
	}
	defer m.Close()
	var v uint8
	err = m.Lookup(cgroupKey{}, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// CgroupPinned reports whether the cgroup map pinned in dir restricts the
// cgroup id now (the start gate of a unit with listen:).
func CgroupPinned(dir string, id uint64) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "cgroups"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return false, fmt.Errorf("the listen restriction pinned in %s: %w", dir, err)
	}
	defer m.Close()
	var v uint8
	err = m.Lookup(cgroupKey{ID: id}, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// UIDPinned reports whether the policy map pinned in dir restricts uid now
// (the start gate of a user allowlist with listen:).
func UIDPinned(dir string, uid uint32) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "policy"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return false, fmt.Errorf("the listen restriction pinned in %s: %w", dir, err)
	}
	defer m.Close()
	var v uint8
	err = m.Lookup(key{UID: uid}, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// UsersExpected reports whether the policy map pinned in dir restricts any
// uid: the user start gate's answer when it cannot read the configuration
// (listen: of user allowlists in force). No map: none expected.
func UsersExpected(dir string) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "policy"), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("the listen restriction pinned in %s: %w", dir, err)
	}
	defer m.Close()
	p, err := (&Guard{progMaps: progMaps{policy: m}}).Loaded()
	if err != nil {
		return false, err
	}
	return len(p) > 0, nil
}

// LoadedCgroups returns the unit cgroups' restriction the kernel holds.
func (g *Guard) LoadedCgroups() (Cgroups, error) {
	have, err := entries[cgroupKey](g.cgroups)
	if err != nil {
		return nil, err
	}
	return cgroupsOf(have), nil
}

// cgroupsOf is the unit cgroups' restriction a cgroup map holding have
// enforces (its units marker aside); it deletes the marker from have.
func cgroupsOf(have map[cgroupKey]uint8) Cgroups {
	delete(have, cgroupKey{})
	c := Cgroups{}
	for k, v := range have {
		if k.Port == 0 {
			c[k.ID] = Rule{Audit: v == modeAudit, Ports: c[k.ID].Ports}
		}
	}
	for k := range have {
		if r, ok := c[k.ID]; ok && k.Port != 0 {
			r.Ports = append(r.Ports, Port{Proto: k.Proto, Port: k.Port})
			c[k.ID] = r
		}
	}
	for _, r := range c {
		sortPorts(r.Ports)
	}
	return c
}

func sortPorts(ps []Port) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Proto != ps[j].Proto {
			return ps[i].Proto < ps[j].Proto
		}
		return ps[i].Port < ps[j].Port
	})
}

// Lost is how many reports the programs could not write because the ring
// buffer was full (the binds were refused all the same), since the
// restriction was first loaded.
func (g *Guard) Lost() (uint64, error) {
	var n uint64
	if err := g.lost.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("read the lost reports counter: %w", err)
	}
	return n, nil
}

// Event is one refused (or, in audit mode, reported) bind or listen.
type Event struct {
	UID   uint32
	Proto uint8
	Port  uint16
	Addr  netip.Addr
	Audit bool
	Hook  int
	// Cgroup is the restricted unit cgroup whose rule refused it; 0 when
	// the uid's rule did.
	Cgroup uint64
}

// Events reads the programs' reports; Close the reader to stop.
func (g *Guard) Events() (*ringbuf.Reader, error) {
	return ringbuf.NewReader(g.events)
}

// Decode parses one ring buffer record.
func Decode(b []byte) (Event, error) {
	if len(b) < eventSize-8 { // an earlier egressd's programs wrote 32 bytes, no cgroup
		return Event{}, fmt.Errorf("bind event of %d bytes, want %d", len(b), eventSize)
	}
	e := Event{
		UID:   binary.NativeEndian.Uint32(b[0:]),
		Port:  binary.NativeEndian.Uint16(b[4:]),
		Proto: b[6],
		Audit: b[8] == modeAudit,
		Hook:  int(b[9]),
	}
	if len(b) >= eventSize {
		e.Cgroup = binary.NativeEndian.Uint64(b[32:])
	}
	switch b[7] {
	case afInet:
		e.Addr = netip.AddrFrom4([4]byte(b[12:16]))
	case afInet6:
		e.Addr = netip.AddrFrom16([16]byte(b[12:28])) // ::ffff:a.b.c.d stays as the service wrote it
	}
	return e, nil
}
