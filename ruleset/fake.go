package ruleset

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Fake is an in-memory kernel for callers' unit tests: it holds a table the
// way the netlink adapter does and answers every read the adapter answers
// (Verify, ReadSets, ReadUsers, ReadAudited, ReadDenyCounters,
// TablePresent, Restore), with the adapter's findings. Tests make it fail
// (Err, FailNext), change it behind the caller's back as another tool
// would (RemoveTable, DropElement, AddElement, DropUser, BreakRules) and
// print it (Dump). It is not a test of the kernel: ruleset's system tests
// run against the real one.
//
// The zero value has no table; a Fake made with a Plan holds that plan.
// Its sets are the logical ones (SetName4, SetName6, DNSSet4, DNSSet6);
// elements keyed by a uid that the users set does not name (ReadSets's
// "uid:N") are not modelled: DropUser drops the user's elements too.
type Fake struct {
	Plan    Plan    // what the table holds: structure, users and elements
	Fulls   int     // full applies (ApplyFull, Restore)
	Deltas  []Delta // deltas applied, in order
	Removed bool    // the table was removed (Remove, RemoveTable)
	Err     error   // returned by the next ApplyFull, ApplyDelta or Remove, then cleared

	// Counters are the packets the deny chain counted per allowlist since
	// the last full apply (which sets them to zero); Deny adds to them.
	Counters map[string]uint64

	// Proxy is what the DNS proxy added (AddProxy), kept across full
	// applies for uids that still have dns: proxy, as the adapter keeps
	// them; timeouts are not counted down.
	Proxy []ProxyElement

	// mu guards Proxy, errs and calls: the DNS proxy writes from its own
	// goroutine, as it does to the real kernel.
	mu     sync.Mutex
	errs   map[string]error // per method, for its next call (FailNext)
	broken map[string]bool  // chains whose rules were changed (BreakRules)
	// chains are the table's chains as the kernel would hold them: the
	// layout's objects of the last full apply, in the form Verify reads
	// (Table.kernelForm), changed by BreakRules.
	chains map[string]kernelChain
	calls  map[string]int
}

// Method names for FailNext and Calls.
const (
	FakeApplyFull        = "ApplyFull"
	FakeApplyDelta       = "ApplyDelta"
	FakeRemove           = "Remove"
	FakeRestore          = "Restore"
	FakeVerify           = "Verify"
	FakeReadSets         = "ReadSets"
	FakeReadUsers        = "ReadUsers"
	FakeReadAudited      = "ReadAudited"
	FakeReadDenyCounters = "ReadDenyCounters"
	FakeTablePresent     = "TablePresent"
	FakeAddProxy         = "AddProxy"
	FakeDeleteProxy      = "DeleteProxy"
)

// FailNext makes the next call of method (FakeApplyFull, FakeVerify, ...)
// return err, changing nothing.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]error{}
	}
	f.errs[method] = err
}

// Calls is how often method was called (failed calls included).
func (f *Fake) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *Fake) call(method string, kernel bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[method]++
	if err, ok := f.errs[method]; ok {
		delete(f.errs, method)
		return err
	}
	if kernel {
		err := f.Err
		f.Err = nil
		return err
	}
	return nil
}

// exists: the table is there.
func (f *Fake) exists() bool {
	return !f.Removed && (f.Fulls > 0 || f.Plan.Sets != nil || f.Plan.Allowlists != nil)
}

var errFakeNoTable = errors.New("fake kernel: table inet " + TableName + " does not exist (ENOENT)")

// copyPlan copies the plan's map, so that later changes to the fake's table
// do not reach the caller's plan (element slices are never written).
func copyPlan(p Plan) Plan {
	out := Plan{Allowlists: append([]AllowlistPlan(nil), p.Allowlists...), DenyLog: p.DenyLog, ProxyPort: p.ProxyPort, Sets: make(map[string][]Element, len(p.Sets)),
		Cgroups: append([]Cgroup(nil), p.Cgroups...)}
	for k, v := range p.Sets {
		out.Sets[k] = v
	}
	for k, v := range p.Until {
		out.setUntil(k, v)
	}
	return out
}

