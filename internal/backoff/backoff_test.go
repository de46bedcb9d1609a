package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		name string
		e    Exp
		n    int
		want time.Duration
	}{
		{"first", Exp{s, 30 * s}, 1, s},
		{"zero counts as first", Exp{s, 30 * s}, 0, s},
		{"doubles", Exp{s, 30 * s}, 3, 4 * s},
		{"fifth", Exp{s, 30 * s}, 5, 16 * s},
		{"capped", Exp{s, 30 * s}, 6, 30 * s},
		{"huge n does not overflow", Exp{s, 30 * s}, 1 << 30, 30 * s},
		{"base above the cap", Exp{time.Minute, 30 * s}, 1, 30 * s},
		{"drift hold", Exp{10 * s, 5 * time.Minute}, 5, 160 * s},
		{"drift hold capped", Exp{10 * s, 5 * time.Minute}, 6, 5 * time.Minute},
	} {
		if got := c.e.Delay(c.n); got != c.want {
			t.Errorf("%s: Delay(%d) = %s, want %s", c.name, c.n, got, c.want)
		}
	}
}

func TestRetry(t *testing.T) {
	now := time.Unix(1000, 0)
	r := Retry{Exp: Exp{time.Second, 30 * time.Second}, Now: func() time.Time { return now }}
	if !r.Ready() || !r.At().IsZero() || r.Failures() != 0 {
		t.Fatal("a fresh Retry is not ready")
	}
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		if d := r.Fail(); d != want*time.Second {
			t.Fatalf("failure %d: wait %s, want %s", i+1, d, want*time.Second)
		}
	}
	if r.Failures() != 7 || !r.At().Equal(now.Add(30*time.Second)) || r.Ready() {
		t.Fatalf("after 7 failures: failures %d, at %s, ready %v", r.Failures(), r.At(), r.Ready())
	}
	now = now.Add(30 * time.Second)
	if !r.Ready() {
		t.Fatal("not ready when the wait is over")
	}
	r.Reset()
	if r.Failures() != 0 || !r.At().IsZero() || r.Fail() != time.Second {
		t.Fatal("Reset did not start the schedule over")
	}
}

func TestRetryRealClock(t *testing.T) {
	r := Retry{Exp: Exp{time.Hour, time.Hour}}
	r.Fail()
	if r.Ready() {
		t.Fatal("ready an hour early")
	}
}
