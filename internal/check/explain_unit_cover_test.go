package check

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// unitKernel is a planKernel that also reads unit allowlists back.
type unitKernel struct {
	*planKernel
	units    map[string]string // allowlist -> unit
	cgroups  []ruleset.Cgroup
	unitsErr error
}

func (k *unitKernel) ReadUnits() (map[string]string, error) { return k.units, k.unitsErr }
func (k *unitKernel) ReadCgroups() ([]ruleset.Cgroup, error) {
	return k.cgroups, nil
}

func unitFixture(t *testing.T) (Options, *unitKernel) {
	o := fixture(t, map[string]string{
		"egressd.yaml":     "resolvers: [192.0.2.53]\n",
		"allow.d/web.yaml": "unit: web.service\nallow: [192.0.2.1:443, api.example.test:443]\n",
		"allow.d/db.yaml":  "unit: db.service\nallow: [192.0.2.2:5432]\n",
	})
	addrs := map[string][]string{"api.example.test": {"203.0.113.5"}}
	o.NewQuerier = answers(addrs, resolver.SourceDNS)
	k := &unitKernel{planKernel: applied(t, o, addrs), units: map[string]string{"web": "web.service"},
		cgroups: []ruleset.Cgroup{{ID: 4242, Allowlist: "web"}}}
	o.Kernel = k
	return o, k
}

// check --explain UNIT answers from the unit's allowlist in the kernel, and
// says when the unit is not running (its gate holds its next start) or when
// the kernel does not restrict it although a file names it.
func TestExplainUnit(t *testing.T) {
	for _, c := range []struct {
		name, unit, target, verdict string
		want                        []string
		not                         string
		setup                       func(*unitKernel)
	}{
		{name: "allowed", unit: "web.service", target: "192.0.2.1:443", verdict: "allowed", want: []string{"every address"}, not: "not running"},
		{name: "name allowed", unit: "web.service", target: "api.example.test:443", verdict: "allowed", want: []string{"every address"}},
		{name: "other port", unit: "web.service", target: "192.0.2.1:80", verdict: "denied"},
		{name: "not running", unit: "web.service", target: "192.0.2.1:443", verdict: "allowed",
			want:  []string{"web.service is not running now", "start gate holds its next start"},
			setup: func(k *unitKernel) { k.cgroups = nil }},
		{name: "named by a file, not in the kernel", unit: "db.service", target: "192.0.2.2:5432", verdict: "unrestricted",
			want: []string{"unit db.service has no allowlist in the kernel", "db.yaml names this unit: run egressd check"}},
		{name: "no allowlist at all", unit: "other.service", target: "192.0.2.1:443", verdict: "unrestricted",
			want: []string{"unit other.service has no allowlist in the kernel"}, not: "names this unit"},
		{name: "no table", unit: "web.service", target: "192.0.2.1:443", verdict: "unrestricted",
			want:  []string{"table inet egressd does not exist"},
			setup: func(k *unitKernel) { k.unitsErr = ruleset.ErrNoTable }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, k := unitFixture(t)
			if c.setup != nil {
				c.setup(k)
			}
			x, err := Explain(context.Background(), o, c.unit, c.target)
			if err != nil {
				t.Fatal(err)
			}
			if x.Verdict != c.verdict || x.Unit != c.unit || x.User != "" {
				t.Fatalf("verdict %q unit %q user %q (%s), want %q for unit %s", x.Verdict, x.Unit, x.User, x.Reason, c.verdict, c.unit)
			}
			for _, w := range c.want {
				if !strings.Contains(x.Reason, w) {
					t.Errorf("reason %q lacks %q", x.Reason, w)
				}
			}
			if c.not != "" && strings.Contains(x.Reason, c.not) {
				t.Errorf("reason %q says %q", x.Reason, c.not)
			}
			var b strings.Builder
			x.WriteText(&b)
			if want := strings.ToUpper(c.verdict) + ": unit " + c.unit + " → " + c.target + "\n"; !strings.HasPrefix(b.String(), want) {
				t.Errorf("text:\n%s\nwant it to start %q", b.String(), want)
			}
		})
	}
}

// A kernel that cannot be read is an error (exit 2), never an answer; a
// kernel reader that knows no units cannot answer for one.
func TestExplainUnitCannotAnswer(t *testing.T) {
	o, k := unitFixture(t)
	k.unitsErr = errors.New("netlink: operation not permitted")
	if x, err := Explain(context.Background(), o, "web.service", "192.0.2.1:443"); err == nil {
		t.Errorf("unreadable units answered %+v", x)
	}
	o, _ = unitFixture(t)
	o.Kernel = k.planKernel
	if x, err := Explain(context.Background(), o, "web.service", "192.0.2.1:443"); err == nil || !strings.Contains(err.Error(), "cannot read unit allowlists") {
		t.Errorf("a kernel without units: %+v, %v", x, err)
	}
}

func TestIsUnitName(t *testing.T) {
	for s, want := range map[string]bool{"web.service": true, "app.slice": true, "alice": false, "web.socket": false, ".service": false, "a b.service": false} {
		if got := IsUnitName(s); got != want {
			t.Errorf("IsUnitName(%q) = %v, want %v", s, got, want)
		}
	}
}