// ApplyFull implements Kernel: the table is replaced, its counters start at
// zero, changed rules are rebuilt.
func (f *Fake) ApplyFull(p Plan) error {
	if err := f.call(FakeApplyFull, true); err != nil {
		return err
	}
	if _, err := placeElements(p.Sets, nil, subjects(p)); err != nil {
		return fmt.Errorf("build full ruleset: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Plan, f.Removed, f.broken, f.Counters = copyPlan(p), false, nil, nil
	f.chains = fakeChains(p)
	f.Fulls++
	var kept []ProxyElement
	for _, pe := range f.Proxy {
		for _, ch := range p.Of(SubjectUser) {
			if ch.Subject.ID == pe.UID && ch.Proxy {
				kept = append(kept, pe)
				break
			}
		}
	}
	f.Proxy = kept
	return nil
}

// AddProxy implements ProxyKernel: an element there already gets the new
// timeout and keeps its name. A missing table fails the transaction.
func (f *Fake) AddProxy(es []ProxyElement) error {
	if err := f.call(FakeAddProxy, true); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists() {
		return errFakeNoTable
	}
next:
	for _, pe := range es {
		pe.Name = CommentFor(pe.Name) // what the kernel keeps
		for i, have := range f.Proxy {
			if have.UID == pe.UID && have.Element == pe.Element {
				if have.Name != "" {
					pe.Name = have.Name // a renewal keeps the comment (Linux 6.10 and later)
				}
				f.Proxy[i] = pe
				continue next
			}
		}
		f.Proxy = append(f.Proxy, pe)
	}
	return nil
}

// DeleteProxy implements ProxyKernel: elements that are not there are
// ignored. A missing table fails the transaction.
func (f *Fake) DeleteProxy(es []ProxyElement) error {
	if err := f.call(FakeDeleteProxy, true); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists() {
		return errFakeNoTable
	}
	gone := map[[2]any]bool{}
	for _, pe := range es {
		gone[[2]any{pe.UID, pe.Element}] = true
	}
	kept := f.Proxy[:0]
	for _, pe := range f.Proxy {
		if !gone[[2]any{pe.UID, pe.Element}] {
			kept = append(kept, pe)
		}
	}
	f.Proxy = kept
	return nil
}

// ReadProxy implements ProxyKernel.
func (f *Fake) ReadProxy() ([]ProxyElement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists() {
		return nil, ErrNoTable
	}
	return append([]ProxyElement(nil), f.Proxy...), nil
}

// Restore recreates a removed table, as Netlink.Restore does; it fails,
// changing nothing, if the table exists.
func (f *Fake) Restore(p Plan) error {
	if err := f.call(FakeRestore, false); err != nil {
		return err
	}
	if f.exists() {
		return errors.New("fake kernel: table inet " + TableName + " exists (EEXIST)")
	}
	if _, err := placeElements(p.Sets, nil, subjects(p)); err != nil {
		return fmt.Errorf("build ruleset: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Proxy = nil // a new table: the proxy writes its answers again
	f.Plan, f.Removed, f.broken, f.Counters = copyPlan(p), false, nil, nil
	f.chains = fakeChains(p)
	f.Fulls++
	return nil
}

// ApplyDelta implements Kernel with the kernel's strictness: a missing
// table, a set of an allowlist p has no uid for, or the deletion of an
// element the table does not hold fails the whole transaction.
func (f *Fake) ApplyDelta(p Plan, d Delta) error {
	if err := f.call(FakeApplyDelta, true); err != nil {
		return err
	}
	if len(d) == 0 {
		return nil
	}
	if !f.exists() {
		return errFakeNoTable
	}
	next := copyPlan(f.Plan)
	for _, name := range sortedKeys(d) {
		sd := d[name]
		if _, err := placeElements(map[string][]Element{name: append(append([]Element(nil), sd.Add...), sd.Del...)}, nil, subjects(p)); err != nil {
			return fmt.Errorf("build delta: %w", err)
		}
		have := map[Element]bool{}
		for _, e := range next.Sets[name] {
			have[e] = true
		}
		for _, e := range sd.Del {
			if !have[e] {
				return fmt.Errorf("fake kernel: delete %s from %s: no such element (ENOENT)", e, name)
			}
			delete(have, e)
		}
		for _, e := range sd.Add {
			have[e] = true
		}
		out := make([]Element, 0, len(have))
		for e := range have {
			out = append(out, e)
		}
		sortElements(out)
		next.Sets[name] = out
		// The lifetimes the kernel now holds: the plan's, where the set is
		// the plan's (renewals change no element).
		delete(next.Until, name)
		if u := p.Until[name]; u != nil && len(p.Sets[name]) == len(out) {
			next.setUntil(name, u)
		}
	}
	f.Plan = next
	f.Deltas = append(f.Deltas, d)
	return nil
}

// Remove implements Kernel; a missing table is not an error.
func (f *Fake) Remove() error {
	if err := f.call(FakeRemove, true); err != nil {
		return err
	}
	f.Removed, f.Proxy = true, nil
	return nil
}

// Verify implements Verifier with the netlink adapter's comparisons.
func (f *Fake) Verify(p Plan) ([]Finding, error) {
	if err := f.call(FakeVerify, false); err != nil {
		return nil, err
	}
	if !f.exists() {
		return []Finding{{Kind: "table_missing", Object: "inet " + TableName, Detail: "the table does not exist"}}, nil
	}
	want, _ := layout(p, nil)
	chains := f.chains
	if chains == nil { // a Fake made with a Plan: it holds that plan's chains
		chains = fakeChains(f.Plan)
	}
	fs := diffChains(want.Chains, chains)
	fs = append(fs, elementFindings(p, f.sets(), time.Now())...)
	fs = append(fs, usersFindings(p, f.users())...)
	for _, name := range []string{kOwners, kDNSUsers, kAudit} {
		fs = append(fs, uidSetFindings(name, p, f.uidSet(name))...)
	}
	return append(fs, f.unitFindings(p)...), nil
}

// ReadSets returns the table's non-empty sets, as Netlink.ReadSets does.
func (f *Fake) ReadSets() (map[string][]Element, error) {
	if err := f.read(FakeReadSets); err != nil {
		return nil, err
	}
	return f.sets(), nil
}

// read counts a read of the table and fails it as FailNext says, or for a
// missing table.
func (f *Fake) read(method string) error {
	if err := f.call(method, false); err != nil {
		return err
	}
	if !f.exists() {
		return ErrNoTable
	}
	return nil
}

func (f *Fake) sets() map[string][]Element {
	out := map[string][]Element{}
	for name, es := range f.Plan.Sets {
		if len(es) > 0 {
			out[name] = append([]Element(nil), es...)
		}
	}
	return out
}

// ReadUsers returns the protected uids and their allowlists.
func (f *Fake) ReadUsers() (map[uint32]string, error) {
	if err := f.read(FakeReadUsers); err != nil {
		return nil, err
	}
	return f.users(), nil
}

func (f *Fake) users() map[uint32]string {
	out := map[uint32]string{}
	for _, ch := range f.Plan.Of(SubjectUser) {
		out[ch.Subject.ID] = listedAs(ch)
	}
	return out
}

// uidSet is what the table's owners, dnsusers or audit set holds.
func (f *Fake) uidSet(name string) map[uint32]bool {
	out := map[uint32]bool{}
	member := uidSetMember(name)
	for _, ch := range f.Plan.Of(SubjectUser) {
		if member(ch) {
			out[ch.Subject.ID] = true
		}
	}
	return out
}

// ReadAudited returns the uids in audit mode.
func (f *Fake) ReadAudited() (map[uint32]bool, error) {
	if err := f.read(FakeReadAudited); err != nil {
		return nil, err
	}
	return f.uidSet(kAudit), nil
}

// ReadDenyCounters implements CounterReader: every protected allowlist,
// with the packets Deny counted since the last full apply.
func (f *Fake) ReadDenyCounters() (map[string]uint64, error) {
	if err := f.read(FakeReadDenyCounters); err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, ch := range f.Plan.Of(SubjectUser) {
		out[ch.Allowlist] = f.Counters[ch.Allowlist]
	}
	return out, nil
}

// TablePresent reports whether the table exists.
func (f *Fake) TablePresent() (bool, error) {
	if err := f.call(FakeTablePresent, false); err != nil {
		return false, err
	}
	return f.exists(), nil
}

// Deny counts n denied packets of an allowlist's user.
func (f *Fake) Deny(allowlist string, n uint64) {
	if f.Counters == nil {
		f.Counters = map[string]uint64{}
	}
	f.Counters[allowlist] += n
}

// RemoveTable removes the table behind the caller's back (nft delete
// table, nft flush ruleset).
func (f *Fake) RemoveTable() { f.Removed, f.Proxy = true, nil }

// DropElement deletes an element from a logical set behind the caller's
// back; it reports whether the set held it.
func (f *Fake) DropElement(set string, e Element) bool {
	var out []Element
	found := false
	for _, h := range f.Plan.Sets[set] {
		if h == e && !found {
			found = true
			continue
		}
		out = append(out, h)
	}
	if found {
		f.Plan = copyPlan(f.Plan)
		f.Plan.Sets[set] = out
	}
	return found
}

// AddElement adds an element to a logical set behind the caller's back
// (the set is created if the table had none of that name).
func (f *Fake) AddElement(set string, e Element) {
	f.Plan = copyPlan(f.Plan)
	out := append(append([]Element(nil), f.Plan.Sets[set]...), e)
	sortElements(out)
	f.Plan.Sets[set] = out
}

// DropUser removes a uid from the users (and owners, dnsusers, audit)
// sets behind the caller's back, with its allowlist's elements.
func (f *Fake) DropUser(uid uint32) {
	f.Plan = copyPlan(f.Plan)
	var keep []AllowlistPlan
	for _, ch := range f.Plan.Allowlists {
		if ch.Subject.Kind != SubjectUser || ch.Subject.ID != uid {
			keep = append(keep, ch)
			continue
		}
		delete(f.Plan.Sets, SetName4(ch.Allowlist))
		delete(f.Plan.Sets, SetName6(ch.Allowlist))
	}
	f.Plan.Allowlists = keep
}

// BreakRules changes a chain's rules behind the caller's back, as another
// tool would: its last rule is deleted (a chain that has none, or is not
// there, gets a counter rule). Verify reports rules_differ (chain_extra)
// until a full apply.
func (f *Fake) BreakRules(chain string) {
	if f.broken == nil {
		f.broken = map[string]bool{}
	}
	f.broken[chain] = true
	if f.chains == nil {
		f.chains = fakeChains(f.Plan)
	}
	kc, ok := f.chains[chain]
	switch {
	case ok && len(kc.rules) > 0:
		kc.rules = kc.rules[:len(kc.rules)-1]
	case ok:
		kc.rules = []string{"counter"}
	default:
		kc = kernelChain{ch: Chain{Name: chain}.kernel(), rules: []string{"counter"}}
	}
	f.chains[chain] = kc
}

// fakeChains are the chains the kernel holds after a full apply of p.
func fakeChains(p Plan) map[string]kernelChain {
	t, _ := layout(p, nil)
	return t.kernelForm()
}

// Dump prints the table as nft text (Plan.NFT), with a comment per chain
// whose rules were changed; "" when there is no table.
func (f *Fake) Dump() string {
	if !f.exists() {
		return ""
	}
	text := f.Plan.NFT()
	chains := make([]string, 0, len(f.broken))
	for ch := range f.broken {
		chains = append(chains, ch)
	}
	sort.Strings(chains)
	for _, ch := range chains {
		text = strings.Replace(text, "\tchain "+ch+" {\n", "\tchain "+ch+" { # rules changed by another tool\n", 1)
	}
	return text
}
