//go:build linux

// Package bindguard owns egressd's listen restriction (an allowlist's
// listen: key): cgroup BPF programs on the bind, post-bind and ingress hooks
// of a cgroup, the policy map the daemon keeps current, the ring buffer the
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

// MaxEntries bounds the policy map (uid markers plus listed ports).
const MaxEntries = 65536

const eventsSize = 256 << 10

var (
	policySpec = &ebpf.MapSpec{Name: "egressd_listen", Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: MaxEntries}
	eventsSpec = &ebpf.MapSpec{Name: "egressd_binddeny", Type: ebpf.RingBuf, MaxEntries: eventsSize}
)

// hook is one attachment: a program on one cgroup hook, pinned under a name.
type hook struct {
	name   string
	typ    ebpf.ProgramType
	attach ebpf.AttachType
	insns  func(policy, events *ebpf.Map) asm.Instructions
}

var hooks = []hook{
	{"bind4", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind, func(p, e *ebpf.Map) asm.Instructions { return bindProgram(p, e, afInet) }},
	{"bind6", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Bind, func(p, e *ebpf.Map) asm.Instructions { return bindProgram(p, e, afInet6) }},
	{"ingress", ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress, ingressProgram},
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
	policy *ebpf.Map
	events *ebpf.Map
	links  []link.Link
}

// ErrUnsupported wraps a kernel that lacks a feature the restriction needs
// (cgroup v2 BPF hooks, ring buffers; Linux ≥ 5.8).
var ErrUnsupported = errors.New("the kernel cannot enforce listen: (needs cgroup v2 BPF bind and ingress hooks and BPF ring buffers, Linux 5.8 or later)")

// Open loads the programs and attaches them to the cgroup at cgroupPath, or
// takes over those pinned in dir by an earlier egressd (replacing their
// programs in place, so the hooks are never empty). dir must be on bpffs.
func Open(cgroupPath, dir string) (_ *Guard, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bpf pin directory: %w", err)
	}
	g := &Guard{dir: dir}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if g.policy, err = pinnedMap(policySpec, filepath.Join(dir, "policy")); err != nil {
		return nil, err
	}
	if g.events, err = pinnedMap(eventsSpec, filepath.Join(dir, "events")); err != nil {
		return nil, err
	}
	for _, h := range hooks {
		l, err := attach(h, g.policy, g.events, cgroupPath, filepath.Join(dir, h.name))
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

func attach(h hook, policy, events *ebpf.Map, cgroupPath, pin string) (link.Link, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "egressd_" + h.name,
		Type:         h.typ,
		AttachType:   h.attach,
		Instructions: h.insns(policy, events),
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

// Close releases egressd's handles; the pins keep the programs attached.
func (g *Guard) Close() error {
	for _, l := range g.links {
		l.Close()
	}
	g.links = nil
	for _, m := range []*ebpf.Map{g.policy, g.events} {
		if m != nil {
			m.Close()
		}
	}
	g.policy, g.events = nil, nil
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
	for _, name := range []string{"policy", "events"} {
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
	want := map[key]uint8{}
	for uid, r := range p {
		mode := uint8(modeEnforce)
		if r.Audit {
			mode = modeAudit
		}
		want[key{UID: uid}] = mode
		for _, pt := range r.Ports {
			if pt.Port == 0 {
				return fmt.Errorf("uid %d: port 0 cannot be listed", uid)
			}
			want[key{UID: uid, Port: pt.Port, Proto: pt.Proto}] = 1
		}
	}
	if len(want) > MaxEntries {
		return fmt.Errorf("listen policy has %d entries, more than the %d the map holds", len(want), MaxEntries)
	}
	have, err := g.entries()
	if err != nil {
		return err
	}
	put := func(marker bool) error {
		for k, v := range want {
			if (k.Port == 0) != marker || have[k] == v {
				continue
			}
			if err := g.policy.Put(k, v); err != nil {
				return fmt.Errorf("listen policy: set uid %d port %d/%d: %w", k.UID, k.Port, k.Proto, err)
			}
		}
		return nil
	}
	del := func(marker bool) error {
		for k := range have {
			if _, ok := want[k]; ok || (k.Port == 0) != marker {
				continue
			}
			if err := g.policy.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("listen policy: delete uid %d port %d/%d: %w", k.UID, k.Port, k.Proto, err)
			}
		}
		return nil
	}
	// Lifting a restriction: its marker goes first. Narrowing: stale ports go
	// last, after new ports and markers are in.
	for _, step := range []func() error{func() error { return del(true) }, func() error { return put(false) }, func() error { return put(true) }, func() error { return del(false) }} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (g *Guard) entries() (map[key]uint8, error) {
	have := map[key]uint8{}
	var k key
	var v uint8
	it := g.policy.Iterate()
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
	return (&Guard{policy: m}).Loaded()
}

// Loaded returns the policy the kernel holds (plan, check).
func (g *Guard) Loaded() (Policy, error) {
	have, err := g.entries()
	if err != nil {
		return nil, err
	}
	p := Policy{}
	for k, v := range have {
		if k.Port == 0 {
			r := p[k.UID]
			r.Audit = v == modeAudit
			p[k.UID] = r
		}
	}
	for k := range have {
		if r, ok := p[k.UID]; ok && k.Port != 0 {
			r.Ports = append(r.Ports, Port{Proto: k.Proto, Port: k.Port})
			p[k.UID] = r
		}
	}
	for uid, r := range p {
		sort.Slice(r.Ports, func(i, j int) bool {
			if r.Ports[i].Proto != r.Ports[j].Proto {
				return r.Ports[i].Proto < r.Ports[j].Proto
			}
			return r.Ports[i].Port < r.Ports[j].Port
		})
		p[uid] = r
	}
	return p, nil
}

// Event is one refused (or, in audit mode, reported) bind or listen.
type Event struct {
	UID   uint32
	Proto uint8
	Port  uint16
	Addr  netip.Addr
	Audit bool
	Hook  int
}

// Events reads the programs' reports; Close the reader to stop.
func (g *Guard) Events() (*ringbuf.Reader, error) {
	return ringbuf.NewReader(g.events)
}

// Decode parses one ring buffer record.
func Decode(b []byte) (Event, error) {
	if len(b) < eventSize {
		return Event{}, fmt.Errorf("bind event of %d bytes, want %d", len(b), eventSize)
	}
	e := Event{
		UID:   binary.NativeEndian.Uint32(b[0:]),
		Port:  binary.NativeEndian.Uint16(b[4:]),
		Proto: b[6],
		Audit: b[8] == modeAudit,
		Hook:  int(b[9]),
	}
	switch b[7] {
	case afInet:
		e.Addr = netip.AddrFrom4([4]byte(b[12:16]))
	case afInet6:
		e.Addr = netip.AddrFrom16([16]byte(b[12:28])) // ::ffff:a.b.c.d stays as the service wrote it
	}
	return e, nil
}
