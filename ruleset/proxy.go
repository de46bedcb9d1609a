package ruleset

import (
	"fmt"
	"time"
)

// ProxySocketMark is the socket mark (SO_MARK) of the DNS proxy's sockets.
// A redirected query is delivered only to a socket that carries it (the
// input chain): setting a mark needs CAP_NET_ADMIN, so a user
// that binds the proxy's port while egressd does not hold it (where
// net.ipv4.ip_unprivileged_port_start allows that) receives nothing.
// egressd.socket sets it too (Mark=).
const ProxySocketMark = 0x65676473 // "egds"

// ProxyElement is one destination the DNS proxy answered for a uid: an
// address it resolved for an allowlisted name, with the entry's protocol
// and ports. The kernel removes it by itself when Timeout runs out (TTL +
// linger), whether or not egressd is running.
type ProxyElement struct {
	UID     uint32
	Element Element       // one address; the entry's port range
	Timeout time.Duration // to add: how long it stays; read back: what remains
	// Name is the name it was answered for, kept in the kernel as the
	// element's comment so that a restarted daemon knows which entry
	// allowed it ("" when not known: written by an older egressd). A
	// renewal keeps the name the element was first written with, except
	// where renewing means writing it again (kernels before 6.10).
	Name string
	// Renew: the element may be in the set already (to add): its timeout
	// must be renewed, which older kernels do only by deleting it and
	// adding it again.
	Renew bool
}

// MaxCommentName is the longest name an element's comment holds whole.
// The kernel refuses a longer comment (Linux 6.18: 252 characters fail the
// whole transaction, every other answer in it too) or keeps none (253: read
// back empty, which a restarted daemon would take for an older egressd's
// element, kept by any name entry); 200 leaves room on other kernels. No
// host name in use is that long; a DNS question carries up to 253.
const MaxCommentName = 200

// CommentFor is the comment of an element answered for name: the name, or
// for a longer one a backslash and its last MaxCommentName-1 characters. A
// name with a backslash matches no entry (the DNS proxy refuses escapes), so
// a restarted daemon keeps no such element through its first policy: the
// service asks again (fail closed).
func CommentFor(name string) string {
	if len(name) <= MaxCommentName {
		return name
	}
	return `\` + name[len(name)-(MaxCommentName-1):]
}

func (p ProxyElement) String() string {
	return fmt.Sprintf("%d . %s (%s)", p.UID, p.Element, p.Timeout)
}

// ProxyKernel is implemented by kernels that hold the DNS proxy's answers.
type ProxyKernel interface {
	// AddProxy adds elements, in one transaction, or renews their timeout
	// when they are there already.
	AddProxy(es []ProxyElement) error
	// ReadProxy returns the proxy's elements with the time each has left.
	ReadProxy() ([]ProxyElement, error)
	// DeleteProxy removes elements, in one transaction, whether or not
	// they are still there (an element may have timed out already): what
	// the policy in force no longer allows is closed at once.
	DeleteProxy(es []ProxyElement) error
}

// proxySetOf is the kernel set that holds a proxy element.
func proxySetOf(e Element) kernelSet { return kernelSet{Proxy: true, V6: e.Is6(), Range: !isExact(e)} }

// ProxySetName names the kernel set that holds a proxy element (for reports).
func ProxySetName(e Element) string { return proxySetOf(e).name() }

// IsProxySet says whether name is one of the DNS proxy's kernel sets.
func IsProxySet(name string) bool {
	for _, ks := range proxyKernelSets() {
		if ks.name() == name {
			return true
		}
	}
	return false
}
