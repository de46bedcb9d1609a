// Package privilege says whether this process may read and change
// nf_tables: CAP_NET_ADMIN in its effective set (root has it; egressd.service
// runs as a dynamic user holding only that capability).
package privilege

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// NetAdmin reports whether the process has CAP_NET_ADMIN in its effective
// capability set (/proc/self/status CapEff): the kernel answers nf_tables
// only then, root or not.
func NetAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_NET_ADMIN) != 0
		}
	}
	return false
}
