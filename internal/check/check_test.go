package check

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

type fakeKernel struct{}

func (fakeKernel) Verify(ruleset.Plan) ([]ruleset.Finding, error) { return nil, nil }
func (fakeKernel) ReadSets() (map[string][]ruleset.Element, error) {
	return map[string][]ruleset.Element{}, nil
}
func (fakeKernel) ReadUsers() (map[uint32]string, error) { return map[uint32]string{}, nil }

type dnsFunc func(name string, qtype uint16) (resolver.Result, error)

func (f dnsFunc) Query(_ context.Context, name string, qtype uint16) (resolver.Result, error) {
	return f(name, qtype)
}

func fixture(t *testing.T, files map[string]string) Options {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755) //nolint:errcheck
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o755) //nolint:errcheck
	// This process plays the daemon: it holds the lock, as egressd run does
	// (a state file whose writer holds no lock is a dead daemon's).
	release, err := state.Lock(run)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return Options{
		ConfigPath: filepath.Join(dir, "egressd.yaml"), ConfigRequired: true, RuntimeDir: run, Kernel: fakeKernel{},
		Trust:    config.Trust{Above: dir},
		CanAdmin: func() bool { return true },
		Users: func(name string) (uint32, error) {
			if name == "alice" {
				return 1001, nil
			}
			return 0, errors.New("unknown user")
		},
		NewQuerier: func(*config.Config) resolver.Querier {
			return dnsFunc(func(string, uint16) (resolver.Result, error) { return resolver.Result{}, errors.New("SERVFAIL") })
		},
	}
}

func problem(r *Report, kind, object string) *Problem {
	for i, p := range r.Problems {
		if p.Kind == kind && (object == "" || p.Object == object) {
			return &r.Problems[i]
		}
	}
	return nil
}

func status(r *Report, name string) string {
	for _, a := range r.Allowlists {
		if a.Name == name {
			return a.Status
		}
	}
	return ""
}

// check says what the daemon really enforces: a uid held for a typo'd user,
// the allowlist left out by a conflict, the addresses a failing name still
// allows.
func TestRunTellsWhatIsEnforced(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":     "resolvers: [192.0.2.53]\n",
		"allow.d/a.yaml":   "user: alice\nallow: [192.0.2.1:443]\n",
		"allow.d/b.yaml":   "user: 1001\nallow: [192.0.2.2:443]\n",
		"allow.d/c.yaml":   "user: typo\nallow: [x.example.test:443]\n",
		"allow.d/notes.md": "hello\n",
	})
	st := &state.State{Version: 1, PID: os.Getpid(), Updated: time.Now(), Users: map[string]uint32{"a": 1001, "c": 4242},
		Names: map[string]state.Name{"x.example.test": {Addrs: []string{"192.0.2.9"}, Failing: true, ServingStale: true}}}
	if err := state.Write(o.RuntimeDir, st); err != nil {
		t.Fatal(err)
	}
	r := Run(context.Background(), o)
	if got := status(r, "b"); got != "user_conflict" {
		t.Errorf("allowlist b, left out by the conflict: status %q, want user_conflict", got)
	}
	if p := problem(r, "user_missing", "c"); p == nil || !strings.Contains(p.Detail, "still enforces uid 4242") {
		t.Errorf("user_missing for c: %+v", p)
	}
	for _, a := range r.Allowlists {
		if a.Name == "c" && (a.UID == nil || *a.UID != 4242) {
			t.Errorf("allowlist c shows uid %v, want the held 4242", a.UID)
		}
	}
	if p := problem(r, "name_failed", "x.example.test"); p == nil || strings.Contains(p.Fix, "allows nothing") || !strings.Contains(p.Fix, "still allows the 1 addresses") {
		t.Errorf("name_failed while stale addresses are served: %+v", p)
	}
	if p := problem(r, "file_skipped", ""); p == nil || !strings.HasSuffix(p.Object, "notes.md") {
		t.Errorf("file_skipped: %+v", p)
	}
	if r.ExitCode != ExitProblem {
		t.Errorf("exit %d", r.ExitCode)
	}
}

// Without the capability check says it cannot check, not INVALID.
func TestRunCannotRun(t *testing.T) {
	o := fixture(t, map[string]string{"egressd.yaml": "resolvers: [192.0.2.53]\n"})
	o.CanAdmin = func() bool { return false }
	r := Run(context.Background(), o)
	var b strings.Builder
	r.WriteText(&b)
	if r.ExitCode != ExitInvalid || r.Status != "cannot_run" || !strings.Contains(b.String(), "CANNOT CHECK") || strings.Contains(b.String(), "()") {
		t.Errorf("exit %d status %q\n%s", r.ExitCode, r.Status, b.String())
	}
}

// A state file that another user could have written is not believed.
func TestRunIgnoresUntrustedState(t *testing.T) {
	o := fixture(t, map[string]string{"egressd.yaml": "resolvers: [192.0.2.53]\n"})
	if err := state.Write(o.RuntimeDir, &state.State{Version: 1, PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(o.RuntimeDir, state.File), 0o666) //nolint:errcheck
	r := Run(context.Background(), o)
	if problem(r, "state_untrusted", "") == nil || r.Daemon.Running {
		t.Errorf("a world-writable state file was believed: %+v", r.Problems)
	}
}

// An allowlist whose tests: fail is an invalid configuration for check, as
// for the daemon: exit 2 with the test's position.
func TestRunPolicyTestFails(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":   "resolvers: [192.0.2.53]\n",
		"allow.d/a.yaml": "user: alice\nallow: [192.0.2.0/24:443]\ntests:\n  deny: [192.0.2.1:443]\n",
	})
	r := Run(context.Background(), o)
	p := problem(r, "config_invalid", "")
	if r.ExitCode != ExitInvalid || p == nil || !strings.Contains(p.Detail, "tests.deny: 192.0.2.1:443 is allowed by entry \"192.0.2.0/24:443\"") {
		t.Fatalf("exit %d, problems %+v", r.ExitCode, r.Problems)
	}
}
