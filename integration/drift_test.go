//go:build linux

package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
	"github.com/google/nftables"
)

// drift is one way another tool can change egressd's table, and the finding
// kind it must produce.
type drift struct {
	name  string
	do    func() error
	found string
}

// drifts are the changes the daemon must repair and check must report, on
// the standard configuration.
func (w *world) drifts() []drift {
	conn := func() (*nftables.Conn, error) { return nftables.New(nftables.WithNetNSFd(w.ns.Fd())) }
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.TableName}
	// The kernel set of billing's exact IPv4 elements, and the chain that judges it.
	allow4 := ruleset.KernelSetName(ruleset.SetName4("billing"), ruleset.Element{})
	restricted := ruleset.ChainName("billing")
	return []drift{
		{"table deleted", (&ruleset.Netlink{NetNSFd: w.ns.Fd()}).Remove, "table_missing"},
		{"chain flushed", func() error {
			c, err := conn()
			if err != nil {
				return err
			}
			c.FlushChain(&nftables.Chain{Name: restricted, Table: table})
			return c.Flush()
		}, "rules_differ"},
		{"element removed", func() error {
			c, err := conn()
			if err != nil {
				return err
			}
			s, err := c.GetSetByName(table, allow4) // keyed by uid
			if err != nil {
				return err
			}
			els, err := c.GetSetElements(s)
			if err != nil || len(els) == 0 {
				return fmt.Errorf("elements: %v (%d)", err, len(els))
			}
			if err := c.SetDeleteElements(s, els[:1]); err != nil {
				return err
			}
			return c.Flush()
		}, "element_missing"},
		{"element added", func() error {
			c, err := conn()
			if err != nil {
				return err
			}
			s, err := c.GetSetByName(table, allow4)
			if err != nil {
				return err
			}
			// uidA . tcp . 198.51.100.20 . 4444: would open the denied destination.
			key := binary.NativeEndian.AppendUint32(nil, uidA)
			key = append(key, 6, 0, 0, 0, 198, 51, 100, 20, 0x11, 0x5c, 0, 0)
			if err := c.SetAddElements(s, []nftables.SetElement{{Key: key}}); err != nil {
				return err
			}
			return c.Flush()
		}, "element_extra"},
		{"table dormant", func() error { // nft add table inet egressd { flags dormant; }: no chain sees a packet
			c, err := conn()
			if err != nil {
				return err
			}
			t, err := c.ListTableOfFamily(ruleset.TableName, nftables.TableFamilyINet)
			if err != nil {
				return err
			}
			c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.TableName, Flags: t.Flags | 0x1}) // keeps persist (an orphan's)
			return c.Flush()
		}, "table_dormant"},
	}
}

// Another tool changes the table; the daemon notices through the nftables
// monitor and restores its full state within 2 s, logging drift_repaired.
// The table is unowned, as on kernels before 6.9 (an owned one refuses the
// changes: TestOwnedTableRefusesDrift), and the daemon says so.
func TestDriftRepaired(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.unowned = true
	w.start()
	if len(w.eventsSince(event.TableUnowned, 0)) != 1 {
		t.Error("an unowned table was not reported once (table_unowned)")
	}
	k := &ruleset.Netlink{NetNSFd: w.ns.Fd()}
	cases := w.drifts()
	for _, tc := range cases {
		m := w.mark()
		start := time.Now()
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ev, err := w.waitEvent(event.DriftRepaired, m, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := w.waitEvent(event.RulesetApplied, m, 2*time.Second); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		took := time.Since(start)
		if !strings.Contains(fmt.Sprint(ev["found"]), tc.found) {
			t.Errorf("%s: drift_repaired found %v, want %s", tc.name, ev["found"], tc.found)
		}
		if fs, err := k.Verify(ruleset.Render(ruleset.Desired{})); err != nil || len(fs) == 0 {
			t.Fatalf("%s: cannot read the repaired table: %v", tc.name, err)
		}
		w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
		w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
		w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
		t.Logf("%s: repaired in %v (%v)", tc.name, took.Round(time.Millisecond), ev["found"])
	}
}

// Another controller that keeps changing egressd's objects (here: removing
// an element every 150 ms): egressd repairs, then holds object repairs back
// and says so loudly instead of looping. A removed table is not a fight:
// it is restored at once, during the hold too (TestAttackFlusher).
func TestDriftFightBacksOff(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.unowned = true // an owned table refuses the other controller's changes
	w.start()
	k := &ruleset.Netlink{NetNSFd: w.ns.Fd()}
	var removeElement func() error
	for _, d := range w.drifts() {
		if d.name == "element removed" {
			removeElement = d.do
		}
	}
	m := w.mark()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		removeElement() //nolint:errcheck // fails while a held-back repair leaves the set empty
		time.Sleep(150 * time.Millisecond)
	}
	if _, err := w.waitEvent(event.DriftRepeating, m, time.Second); err != nil {
		t.Fatal(err)
	}
	repairs := len(w.eventsSince(event.DriftRepaired, m))
	if repairs > 12 {
		t.Errorf("%d repairs in 3 s of fighting: not backing off", repairs)
	}
	t.Logf("fighting for 3 s: %d repairs, then held back", repairs)
	// Held back; but the table's removal is repaired at once.
	m = w.mark()
	if err := k.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.waitEvent(event.DriftRepaired, m, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okRefused, 2*time.Second)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
}

// nft runs the nft command line inside the world's namespace.
func (w *world) nft(args ...string) (string, error) {
	w.t.Helper()
	cmd := exec.Command("nft", args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := w.ns.Start(cmd); err != nil {
		w.t.Fatal(err)
	}
	err := cmd.Wait()
	return out.String(), err
}

// With an owned table (Linux >= 6.9) the kernel refuses every change by
// another tool (EPERM): the drifts of TestDriftRepaired fail, nft flush
// ruleset leaves the table in place, nft delete table is refused. Nothing
// drifts, so nothing is repaired, and the rules keep working.
func TestOwnedTableRefusesDrift(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	if n := len(w.eventsSince(event.TableUnowned, 0)); n != 0 {
		t.Errorf("table_unowned on a kernel with owned tables: %v", w.eventsSince(event.TableUnowned, 0))
	}
	m := w.mark()
	for _, d := range w.drifts() {
		if err := d.do(); !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s by another tool: %v, want EPERM", d.name, err)
		}
	}
	if out, err := w.nft("flush", "ruleset"); err != nil {
		t.Fatalf("nft flush ruleset: %v %s", err, out)
	}
	if out, err := w.nft("delete", "table", "inet", ruleset.TableName); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("nft delete table inet egressd: %v %q, want Operation not permitted", err, out)
	}
	out, err := w.nft("list", "table", "inet", ruleset.TableName)
	if err != nil || !strings.Contains(out, "flags owner") { // nft 1.0.6 does not name persist
		t.Errorf("nft list table after the attempts: %v\n%s", err, out)
	}
	if fs, err := (&ruleset.Netlink{NetNSFd: w.ns.Fd()}).Verify(ruleset.Render(ruleset.Desired{})); err != nil || len(fs) == 0 {
		t.Fatalf("cannot read the table: %v", err)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
	if n := len(w.eventsSince(event.DriftRepaired, m)); n != 0 {
		t.Errorf("%d drift_repaired events: the refused changes drifted", n)
	}
}
