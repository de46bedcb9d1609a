package dnsproxy

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/resolver"
)

// hitForm is a cached reply as a hit needs it, read once when it was
// stored: the answer that resolver.ReadReply reads from it, and where each
// record's TTL is in the stored wire. A hit then copies the wire and writes
// the ID, the client's question and the TTLs (counted down, capped to what
// the kernel keeps) into the copy, instead of unpacking, filtering and
// packing the message again (a third of a hit's allocations, issue 24).
//
// Only replies for which that is exactly what the unpacking path would
// send have one: a positive answer whose every address record is in the
// answer section, of the type asked, owned by the name asked or a name of
// its CNAME chain, and appears in the answer's addresses (so if the
// asker's rules admit all of those addresses, enforce removes no record);
// at most hitMaxRecords records. A hit whose asker's rules refuse one of
// the addresses, a reply larger than the client's UDP buffer, a question
// written otherwise than the stored one: the unpacking path, as before.
type hitForm struct {
	ttl   time.Duration // resolver.Result.TTL at store
	addrs []netip.Addr  // resolver.Result.Addrs
	qlen  int           // wire length of the question's name, at offset 12
	rrs   []hitRR       // every record but OPT, in wire order
}

// hitRR is one record's TTL in the stored wire.
type hitRR struct {
	off   uint16 // of the TTL field
	chain bool   // in the answer section, owned by a name of the chain (enforce caps its TTL)
	ttl   uint32 // as stored
}

// hitMaxRecords bounds the records of a reply with a hitForm (what the
// form costs the cache's byte bound stays small against the wire's).
const hitMaxRecords = 64

// newHitForm reads r (stored as wire, uncompressed) once; nil when a hit
// must take the unpacking path.
func newHitForm(r *dns.Msg, wire []byte) *hitForm {
	if len(r.Question) != 1 || r.Rcode != dns.RcodeSuccess || len(wire) > 1<<16-1 {
		return nil
	}
	all := make([]dns.RR, 0, len(r.Answer)+len(r.Ns)+len(r.Extra))
	all = append(append(append(all, r.Answer...), r.Ns...), r.Extra...)
	if len(all) > hitMaxRecords {
		return nil
	}
	q := r.Question[0]
	res, _, err := resolver.ReadReply(r, q.Name, q.Qtype, 0)
	if err != nil || res.Negative {
		return nil
	}
	owners := map[string]bool{normalize(q.Name): true}
	for _, c := range res.Chain {
		owners[normalize(c)] = true
	}
	listed := make(map[netip.Addr]bool, len(res.Addrs))
	for _, a := range res.Addrs {
		listed[a] = true
	}
	qlen, ok := plainNameLen(wire, 12)
	if !ok {
		return nil
	}
	off := 12 + qlen + 4
	f := &hitForm{ttl: res.TTL, addrs: res.Addrs, qlen: qlen}
	for i, rr := range all {
		h := rr.Header()
		inAnswer := i < len(r.Answer)
		if h.Rrtype == dns.TypeOPT && i < len(r.Answer)+len(r.Ns) {
			return nil // an OPT where none belongs: read as the unpacking path reads it
		}
		chain := inAnswer && owners[normalize(h.Name)]
		if a, isAddr := rrAddr(rr); isAddr && (!chain || h.Rrtype != q.Qtype || !listed[a]) {
			return nil // enforce removes it, or may keep it for another record's sake
		}
		n, ok := plainNameLen(wire, off)
		if !ok || off+n+10 > len(wire) {
			return nil
		}
		off += n
		if binary.BigEndian.Uint16(wire[off:]) != h.Rrtype {
			return nil // not the wire Pack wrote for r
		}
		if h.Rrtype != dns.TypeOPT {
			f.rrs = append(f.rrs, hitRR{off: uint16(off + 4), chain: chain, ttl: binary.BigEndian.Uint32(wire[off+4:])})
		}
		off += 10 + int(binary.BigEndian.Uint16(wire[off+8:]))
	}
	if off != len(wire) {
		return nil
	}
	return f
}

// size is what the form holds beyond the entry (0 for none): the form, its
// two slices, and their rounding to the allocator's size classes.
func (f *hitForm) size() int {
	if f == nil {
		return 0
	}
	return 64 + cap(f.rrs)*8 + cap(f.addrs)*24 + 2*16
}

// plainNameLen is the wire length of the uncompressed name at off, false
// when it is compressed or runs past b.
func plainNameLen(b []byte, off int) (int, bool) {
	start := off
	for off < len(b) {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1 - start, true
		case l > 63:
			return 0, false // a pointer (or a reserved label type)
		}
		off += 1 + l
	}
	return 0, false
}

// admitsAll reports whether kept (Admit's result) is every address of the
// form's answer, in its order: then enforce removes no record.
func (f *hitForm) admitsAll(kept []netip.Addr) bool {
	if len(kept) != len(f.addrs) {
		return false
	}
	for i, a := range f.addrs {
		if kept[i] != a {
			return false
		}
	}
	return true
}

// result is the answer's resolver.Result after age seconds in the cache:
// what ReadReply reads from the reply with its TTLs counted down (each TTL
// t becomes t - min(age, t), and the minimum over the chain moves with it).
func (f *hitForm) result(age uint32) resolver.Result {
	return resolver.Result{Addrs: f.addrs, TTL: max(f.ttl-time.Duration(age)*time.Second, 0)}
}

// sameQuestion reports whether the client's query raw asks the stored
// question as written there but for the letters' case: then its question
// can take the stored one's place byte for byte.
func (f *hitForm) sameQuestion(raw, wire []byte) bool {
	n, ok := plainNameLen(raw, 12)
	if !ok || n != f.qlen || len(raw) < 12+n+4 {
		return false
	}
	for i := 12; i < 12+n; i++ {
		if lowerASCII(raw[i]) != lowerASCII(wire[i]) {
			return false
		}
	}
	return string(raw[12+n:12+n+4]) == string(wire[12+n:12+n+4]) // type and class
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// write appends the reply to the client's query raw to dst: the stored
// wire with raw's ID and question, each TTL counted down by age and, when
// capped, a chain record's at most hand seconds.
func (f *hitForm) write(dst, raw, wire []byte, age uint32, capped bool, hand uint32) []byte {
	start := len(dst)
	dst = append(dst, wire...)
	out := dst[start:]
	copy(out[0:2], raw[0:2])
	copy(out[12:12+f.qlen+4], raw[12:12+f.qlen+4])
	for _, rr := range f.rrs {
		ttl := rr.ttl - min(age, rr.ttl)
		if capped && rr.chain && ttl > hand {
			ttl = hand
		}
		binary.BigEndian.PutUint32(out[rr.off:], ttl)
	}
	return dst
}
