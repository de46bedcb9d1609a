package fleet

import (
	"crypto/rand"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The lab's addresses: TEST-NET-1 (RFC 5737), only inside the namespaces
// the test creates. The controller (ansible-playbook) is the bridge itself.
const (
	controllerIP = "192.0.2.1"
	collectorIP  = "192.0.2.10"
)

var hostIPs = []string{"192.0.2.11", "192.0.2.12", "192.0.2.13"}

// network is a bridge in a namespace of its own and one namespace per
// container, joined to it by a veth pair.
type network struct {
	t      *testing.T
	prefix string
	spaces []string // names under /run/netns, the bridge's first
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	var b [3]byte
	rand.Read(b[:]) //nolint:errcheck
	n := &network{t: t, prefix: fmt.Sprintf("egfleet%x", b)}
	t.Cleanup(n.destroy)
	br := n.add("br")
	n.ip("-n", br, "link", "set", "lo", "up")
	n.ip("-n", br, "link", "add", "br0", "type", "bridge")
	n.ip("-n", br, "addr", "add", controllerIP+"/24", "dev", "br0")
	n.ip("-n", br, "link", "set", "br0", "up")
	return n
}

func (n *network) bridge() string { return n.spaces[0] }

func (n *network) add(suffix string) string {
	name := n.prefix + suffix
	n.ip("netns", "add", name)
	n.spaces = append(n.spaces, name)
	return name
}

// join makes a namespace for one container, with eth0 on the bridge at
// addr, and returns its path.
func (n *network) join(host, addr string) string {
	ns := n.add(host)
	veth := "v" + host
	n.ip("link", "add", veth, "netns", n.bridge(), "type", "veth", "peer", "name", "eth0", "netns", ns)
	n.ip("-n", n.bridge(), "link", "set", veth, "master", "br0", "up")
	n.ip("-n", ns, "link", "set", "lo", "up")
	n.ip("-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	n.ip("-n", ns, "link", "set", "eth0", "up")
	return filepath.Join("/run/netns", ns)
}

func (n *network) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// destroy deletes the namespaces (their veths and the bridge go with them).
func (n *network) destroy() {
	for i := len(n.spaces) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", n.spaces[i]).CombinedOutput(); err != nil {
			n.t.Errorf("ip netns del %s: %v\n%s", n.spaces[i], err, out)
		}
	}
}

// inBridge is a command run in the bridge's namespace (the controller).
func (n *network) inBridge(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.bridge(), name}, args...)...)
}
