package fleet

import (
	"testing"

	"github.com/egressd/egressd/internal/systest/nspawn"
)

// container is an nspawn.Container in a network namespace made by the lab,
// its boot split in start and Booted so that the lab's hosts boot together.
type container struct {
	*nspawn.Container
	netns string // the network namespace it joins (a path)
}

func newContainer(t *testing.T, lower, host, netns string) *container {
	t.Helper()
	c := &container{Container: nspawn.New(t, "egressd-fleet-"+host, lower), netns: netns}
	c.JournalLines = 80
	return c
}

// start starts systemd-nspawn and waits for systemd to be PID 1.
func (c *container) start() {
	c.T.Helper()
	c.Start("--network-namespace-path="+c.netns,
		// --private-network grants this; a given namespace does not. The
		// namespace is the container's own (the lab made it for it).
		"--capability=CAP_NET_ADMIN")
}
