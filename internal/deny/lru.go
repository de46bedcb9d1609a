package deny

// lru is a map whose values are kept in order of their last update: the
// front is the newest. Every operation is constant time. Not safe for
// concurrent use (Recent holds its lock).
type lru[K comparable, V any] struct {
	m    map[K]*lruNode[K, V]
	head lruNode[K, V] // sentinel: head.next is the newest, head.prev the oldest
}

type lruNode[K comparable, V any] struct {
	key        K
	v          V
	prev, next *lruNode[K, V]
}

func (l *lru[K, V]) init() {
	l.m = map[K]*lruNode[K, V]{}
	l.head.prev, l.head.next = &l.head, &l.head
}

func (l *lru[K, V]) len() int { return len(l.m) }

// touch returns k's value, moved to the front.
func (l *lru[K, V]) touch(k K) (*V, bool) {
	n, ok := l.m[k]
	if !ok {
		return nil, false
	}
	l.unlink(n)
	l.linkAfter(n, &l.head)
	return &n.v, true
}

// pushFront adds k (absent) as the newest.
func (l *lru[K, V]) pushFront(k K, v V) *V {
	n := &lruNode[K, V]{key: k, v: v}
	l.m[k] = n
	l.linkAfter(n, &l.head)
	return &n.v
}

// pushBack adds k (absent) as the oldest.
func (l *lru[K, V]) pushBack(k K, v V) *V {
	n := &lruNode[K, V]{key: k, v: v}
	l.m[k] = n
	l.linkAfter(n, l.head.prev)
	return &n.v
}

// dropOldest removes the oldest value, if any.
func (l *lru[K, V]) dropOldest() {
	n := l.head.prev
	if n == &l.head {
		return
	}
	l.unlink(n)
	delete(l.m, n.key)
}

// each calls f from the newest to the oldest.
func (l *lru[K, V]) each(f func(*V)) {
	for n := l.head.next; n != &l.head; n = n.next {
		f(&n.v)
	}
}

func (l *lru[K, V]) unlink(n *lruNode[K, V]) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
}

func (l *lru[K, V]) linkAfter(n, at *lruNode[K, V]) {
	n.prev, n.next = at, at.next
	at.next.prev = n
	at.next = n
}
