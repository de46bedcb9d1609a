package dnsproxy

import (
	"container/list"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// The answer cache holds upstream replies, keyed by the question the
// upstream was asked (upstreamQuery: the name in lower case, type, class,
// and the bits and EDNS state that change what a resolver answers). It
// knows nothing of uids or allowlists: a hit is read again by the same
// rules as a reply fresh from the upstream (resolver.ReadReply, then the
// asker's policy: Match, Admit, the writer's Ensure), so an address is
// never handed to a uid the kernel does not hold it for, whoever filled the
// entry (docs/security.md, "The answer cache").
//
// Entries live for the smallest TTL of the reply (every record of every
// section but OPT; negative answers by their SOA, RFC 2308), at most
// max_ttl (and cacheNegMax for negative answers); a hit hands the TTLs
// counted down by the time the entry has spent here. The cache is bounded
// in entries and bytes; the least recently used entry goes first.
type answerCache struct {
	maxEntries int
	maxBytes   int

	mu    sync.Mutex
	m     map[cacheKey]*list.Element
	lru   *list.List // of *cacheEntry, most recently used first
	bytes int
	// gen counts clears: a reply asked for before a clear (under the
	// previous policy's resolvers) is not stored after it.
	gen atomic.Uint64
}

// cacheKey is a question as the upstream was asked it.
type cacheKey struct {
	name   string // lower case, fully qualified
	qtype  uint16
	qclass uint16
	flags  uint8 // keyRD | keyCD | keyAD | keyEDNS | keyDO
}

const (
	keyRD uint8 = 1 << iota
	keyCD
	keyAD
	keyEDNS
	keyDO
)

type cacheEntry struct {
	key     cacheKey
	wire    []byte // uncompressed (hitForm patches it in place of unpacking it)
	stored  time.Time
	expires time.Time
	// hit, when not nil, is what a hit needs of the reply, read once when
	// it was stored (hit.go); nil: a hit unpacks wire and reads it again.
	hit *hitForm
}

// The defaults of the cache's bounds, and what an entry costs beyond its
// wire form: the entry (96 bytes), its list element (48), its map slot
// (32 to 75 bytes as the map fills and doubles), the rounding of its
// name's allocation (up to 16): 235 at most. Measured: TestRedteamRTCCacheMemoryAccounted
// (with 160, the heap held up to 4 % more than the bound counted).
const (
	DefaultCacheEntries = 10000
	DefaultCacheBytes   = 8 << 20
	cacheEntryOverhead  = 240
	// cacheNegMax bounds how long a negative answer is kept (RFC 2308
	// §5 suggests one to three hours; a name that appears should not wait
	// that long).
	cacheNegMax = 5 * time.Minute
)

func newAnswerCache(entries, bytes int) *answerCache {
	return &answerCache{maxEntries: entries, maxBytes: bytes, m: map[cacheKey]*list.Element{}, lru: list.New()}
}

// keyOf is the key of the question fq, a client's query or the
// upstreamQuery made of it: the same key for both (TestCacheKeyIsTheUpstreamQuestion).
func keyOf(fq *dns.Msg) cacheKey {
	q := fq.Question[0]
	k := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass}
	if fq.RecursionDesired {
		k.flags |= keyRD
	}
	if fq.CheckingDisabled {
		k.flags |= keyCD
	}
	if fq.AuthenticatedData {
		k.flags |= keyAD
	}
	if o := fq.IsEdns0(); o != nil {
		k.flags |= keyEDNS
		if o.Do() {
			k.flags |= keyDO
		}
	}
	return k
}

// lifetime is how long reply r may be cached: the smallest TTL of its
// records (OPT aside; a TTL with its top bit set counts as 0), capped by
// maxTTL, or by cacheNegMax when negative. 0: not cached.
func lifetime(r *dns.Msg, ttl time.Duration, negative bool, maxTTL time.Duration) time.Duration {
	if r.Truncated || (r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError) {
		return 0
	}
	if negative && !hasSOA(r) {
		return 0 // RFC 2308 §5: no SOA, not cached
	}
	for _, s := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			ttl = min(ttl, ttlSeconds(rr.Header().Ttl))
		}
	}
	if maxTTL > 0 {
		ttl = min(ttl, maxTTL)
	}
	if negative {
		ttl = min(ttl, cacheNegMax)
	}
	return ttl.Truncate(time.Second)
}

