package config

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTransientReasons(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  string
	}{
		{&fs.PathError{Op: "open", Path: "/etc/egressd/allow.d/a.yaml", Err: syscall.EMFILE}, "EMFILE"},
		{fmt.Errorf("cannot read /etc/resolv.conf: %w", &fs.PathError{Op: "open", Err: syscall.ENFILE}), "ENFILE"},
		{syscall.EINTR, "EINTR"},
		{&fs.PathError{Op: "read", Err: syscall.EAGAIN}, "EAGAIN"},
		{&fs.PathError{Op: "read", Err: errChanged}, "replaced"},
		{errVanished, "replaced"},
		{&fs.PathError{Op: "open", Err: syscall.ENOENT}, ""},
		{&fs.PathError{Op: "open", Err: syscall.EACCES}, ""},
		{nil, ""},
	} {
		if got := transientReason(tc.cause); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.cause, got, tc.want)
		}
	}
	// Only a load whose every error passes is transient: a typo beside it
	// is a rejected configuration.
	read := &Error{Pos: Pos{File: "a.yaml"}, Msg: "cannot read: too many open files", cause: syscall.EMFILE}
	typo := &Error{Pos: Pos{File: "b.yaml", Line: 2, Col: 3}, Msg: "unknown key"}
	if r, ok := Transient(Errors{read}); !ok || r != "EMFILE" {
		t.Errorf("a failed read: %q %v", r, ok)
	}
	if _, ok := Transient(Errors{read, typo}); ok {
		t.Error("a typo beside a failed read was called transient")
	}
	if _, ok := Transient(errors.New("x")); ok {
		t.Error("a plain error was called transient")
	}
	if r, ok := Transient(&fs.PathError{Op: "open", Path: "/etc/hosts", Err: syscall.EMFILE}); !ok || r != "EMFILE" {
		t.Errorf("the hosts file at the descriptor limit: %q %v", r, ok)
	}
}

// At the descriptor limit (a local user's connection flood) a load fails,
// and says it was the limit, not the files; the same files load once
// descriptors are free. A file that is not there is no transient failure.
func TestLoadAtTheDescriptorLimit(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"egressd.yaml":         "resolvers: [192.0.2.53]\n",
		"allow.d/billing.yaml": "user: \"1001\"\nallow: [192.0.2.1:443]\n",
	})
	main := filepath.Join(dir, "egressd.yaml")
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: min(old.Cur, 4096), Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old) //nolint:errcheck
	var fds []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fds = append(fds, fd)
	}
	_, err := LoadTrusted(main, true, Trust{Above: dir})
	for _, fd := range fds {
		unix.Close(fd)
	}
	if reason, ok := Transient(err); !ok || reason != "EMFILE" {
		t.Errorf("load at the descriptor limit: %v; Transient says %q, %v", err, reason, ok)
	}
	if _, err := LoadTrusted(main, true, Trust{Above: dir}); err != nil {
		t.Fatalf("the same files, descriptors free: %v", err)
	}
	_, err = LoadTrusted(filepath.Join(dir, "missing.yaml"), true, Trust{Above: dir})
	if _, ok := Transient(err); err == nil || ok {
		t.Errorf("a missing main file: %v, transient %v", err, ok)
	}
}
