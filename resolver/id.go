package resolver

import (
	"crypto/rand"
	"encoding/binary"
)

// queryID is a DNS ID from the operating system's random source, as
// miekg's dns.Id, without its encoding/binary.Read (reflection and an
// allocation for two bytes; BenchmarkQueryID): crypto/rand on Linux reads
// the vDSO's getrandom.
func queryID() uint16 {
	var b [2]byte
	rand.Read(b[:]) //nolint:errcheck // never fails: crypto/rand crashes the program instead
	return binary.BigEndian.Uint16(b[:])
}
