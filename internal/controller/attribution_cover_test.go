package controller

import (
	"context"
	"testing"

	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A unit deny's packet mark (the unit key) names its unit allowlist and
// unit once the daemon applied them; another key names nothing.
func TestUnitOf(t *testing.T) {
	f := newFixture(t, map[string]string{
		"allow.d/shop.yaml":    "unit: shop.service\nallow: [192.0.2.12:443]\n",
		"allow.d/billing.yaml": "user: billing\nallow: [198.51.100.0/24:443]\n",
	})
	key := ruleset.UnitKeys([]string{"shop"})["shop"]
	if _, _, ok := (&Controller{attr: &attribution{}}).UnitOf(key); ok {
		t.Error("no unit keys recorded, yet one is known")
	}
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, u, ok := f.c.UnitOf(key); !ok || a != "shop" || u != "shop.service" {
		t.Errorf("UnitOf(%d) = %q %q %v, want shop shop.service", key, a, u, ok)
	}
	if a, u, ok := f.c.UnitOf(key + 1); ok {
		t.Errorf("UnitOf(another key) = %q %q", a, u)
	}
}

// state_group is looked up once per name; an unknown group keeps the
// daemon's own group (-1: narrower, never wider) and says so once.
func TestPublisherGroup(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	p := &publisher{o: &Options{Log: zap.New(core)}}
	if got := p.gid(""); got != -1 {
		t.Errorf("gid(\"\") = %d, want -1", got)
	}
	if got := p.gid("0"); got != 0 {
		t.Errorf("gid(0) = %d", got)
	}
	for range 2 {
		if got := p.gid("egressd-no-such-group"); got != -1 {
			t.Errorf("gid(unknown) = %d, want -1", got)
		}
	}
	if n := len(logs.FilterField(zap.String("event", "state_failed")).All()); n != 1 {
		t.Errorf("%d state_failed events for one unknown group, want 1", n)
	}
	if got := p.gid("root"); got != 0 {
		t.Errorf("gid(root) = %d", got)
	}
}
