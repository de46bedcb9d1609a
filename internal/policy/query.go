package policy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/resolver"
)

// The bounded DNS fan-out of the daemon's rounds and of `egressd check`.
const (
	Concurrency  = 64               // lookups in flight
	QueryTimeout = 10 * time.Second // per lookup
)

// Outcome is one lookup's result.
type Outcome struct {
	Res       resolver.Result
	Err       error
	Dur       time.Duration
	Cancelled bool // ctx ended: not a DNS failure
}

// Query runs the lookups of keys, at most concurrency at a time (<= 0:
// Concurrency), each bounded by QueryTimeout; out[i] is keys[i]'s outcome.
// It touches nothing but q, so the daemon runs it in the background.
func Query(ctx context.Context, q resolver.Querier, keys []resolver.Key, concurrency int) []Outcome {
	if concurrency <= 0 {
		concurrency = Concurrency
	}
	out := make([]Outcome, len(keys))
	// concurrency workers take the keys in order: a goroutine per key would
	// grow a new stack for every lookup (4 % of a cold apply's CPU).
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(concurrency, len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) {
					return
				}
				out[i] = query(ctx, q, keys[i])
			}
		}()
	}
	wg.Wait()
	return out
}

func query(ctx context.Context, q resolver.Querier, k resolver.Key) Outcome {
	qctx, cancel := context.WithTimeout(ctx, QueryTimeout)
	defer cancel()
	start := time.Now()
	res, err := q.Query(qctx, k.Name, k.Type)
	return Outcome{res, err, time.Since(start), err != nil && ctx.Err() != nil}
}
