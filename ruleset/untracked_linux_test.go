//go:build linux

package ruleset

import (
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
)

// Other tables' rules that exempt packets from connection tracking, as the
// distribution's nft loads them: those that can exempt datagrams are found
// (each is a way around listen:, TestRedteamRTFUntrackedDatagram); those
// limited to TCP, or in a chain that runs after conntrack, are not; egressd's
// own table is not read as another's.
func TestUntrackedRules(t *testing.T) {
	e := newEnv(t)
	if err := e.k.ApplyFull(Render(Desired{Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(64001)}}, DenyLog: config.Defaults().DenyLog})); err != nil {
		t.Fatal(err)
	}
	const text = `
table ip raw {
	chain pre { type filter hook prerouting priority raw; udp dport 53 notrack; ip protocol tcp notrack; meta l4proto != tcp notrack; }
}
table inet other {
	chain jumped { notrack; }
	chain out { type filter hook output priority -300; meta l4proto tcp notrack; meta l4proto { tcp, udp } notrack; jump jumped; }
	chain late { type filter hook prerouting priority -150; notrack; }
	chain input { type filter hook input priority 0; counter; }
}
table ip6 raw6 {
	chain pre { type filter hook prerouting priority raw; ip6 nexthdr tcp notrack; notrack; }
}
`
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := e.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out.String())
	}
	got, err := e.k.Untracked()
	if err != nil {
		t.Fatal(err)
	}
	var where []string
	for _, u := range got {
		where = append(where, u.Table+"/"+u.Chain+"/"+u.Hook)
	}
	sort.Strings(where)
	want := []string{
		"inet other/jumped/",      // notrack in a regular chain: a jump may reach it
		"inet other/out/output",   // { tcp, udp }
		"ip raw/pre/prerouting",   // udp dport 53
		"ip raw/pre/prerouting",   // l4proto != tcp
		"ip6 raw6/pre/prerouting", // everything
	}
	if strings.Join(where, " ") != strings.Join(want, " ") {
		t.Errorf("found %v\nwant  %v", where, want)
	}
}

// The reading of one rule: what proves TCP alone, and the xtables targets.
func TestUntrackedRuleReading(t *testing.T) {
	l4 := &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}
	tcp := &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}}
	ct := func(flags ...byte) *expr.Target {
		info := xt.Unknown(append(flags, make([]byte, 30)...))
		return &expr.Target{Name: "CT", Rev: 2, Info: &info}
	}
	for _, c := range []struct {
		name string
		fam  nftables.TableFamily
		es   []expr.Any
		want bool
	}{
		{"notrack alone", nftables.TableFamilyINet, []expr.Any{&expr.Notrack{}}, true},
		{"tcp first", nftables.TableFamilyINet, []expr.Any{l4, tcp, &expr.Notrack{}}, false},
		{"tcp after the notrack", nftables.TableFamilyINet, []expr.Any{&expr.Notrack{}, l4, tcp}, true},
		{"protocol register overwritten before the compare", nftables.TableFamilyINet, []expr.Any{l4, &expr.Ct{Key: expr.CtKeyMARK, Register: 1}, tcp, &expr.Notrack{}}, true},
		{"ip protocol in family ip", nftables.TableFamilyIPv4, []expr.Any{&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1, DestRegister: 1}, tcp, &expr.Notrack{}}, false},
		{"offset 9 in family inet (not proven IPv4)", nftables.TableFamilyINet, []expr.Any{&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1, DestRegister: 1}, tcp, &expr.Notrack{}}, true},
		{"CT --notrack", nftables.TableFamilyIPv4, []expr.Any{ct(1, 0)}, true},
		{"CT --notrack for TCP", nftables.TableFamilyIPv4, []expr.Any{l4, tcp, ct(1, 0)}, false},
		{"CT with a zone only", nftables.TableFamilyIPv4, []expr.Any{ct(0, 0)}, false},
		{"NOTRACK", nftables.TableFamilyIPv4, []expr.Any{&expr.Target{Name: "NOTRACK"}}, true},
		{"no notrack", nftables.TableFamilyIPv4, []expr.Any{&expr.Counter{}}, false},
	} {
		if got := untrackedRule(c.fam, c.es); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
