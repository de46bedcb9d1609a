package config

import (
	"errors"
	"syscall"
)

// A read that failed for a reason that passes is not a bad configuration:
// the daemon keeps the last good one and reads again (Transient). These
// two are the file being replaced while it was read.
var (
	errChanged  = errors.New("the file changed while it was being checked; try again")
	errVanished = errors.New("the file went away between the directory listing and its read")
)

// Transient says whether a load failed only because reads failed for a
// reason that passes, and which: "EMFILE" or "ENFILE" (descriptors
// exhausted, as a local user's connection flood does), "EINTR", "EAGAIN",
// "ENOMEM", "ENOBUFS", or "replaced" (a file swapped or removed while it
// was being read). A load with any other error (a typo, an untrusted path,
// a missing file) is rejected as before. reason is the first error's.
// err may also be a plain read error (the hosts file's).
func Transient(err error) (reason string, ok bool) {
	var ce Errors
	if !errors.As(err, &ce) || len(ce) == 0 {
		reason = transientReason(err)
		return reason, reason != ""
	}
	for _, e := range ce {
		r := transientReason(e.cause)
		if r == "" {
			return "", false
		}
		if reason == "" {
			reason = r
		}
	}
	return reason, true
}

func transientReason(err error) string {
	if err == nil {
		return ""
	}
	for _, e := range []struct {
		errno syscall.Errno
		name  string
	}{{syscall.EMFILE, "EMFILE"}, {syscall.ENFILE, "ENFILE"}, {syscall.EINTR, "EINTR"}, {syscall.EAGAIN, "EAGAIN"},
		{syscall.ENOMEM, "ENOMEM"}, {syscall.ENOBUFS, "ENOBUFS"}} {
		if errors.Is(err, e.errno) {
			return e.name
		}
	}
	if errors.Is(err, errChanged) || errors.Is(err, errVanished) {
		return "replaced"
	}
	return ""
}
