//go:build linux

package ruleset

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the layout")

// goldenNow is the clock of the golden tests: elements with a lifetime get
// the timeout they have left then.
var goldenNow = time.Date(2029, 12, 31, 23, 0, 0, 0, time.UTC)

// The netlink form of the layout's objects, without a kernel (Tailscale's
// linuxfw style): every set with its key type, flags and encoded elements,
// every chain with its hook, and every rule as the nf_tables attributes of
// its expressions (expr.Marshal), next to its nft text. A change to what
// egressd sends the kernel shows as a diff of testdata/*.golden; `go test
// ./ruleset -run TestGolden -update` rewrites them after a deliberate one.
func TestGolden(t *testing.T) {
	cases := map[string]Plan{
		"minimal": Render(Desired{Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(4001), Elements: []Element{
			ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443)}}}, DenyLog: config.Defaults().DenyLog}),
	}
	for _, dl := range everyDenyLog {
		cases["every-kind-"+string(dl.Mode)] = everyKindPlan(dl, true)
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			tb, err := layout(p, []ProxyElement{{UID: 4002, Element: ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.9/32"), 443, 443), Timeout: time.Minute, Name: "example.com"}})
			if err != nil {
				t.Fatal(err)
			}
			got := golden(t, tb)
			file := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (go test ./ruleset -run TestGolden -update writes it)", err)
			}
			if got != string(want) {
				gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
				for i := 0; i < len(gl) || i < len(wl); i++ {
					var g, w string
					if i < len(gl) {
						g = gl[i]
					}
					if i < len(wl) {
						w = wl[i]
					}
					if g != w {
						t.Fatalf("%s line %d:\n got %s\nwant %s\n(go test ./ruleset -run TestGolden -update rewrites it after a deliberate change)", file, i+1, g, w)
					}
				}
			}
		})
	}
}

// golden prints the table's netlink form, and checks that the encoder takes
// every object into a batch (not sent: the connection dials no kernel).
func golden(t *testing.T, tb Table) string {
	t.Helper()
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) { return req, nil }))
	if err != nil {
		t.Fatal(err)
	}
	if err := encodeTable(c, tb, goldenNow); err != nil {
		t.Fatalf("encode: %v", err)
	}
	var b strings.Builder
	for _, s := range tb.Sets {
		k := s.Kernel
		fmt.Fprintf(&b, "set %s key=%s/%d", k.Name, k.KeyType.Name, k.KeyType.Bytes)
		if k.IsMap {
			fmt.Fprintf(&b, " data=%s", k.DataType.Name)
		}
		for _, f := range []struct {
			on   bool
			name string
		}{{k.Interval, "interval"}, {k.HasTimeout, "timeout"}, {k.Dynamic, "dynamic"}, {k.Concatenation, "concat"}} {
			if f.on {
				b.WriteString(" " + f.name)
			}
		}
		switch k.KeyByteOrder {
		case binaryutil.NativeEndian:
			b.WriteString(" byteorder=host")
		case binaryutil.BigEndian:
			b.WriteString(" byteorder=network")
		}
		b.WriteString("\n")
		var lines []string // sorted: the order of a set's elements is not the encoder's concern
		for _, e := range s.Elements(goldenNow) {
			var b strings.Builder
			fmt.Fprintf(&b, "  elem key=%x", e.Key)
			if len(e.KeyEnd) > 0 {
				fmt.Fprintf(&b, " end=%x", e.KeyEnd)
			}
			if len(e.Val) > 0 {
				fmt.Fprintf(&b, " val=%x", e.Val)
			}
			if e.VerdictData != nil {
				fmt.Fprintf(&b, " verdict=%d:%s", e.VerdictData.Kind, e.VerdictData.Chain)
			}
			if e.Timeout != 0 {
				fmt.Fprintf(&b, " timeout=%s", e.Timeout)
			}
			if e.Comment != "" {
				fmt.Fprintf(&b, " comment=%q", e.Comment)
			}
			lines = append(lines, b.String()+"\n")
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, ""))
	}
	for _, ch := range tb.Chains {
		k := ch.kernel()
		fmt.Fprintf(&b, "chain %s", ch.Name)
		if k.Hooknum != nil {
			fmt.Fprintf(&b, " type=%s hook=%d priority=%d", k.Type, *k.Hooknum, *k.Priority)
		}
		b.WriteString("\n")
		for _, r := range ch.Rules {
			fmt.Fprintf(&b, "  rule %s\n", r.Text())
			for _, e := range r.Exprs() {
				data, err := expr.Marshal(unix.NFPROTO_INET, e)
				if err != nil {
					t.Fatalf("chain %s rule %q: %T: %v", ch.Name, r.Text(), e, err)
				}
				fmt.Fprintf(&b, "    %s %x\n", reflect.TypeOf(e).Elem().Name(), data)
			}
		}
	}
	return b.String()
}
