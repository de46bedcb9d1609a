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
