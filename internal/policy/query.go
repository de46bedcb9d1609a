package policy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/resolver"
	"github.com/miekg/dns"
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
// A name's A and AAAA keys are looked up together when q can
// (resolver.BothQuerier: one socket for the two queries); such a pair
// takes one of the concurrency slots. It touches nothing but q, so the
// daemon runs it in the background.
func Query(ctx context.Context, q resolver.Querier, keys []resolver.Key, concurrency int) []Outcome {
	return QueryEach(ctx, q, keys, concurrency, nil)
}

// QueryEach is Query that also hands each key's outcome to each (when not
// nil) as it comes, on the calling goroutine: the caller records the first
// answers while the rest are being asked (a cold apply's 20,000 outcomes
// cost about a tenth of its time to record after the last answer).
func QueryEach(ctx context.Context, q resolver.Querier, keys []resolver.Key, concurrency int, each func(i int, o Outcome)) []Outcome {
	if concurrency <= 0 {
		concurrency = Concurrency
	}
	out := make([]Outcome, len(keys))
	// concurrency workers take the lookups in order: a goroutine per lookup would
	// grow a new stack for every lookup (4 % of a cold apply's CPU).
	var next atomic.Int64
	var wg sync.WaitGroup
	both, _ := q.(resolver.BothQuerier)
	units := lookups(keys, both != nil)
	var ready chan int // the units whose outcomes are in out (never blocks a worker)
	if each != nil {
		ready = make(chan int, len(units))
	}
	for range min(concurrency, len(units)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1) - 1)
				if n >= len(units) {
					return
				}
				u := units[n]
				if u[1] < 0 {
					out[u[0]] = query(ctx, q, keys[u[0]])
				} else {
					qctx, cancel := context.WithTimeout(ctx, QueryTimeout)
					start := time.Now()
					r := both.QueryBoth(qctx, keys[u[0]].Name)
					cancel()
					for i, j := range u {
						out[j] = Outcome{r[i].Res, r[i].Err, time.Since(start), r[i].Err != nil && ctx.Err() != nil}
					}
				}
				if ready != nil {
					ready <- n
				}
			}
		}()
	}
	if ready != nil {
		for range units {
			u := units[<-ready]
			each(u[0], out[u[0]])
			if u[1] >= 0 {
				each(u[1], out[u[1]])
			}
		}
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

// lookups groups keys into lookups: {i, -1} looks up keys[i] alone; with
// pair, {i, j} looks up the A key i and the AAAA key j of one name together.
func lookups(keys []resolver.Key, pair bool) [][2]int {
	out := make([][2]int, 0, len(keys))
	if !pair {
		for i := range keys {
			out = append(out, [2]int{i, -1})
		}
		return out
	}
	idx := map[resolver.Key]int{}
	for i, k := range keys {
		idx[k] = i
	}
	for i, k := range keys {
		other := resolver.Key{Name: k.Name, Type: dns.TypeAAAA}
		if k.Type == dns.TypeAAAA {
			other.Type = dns.TypeA
		}
		j, ok := idx[other]
		switch {
		case !ok || (k.Type != dns.TypeA && k.Type != dns.TypeAAAA) || idx[k] != i:
			out = append(out, [2]int{i, -1}) // alone (or a repeated key)
		case k.Type == dns.TypeA:
			out = append(out, [2]int{i, j})
		}
	}
	return out
}