func hasSOA(r *dns.Msg) bool {
	for _, rr := range r.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			return true
		}
	}
	return false
}

func ttlSeconds(ttl uint32) time.Duration {
	if ttl > 1<<31-1 {
		return 0
	}
	return time.Duration(ttl) * time.Second
}

// put stores the reply r to the question k for ttl (lifetime), unless the
// cache was cleared since generation gen (when the question was asked).
func (c *answerCache) put(gen uint64, k cacheKey, r *dns.Msg, ttl time.Duration, now time.Time) {
	if ttl < time.Second || c.maxEntries <= 0 {
		return
	}
	// Uncompressed: what a UDP reply that fits the client's buffer is
	// anyway (Msg.Truncate), and what lets a hit patch the stored bytes
	// (no name points into the question, which a hit writes in the
	// client's case).
	compress := r.Compress
	r.Compress = false
	packed, err := r.Pack()
	r.Compress = compress
	if err != nil {
		return
	}
	// Copied by append, the wire's capacity is what the allocator holds
	// for it (its size class, up to a quarter more than its length past
	// 32 KiB), and the entry is counted by that (size).
	wire := append([]byte(nil), packed...)
	e := &cacheEntry{key: k, wire: wire, stored: now, expires: now.Add(ttl), hit: newHitForm(r, wire)}
	size := e.size()
	if size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen.Load() {
		return
	}
	if old, ok := c.m[k]; ok {
		c.removeLocked(old)
	}
	for c.lru.Len() > 0 && (c.lru.Len() >= c.maxEntries || c.bytes+size > c.maxBytes) {
		c.removeLocked(c.lru.Back())
	}
	c.m[k] = c.lru.PushFront(e)
	c.bytes += size
}

func (e *cacheEntry) size() int {
	return cap(e.wire) + len(e.key.name) + cacheEntryOverhead + e.hit.size()
}

func (c *answerCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.m, e.key)
	c.bytes -= e.size()
}

// generation is the cache's generation now, for a put of a reply asked
// for from here on. A query reads it before it reads the policy: a clear
// (which follows the policy's change) after this read refuses its put; one
// before it came after the new policy was stored, so the query asks the
// new policy's resolvers.
func (c *answerCache) generation() uint64 { return c.gen.Load() }

// get returns the entry cached for k and the whole seconds it has spent
// here, or false when there is none alive. The entry is never changed once
// stored: the caller reads it (reply, hitForm) without the lock.
func (c *answerCache) get(k cacheKey, now time.Time) (*cacheEntry, uint32, bool) {
	c.mu.Lock()
	el, ok := c.m[k]
	if !ok {
		c.mu.Unlock()
		return nil, 0, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) || now.Before(e.stored) {
		c.removeLocked(el)
		c.mu.Unlock()
		return nil, 0, false
	}
	c.lru.MoveToFront(el)
	c.mu.Unlock()
	return e, uint32(now.Sub(e.stored) / time.Second), true
}

// reply is a copy of the entry's reply, its TTLs counted down by age
// seconds, or false when it does not unpack.
func (e *cacheEntry) reply(age uint32) (*dns.Msg, bool) {
	r := new(dns.Msg)
	if r.Unpack(e.wire) != nil {
		return nil, false
	}
	// Every record's TTL is at least the entry's lifetime (lifetime), which
	// has more than age left: none reaches 0.
	for _, s := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range s {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return r, true
}

// clear forgets every entry (the resolvers changed).
func (c *answerCache) clear() {
	c.mu.Lock()
	c.m = map[cacheKey]*list.Element{}
	c.lru.Init()
	c.bytes = 0
	c.gen.Add(1)
	c.mu.Unlock()
}

// stats is the number of entries and the bytes they count for.
func (c *answerCache) stats() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}
