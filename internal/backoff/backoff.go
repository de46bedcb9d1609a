// Package backoff owns egressd's one retry schedule: exponential from a
// base, doubling per consecutive failure, capped. The apply retries of the
// loop, the DNS retries of the resolver cache and the drift repair hold all
// use it, each with its own constants.
package backoff

import "time"

// Exp is an exponential schedule: Base after the first failure, doubled
// after each further one, never more than Max.
type Exp struct {
	Base, Max time.Duration
}

// Delay is the wait after the nth consecutive failure (n >= 1; n < 1 counts
// as 1). It does not overflow however large n is.
func (e Exp) Delay(n int) time.Duration {
	d := e.Base
	for i := 1; i < n && d < e.Max; i++ {
		d *= 2
	}
	return min(d, e.Max)
}

// Retry is an Exp with memory: consecutive failures and when the next
// attempt is due, on an injected clock. The zero Retry (with Exp and Now
// set) is ready.
type Retry struct {
	Exp
	Now func() time.Time // the clock; nil is time.Now

	failures int
	at       time.Time
}

func (r *Retry) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Fail records a failure and returns the wait before the next attempt.
func (r *Retry) Fail() time.Duration {
	r.failures++
	d := r.Delay(r.failures)
	r.at = r.now().Add(d)
	return d
}

// Reset records a success: the next attempt may run at once.
func (r *Retry) Reset() { r.failures, r.at = 0, time.Time{} }

// Failures is the number of consecutive failures.
func (r *Retry) Failures() int { return r.failures }

// At is when the next attempt is due; zero when nothing failed.
func (r *Retry) At() time.Time { return r.at }

// Ready reports whether an attempt may run now.
func (r *Retry) Ready() bool { return r.at.IsZero() || !r.now().Before(r.at) }
