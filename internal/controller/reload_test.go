package controller

import (
	"testing"

	"github.com/egressd/egressd/internal/event"
)

// Every reload says its outcome; after a rejection the configuration that
// loads again is reported once (issue 25: undoing a bad edit, or SIGHUP,
// logged nothing).
func TestReloadOutcomeAndRecovery(t *testing.T) {
	good := "user: billing\nallow: [192.0.2.1:443]\n"
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": good})
	step := func(by, body, outcome string, recovered int, changed bool) {
		t.Helper()
		if body != "" {
			f.write(t, "allow.d/billing.yaml", body)
		}
		f.c.ReloadBy(by)
		<-f.c.reload
		f.c.doReload()
		lines := f.events(event.ConfigReloaded)
		last := lines[len(lines)-1].ContextMap()
		if last["outcome"] != outcome || len(last["by"].([]interface{})) != 1 || last["by"].([]interface{})[0] != by {
			t.Errorf("after %q by %s: config_reloaded %v, want outcome %s", body, by, last, outcome)
		}
		rec := f.events(event.ConfigRecovered)
		if len(rec) != recovered {
			t.Fatalf("after %q: %d config_recovered events, want %d", body, len(rec), recovered)
		}
		if outcome == "recovered" && rec[len(rec)-1].ContextMap()["changed"] != changed {
			t.Errorf("config_recovered %v, want changed %v", rec[len(rec)-1].ContextMap(), changed)
		}
	}
	step(ReloadSignal, "", "unchanged", 0, false)
	step(ReloadWatch, "user: billing\nallow: [192.0.2.1:99999]\n", "rejected", 0, false)
	step(ReloadSignal, "", "rejected", 0, false)   // still bad: no all-clear
	step(ReloadWatch, good, "recovered", 1, false) // the bad edit undone
	step(ReloadWatch, "user: billing\nallow: [192.0.2.1:99999]\n", "rejected", 1, false)
	step(ReloadWatch, "user: billing\nallow: [192.0.2.2:443]\n", "recovered", 2, true)
	step(ReloadSignal, "", "unchanged", 2, false)
	step(ReloadWatch, "user: billing\nallow: [192.0.2.3:443]\n", "loaded", 2, false)
}
