package dnsproxy

import "golang.org/x/sys/unix"

var (
	errAddrNotAvail = unix.EADDRNOTAVAIL
	errAFNoSupport  = unix.EAFNOSUPPORT
)
