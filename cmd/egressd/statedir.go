package main

import (
	"os"
	"strings"
)

// stateDirectory is the service's state directory (StateDirectory=egressd
// sets $STATE_DIRECTORY), or "" when run by hand without one: the daemon
// keeps its last good configuration and its observations there.
func stateDirectory() string {
	dir, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	return dir
}
