package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/ruleset"
	"github.com/miekg/dns"
)

// Explanation answers "would USER be allowed to reach HOST:PORT right now",
// from the live kernel state.
type Explanation struct {
	Version   int           `json:"version"`   // 1
	ExitCode  int           `json:"exit_code"` // as the command exits
	Verdict   string        `json:"verdict"`   // allowed | denied | unrestricted | cannot_answer
	Error     string        `json:"error,omitempty"`
	User      string        `json:"user"`
	Unit      string        `json:"unit,omitempty"` // asked about a unit (check --explain UNIT ...)
	UID       uint32        `json:"uid"`
	Allowlist string        `json:"allowlist,omitempty"`
	Target    string        `json:"target"`
	Proto     string        `json:"proto"`
	Port      uint16        `json:"port"`
	Addresses []AddrVerdict `json:"addresses"`
	Nearest   []string      `json:"nearest,omitempty"`
	Source    string        `json:"source,omitempty"`    // which source answered the fresh lookup of a name: hosts | dns
	ProxyNote string        `json:"dns_proxy,omitempty"` // dns: proxy: whether the proxy answers the name, by which entry
	Reason    string        `json:"reason"`
}

// AddrVerdict is the answer for one address the target resolves to.
type AddrVerdict struct {
	Addr    string `json:"addr"`
	Allowed bool   `json:"allowed"`
	Set     string `json:"set,omitempty"`
	Element string `json:"element,omitempty"`
	Entry   string `json:"entry,omitempty"` // the allowlist entry, with file:line
	Note    string `json:"note,omitempty"`  // e.g. a lingering address: it left the DNS answers
	// KernelLifetime is the time the kernel's element has left (an address
	// from DNS or the hosts file): the kernel ends it then by itself, whether
	// or not egressd runs, unless egressd renews it. Empty: it never ends.
	KernelLifetime string `json:"kernel_lifetime,omitempty"`
}

// CannotAnswer is the explanation printed when Explain returns an error.
func CannotAnswer(user, target string, err error) *Explanation {
	return &Explanation{Version: 1, ExitCode: ExitInvalid, Verdict: "cannot_answer", Error: err.Error(), User: user, Target: target, Addresses: []AddrVerdict{}}
}

// finish sets the exit code from the verdict.
func (x *Explanation) finish() *Explanation {
	x.Version = 1
	x.ExitCode = ExitOK
	if x.Verdict == "denied" {
		x.ExitCode = ExitProblem
	}
	return x
}

// Explain looks the question up in the live kernel. An error means it
// cannot be answered (exit 2).
func Explain(ctx context.Context, o Options, user, target string) (*Explanation, error) {
	x, err := explain(ctx, o, user, target)
	if err != nil {
		return nil, err
	}
	return x.finish(), nil
}

