package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

func planFixture(t *testing.T) planOptions {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "allow.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"egressd.yaml":         "resolvers: [\"192.0.2.53:53\"]\n",
		"allow.d/billing.yaml": "user: billing\ndns: resolvers\nallow: [192.0.2.1:443, \"198.51.100.0/24:8000-8100\"]\n",
		"allow.d/ghost.yaml":   "user: ghost\nallow: [192.0.2.9:22]\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return planOptions{ConfigPath: filepath.Join(dir, "egressd.yaml"), ConfigRequired: true, RuntimeDir: filepath.Join(dir, "run"),
		Kernel: &ruleset.Fake{}, CanAdmin: func() bool { return true }, Trust: config.Trust{Above: dir},
		Users: func(name string) (uint32, error) {
			if name == "billing" {
				return 1001, nil
			}
			return 0, errors.New("no such user")
		}}
}

func runPlan(t *testing.T, o planOptions) (int, string, string) {
	t.Helper()
	var out, errb strings.Builder
	code := plan(context.Background(), o, &out, &errb)
	return code, out.String(), errb.String()
}

// plan prints the ruleset, then the kernel's difference: no table, none,
// an element the kernel lost; without the capability, the plan alone.
func TestPlanCommand(t *testing.T) {
	o := planFixture(t)
	code, out, errs := runPlan(t, o)
	for _, w := range []string{"1001 . tcp . 192.0.2.1 . 443", "1001 . tcp . 198.51.100.0/24 . 8000-8100", "allowlist ghost is not enforced", "the kernel has no table"} {
		if !strings.Contains(out, w) {
			t.Errorf("no %q in\n%s%s", w, out, errs)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	k := o.Kernel.(*ruleset.Fake)
	cfg, err := config.LoadTrusted(o.ConfigPath, true, o.Trust)
	if err != nil {
		t.Fatal(err)
	}
	p, _, _, _ := planNow(context.Background(), o, cfg)
	if !strings.Contains(out, p.NFT()) {
		t.Fatalf("the text printed is not the plan's:\n%s", out)
	}
	if err := k.ApplyFull(p.Plan); err != nil {
		t.Fatal(err)
	}
	if _, out, _ = runPlan(t, o); !strings.Contains(out, "# none: the kernel holds this ruleset") {
		t.Fatalf("in sync:\n%s", out)
	}
	k.DropElement(ruleset.SetName4("billing"), ruleset.ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443))
	k.BreakRules("deny")
	_, out, _ = runPlan(t, o)
	diff := out[strings.Index(out, "# difference"):]
	if !strings.Contains(diff, "add element inet egressd allow4 { 1001 . tcp . 192.0.2.1 . 443 }") || !strings.Contains(diff, "# rules_differ deny") || strings.Contains(diff, "# none") {
		t.Errorf("drift:\n%s", diff)
	}
	if k.Fulls != 1 || len(k.Deltas) != 0 {
		t.Errorf("plan changed the kernel: %d fulls, %d deltas", k.Fulls, len(k.Deltas))
	}

	o.CanAdmin = func() bool { return false }
	code, out, errs = runPlan(t, o)
	if code != 0 || !strings.Contains(out, "table inet egressd {") || !strings.Contains(errs, "CAP_NET_ADMIN") || k.Calls(ruleset.FakeReadSets) != 3 {
		t.Errorf("not admin: exit %d, %d reads\n%s%s", code, k.Calls(ruleset.FakeReadSets), out, errs)
	}
	o.CanAdmin = func() bool { return true }
	k.FailNext(ruleset.FakeReadSets, errors.New("netlink: boom"))
	if code, _, errs = runPlan(t, o); code != 0 || !strings.Contains(errs, "boom") {
		t.Errorf("kernel unreadable: exit %d, %s", code, errs)
	}

	o.ConfigPath = filepath.Join(filepath.Dir(o.ConfigPath), "missing.yaml")
	if code, _, errs = runPlan(t, o); code != 2 || !strings.Contains(errs, "invalid") {
		t.Errorf("missing configuration: exit %d, %s", code, errs)
	}
}

type failingQuerier struct{ err error }

func (q failingQuerier) Query(context.Context, string, uint16) (resolver.Result, error) {
	return resolver.Result{}, q.err
}

// plan's output is nft text: a name whose error spans lines stays inside
// its comment (issue 25: the second line came out uncommented).
func TestPlanCommentsStayComments(t *testing.T) {
	o := planFixture(t)
	dir := filepath.Dir(o.ConfigPath)
	if err := os.WriteFile(filepath.Join(dir, "allow.d/billing.yaml"), []byte("user: billing\nallow: [192.0.2.1:443, api.example.test:443]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Querier = failingQuerier{errors.New("all resolvers failed:\n192.0.2.53:53: i/o timeout\n192.0.2.54:53: SERVFAIL")}
	code, out, errs := runPlan(t, o)
	if code != 0 || !strings.Contains(out, "# 192.0.2.54:53: SERVFAIL") {
		t.Fatalf("exit %d, no commented multi-line error in\n%s%s", code, out, errs)
	}
	cfg, err := config.LoadTrusted(o.ConfigPath, true, o.Trust)
	if err != nil {
		t.Fatal(err)
	}
	p, _, _, _ := planNow(context.Background(), o, cfg)
	rest := strings.Replace(out, p.NFT(), "", 1)
	for i, l := range strings.Split(rest, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			t.Errorf("line %d outside the ruleset is not a comment: %q\n%s", i+1, l, out)
		}
	}
}