func explain(ctx context.Context, o Options, user, target string) (*Explanation, error) {
	o.defaults()
	e, err := config.ParseEntry(target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if e.PortFrom != e.PortTo || (!e.IsName() && e.Prefix.Bits() != e.Prefix.Addr().BitLen()) {
		return nil, fmt.Errorf("target %q: give one address or name and one port", target)
	}
	x := &Explanation{User: user, Target: target, Proto: e.Proto.String(), Port: e.PortFrom, Addresses: []AddrVerdict{}}
	if user == "root" || user == "0" {
		x.Verdict, x.Reason = "unrestricted", "root (uid 0) is never restricted by egressd"
		return x, nil
	}
	if !o.CanAdmin() {
		return nil, errors.New(NotAdminMsg + " (run as root)")
	}
	cfg, err := config.LoadTrusted(o.ConfigPath, o.ConfigRequired, o.Trust)
	if err != nil {
		return nil, fmt.Errorf("configuration invalid: %w", err)
	}
	if IsUnitName(user) {
		return explainUnit(ctx, o, cfg, x, e, user)
	}
	var uid uint32
	if n, ok := (&config.Allowlist{User: user}).NumericUID(); ok {
		uid = n
	} else if uid, err = o.Users(user); err != nil {
		for _, a := range cfg.Allowlists {
			if a.Name == user {
				return nil, fmt.Errorf("no user %q: %q is an allowlist (%s), whose user is %q; ask about the user: egressd check --explain %s %s", user, user, a.File, a.User, a.User, target)
			}
		}
		return nil, fmt.Errorf("user %q: %w", user, err)
	}
	x.UID = uid
	if uid == 0 {
		x.Verdict, x.Reason = "unrestricted", "root (uid 0) is never restricted by egressd"
		return x, nil
	}
	users, err := o.Kernel.ReadUsers()
	if errors.Is(err, ruleset.ErrNoTable) {
		x.Verdict, x.Reason = "unrestricted", "table inet egressd does not exist: nobody is restricted"
		return x, nil
	}
	if err != nil {
		return nil, err
	}
	allowlist, ok := users[uid]
	if !ok {
		x.Verdict, x.Reason = "unrestricted", fmt.Sprintf("uid %d has no allowlist in the kernel: egressd does not restrict it", uid)
		for _, a := range cfg.Allowlists {
			if u, err := a.UID(o.Users); err == nil && u == uid {
				x.Reason += fmt.Sprintf(" (but %s names this user: run egressd check)", a.File)
			}
		}
		return x, nil
	}
	x.Allowlist = allowlist
	var al *config.Allowlist
	for _, a := range cfg.Allowlists {
		if a.Name == x.Allowlist {
			al = a
		}
	}
	sets, err := o.Kernel.ReadSets()
	if err != nil {
		return nil, err
	}

	return judge(ctx, o, cfg, x, e, al, sets, audited(o.Kernel, uid))
}

// judge answers for the allowlist x names (its sets, al its configuration):
// the target's addresses, each allowed or not, and the verdict.
func judge(ctx context.Context, o Options, cfg *config.Config, x *Explanation, e config.Entry, al *config.Allowlist, sets map[string][]ruleset.Element, isAudited bool) (*Explanation, error) {
	// dns: proxy: what the proxy answered for this uid, and whether the
	// proxy would answer the name at all.
	proxied := al != nil && al.DNS == config.DNSProxy && x.Unit == ""
	var proxyEls []ruleset.ProxyElement
	if pk, ok := o.Kernel.(ruleset.ProxyKernel); ok && proxied {
		if all, err := pk.ReadProxy(); err == nil {
			for _, pe := range all {
				if pe.UID == x.UID && x.Unit == "" {
					proxyEls = append(proxyEls, pe)
				}
			}
		}
	}
	var matching []config.Entry
	if proxied && e.IsName() {
		for _, en := range al.Entries {
			if en.MatchesName(e.Host) {
				matching = append(matching, en)
			}
		}
		if len(matching) == 0 {
			x.ProxyNote = fmt.Sprintf("dns: proxy: no entry matches %s: the proxy answers the service's queries for it REFUSED (dns_refused)", e.Host)
			if al.DNSUnlisted == config.UnlistedAnswer || al.Mode == config.ModeAudit {
				x.ProxyNote = fmt.Sprintf("dns: proxy: no entry matches %s: the proxy answers it (dns_unlisted: answer or mode: audit), but its addresses are not allowed", e.Host)
			}
		} else {
			x.ProxyNote = fmt.Sprintf("dns: proxy: %s matches %s: an address the proxy answers the service is allowed for its TTL + linger", e.Host, matching[0].Raw)
		}
	}
	// The addresses the target means: literal, or the daemon's view of the
	// name plus a fresh lookup (the service may get either).
	var addrs []netip.Addr
	daemonAddrs, freshAddrs := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	var lingering map[string]time.Time
	if !e.IsName() {
		addrs = []netip.Addr{e.Prefix.Addr()}
	} else {
		if st, err := state.Read(o.RuntimeDir); err == nil {
			lingering = st.Names[e.Host].Lingering
			for _, s := range st.Names[e.Host].Addrs {
				if a, err := netip.ParseAddr(s); err == nil {
					daemonAddrs[a] = true
					addrs = appendAddr(addrs, a)
				}
			}
		}
		q := o.NewQuerier(cfg)
		for _, k := range [2]uint16{dns.TypeA, dns.TypeAAAA} {
			if res, err := q.Query(ctx, e.Host, k); err == nil {
				if x.Source == "" || res.Source == "hosts" {
					x.Source = res.Source
				}
				for _, a := range res.Addrs {
					freshAddrs[a.Unmap()] = true
					addrs = appendAddr(addrs, a)
				}
			}
		}
		if len(addrs) == 0 {
			x.Verdict, x.Reason = "denied", fmt.Sprintf("%s does not resolve (for egressd or now): a connection cannot even start", e.Host)
			return x, nil
		}
	}
	dnsAllowed := al != nil && al.DNS == config.DNSResolvers
	var lifetimes map[string]map[ruleset.Element]time.Duration
	if lr, ok := o.Kernel.(ruleset.LifetimeReader); ok {
		lifetimes, _ = lr.ReadLifetimes() // a report without them still answers
	}
	allowedAny, deniedAny := false, false
	for _, a := range addrs {
		av := AddrVerdict{Addr: a.String()}
		id := ruleset.SetID{Allowlist: x.Allowlist, Kind: subjectKind(x.Unit != "")}
		dnsSet := ruleset.DNSSet4
		if a.Is6() {
			id.V6, dnsSet = true, ruleset.DNSSet6
		}
		setName := id.Name()
		if el, ok := covering(sets[setName], e.Proto, a, e.PortFrom); ok {
			av.Allowed, av.Set, av.Element = true, kernelSet(setName, el), el.String()
			av.Entry = attribute(al, e.Proto, a, e.PortFrom, daemonAddrs, e.Host)
			if left, ok := lifetimes[setName][el]; ok {
				av.KernelLifetime = left.Round(time.Second).String()
			}
		} else if el, ok := covering(sets[dnsSet], e.Proto, a, e.PortFrom); ok && dnsAllowed {
			av.Allowed, av.Set, av.Element, av.Entry = true, kernelSet(dnsSet, el), el.String(), "dns: resolvers (the configured resolvers)"
		} else if pe, ok := coveringProxy(proxyEls, e.Proto, a, e.PortFrom); ok {
			av.Allowed, av.Set, av.Element = true, ruleset.ProxySetName(pe.Element), pe.Element.String()
			av.Entry = "answered by the DNS proxy"
			if pe.Name != "" {
				av.Entry = "answered by the DNS proxy for " + pe.Name
			}
			if len(matching) > 0 {
				av.Entry = fmt.Sprintf("%s (%s), %s", matching[0].Raw, matching[0].Pos, av.Entry)
			}
			av.Note = fmt.Sprintf("the kernel drops it in %s unless the service asks again", pe.Timeout.Round(time.Second))
		} else if len(matching) > 0 {
			av.Note = "not answered to the service through the proxy yet (or expired): allowed once the service resolves the name"
		}
		if until, ok := lingering[a.String()]; ok && e.IsName() {
			av.Note = fmt.Sprintf("no longer in the DNS answers for %s: egressd keeps it (lingering) until %s (in %s), then removes it",
				e.Host, until.Format(time.RFC3339), until.Sub(o.Now()).Round(time.Second))
		} else if e.IsName() && daemonAddrs[a] && !freshAddrs[a] {
			av.Note = fmt.Sprintf("no longer in the DNS answers for %s: egressd keeps it (lingering) until its TTL and then linger (%s) run out, or while DNS fails until stale_grace (%s) runs out; then it is removed", e.Host, cfg.Linger, cfg.StaleGrace)
		}
		if av.Allowed {
			allowedAny = true
		} else {
			deniedAny = true
		}
		x.Addresses = append(x.Addresses, av)
	}
	switch {
	case allowedAny && !deniedAny:
		x.Verdict, x.Reason = "allowed", "every address is in the allowlist's set"
	case allowedAny:
		x.Verdict, x.Reason = "allowed", "some addresses are allowed, others not (the name's answers changed or differ per resolver)"
	default:
		x.Verdict, x.Reason = "denied", "no address is in the allowlist's set: the connection is logged, then rejected"
		if isAudited {
			x.Reason = "no address is in the allowlist's set, but the allowlist is in audit mode: the connection is logged as a deny (\"audit\": true), then let through; it will be rejected once mode: enforce"
		}
		x.Nearest = nearest(al, e, addrs, sets)
	}
	return x, nil
}

func coveringProxy(es []ruleset.ProxyElement, proto config.Proto, a netip.Addr, port uint16) (ruleset.ProxyElement, bool) {
	for _, pe := range es {
		if _, ok := covering([]ruleset.Element{pe.Element}, proto, a, port); ok {
			return pe, true
		}
	}
	return ruleset.ProxyElement{}, false
}

// kernelSet names the nftables set that holds el (nft list set inet egressd NAME).
func kernelSet(logical string, el ruleset.Element) string { return ruleset.KernelSetName(logical, el) }

func appendAddr(list []netip.Addr, a netip.Addr) []netip.Addr {
	a = a.Unmap()
	for _, b := range list {
		if a == b {
			return list
		}
	}
	return append(list, a)
}

func covering(es []ruleset.Element, proto config.Proto, a netip.Addr, port uint16) (ruleset.Element, bool) {
	for _, e := range es {
		if e.Proto == proto && e.AddrFrom.Compare(a) <= 0 && a.Compare(e.AddrTo) <= 0 && e.PortFrom <= port && port <= e.PortTo {
			return e, true
		}
	}
	return ruleset.Element{}, false
}

// attribute names the allowlist entry that put (proto, a, port) in the set.
func attribute(al *config.Allowlist, proto config.Proto, a netip.Addr, port uint16, nameAddrs map[netip.Addr]bool, host string) string {
	if al == nil {
		return ""
	}
	for _, en := range al.Entries {
		if en.Proto != proto || port < en.PortFrom || port > en.PortTo {
			continue
		}
		if !en.IsName() && en.Prefix.Contains(a) {
			return fmt.Sprintf("%s (%s)", en.Raw, en.Pos)
		}
		if en.IsName() && (en.Host == host || nameAddrs[a]) {
			return fmt.Sprintf("%s (%s)", en.Raw, en.Pos)
		}
	}
	for _, en := range al.Entries {
		if en.IsName() && en.Proto == proto && port >= en.PortFrom && port <= en.PortTo {
			return fmt.Sprintf("%s (%s), which resolves to %s", en.Raw, en.Pos, a)
		}
	}
	return ""
}

// nearest lists entries close to a denied target: same host on another
// port or protocol, or the same name allowed on other addresses.
func nearest(al *config.Allowlist, t config.Entry, addrs []netip.Addr, sets map[string][]ruleset.Element) []string {
	if al == nil {
		return nil
	}
	var out []string
	for _, en := range al.Entries {
		sameHost := (t.IsName() && en.Host == t.Host)
		for _, a := range addrs {
			if !en.IsName() && en.Prefix.Contains(a) {
				sameHost = true
			}
		}
		if sameHost && (en.Proto != t.Proto || t.PortFrom < en.PortFrom || t.PortFrom > en.PortTo) {
			out = append(out, fmt.Sprintf("same host, other port: %s (%s)", en.Raw, en.Pos))
		}
	}
	if t.IsName() {
		for _, en := range al.Entries {
			if en.Host == t.Host && en.Proto == t.Proto && t.PortFrom >= en.PortFrom && t.PortFrom <= en.PortTo {
				var allowed []string
				for _, name := range []string{ruleset.SetID{Allowlist: al.Name, Kind: subjectKind(al.IsUnit())}.Name(), ruleset.SetID{Allowlist: al.Name, Kind: subjectKind(al.IsUnit()), V6: true}.Name()} {
					for _, el := range sets[name] {
						if el.Proto == t.Proto && el.PortFrom <= t.PortFrom && t.PortFrom <= el.PortTo {
							allowed = append(allowed, el.String())
						}
					}
				}
				out = append(out, fmt.Sprintf("same name, other address: %s (%s) is listed, but the kernel allows it only at %s; the address you got is not (yet) an answer egressd has seen",
					en.Raw, en.Pos, strings.Join(allowed, ", ")))
			}
		}
	}
	return out
}

// WriteText prints the explanation for people.
func (x *Explanation) WriteText(w io.Writer) {
	if x.Unit != "" {
		fmt.Fprintf(w, "%s: unit %s → %s\n", strings.ToUpper(x.Verdict), x.Unit, x.Target)
	} else {
		fmt.Fprintf(w, "%s: user %s (uid %d) → %s\n", strings.ToUpper(x.Verdict), x.User, x.UID, x.Target)
	}
	if x.Allowlist != "" {
		fmt.Fprintf(w, "  allowlist: %s\n", x.Allowlist)
	}
	if x.ProxyNote != "" {
		fmt.Fprintf(w, "  %s\n", x.ProxyNote)
	}
	if x.Source != "" {
		fmt.Fprintf(w, "  answered by: %s\n", x.Source)
	}
	for _, a := range x.Addresses {
		dst := a.Addr
		if ip, err := netip.ParseAddr(a.Addr); err == nil {
			dst = netip.AddrPortFrom(ip, x.Port).String()
		}
		if a.Allowed {
			fmt.Fprintf(w, "  %s/%s allowed by %s (kernel set %s, element %s)\n", dst, x.Proto, a.Entry, a.Set, a.Element)
			if a.KernelLifetime != "" {
				fmt.Fprintf(w, "    kernel lifetime: %s left; the kernel removes the element then, whether or not egressd runs, unless egressd renews it\n", a.KernelLifetime)
			}
		} else {
			fmt.Fprintf(w, "  %s/%s denied: not in the allowlist's set\n", dst, x.Proto)
		}
		if a.Note != "" {
			fmt.Fprintf(w, "    note: %s\n", a.Note)
		}
	}
	for _, n := range x.Nearest {
		fmt.Fprintf(w, "  nearest: %s\n", n)
	}
	fmt.Fprintf(w, "  %s\n", x.Reason)
}

// audited reports whether the kernel holds uid's allowlist in audit mode.
func audited(k Kernel, uid uint32) bool {
	ar, ok := k.(interface {
		ReadAudited() (map[uint32]bool, error)
	})
	if !ok {
		return false
	}
	m, err := ar.ReadAudited()
	return err == nil && m[uid]
}

// subjectKind is the kind of subject an allowlist restricts: a unit, or a
// user.
func subjectKind(unit bool) ruleset.SubjectKind {
	if unit {
		return ruleset.SubjectUnit
	}
	return ruleset.SubjectUser
}
