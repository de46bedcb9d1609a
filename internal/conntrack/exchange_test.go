//go:build linux

package conntrack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelPair is a sock whose "kernel" is the other end of a datagram
// socketpair, answered by the test.
func kernelPair(t *testing.T) (*sock, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return &sock{fd: fds[0], req: make([]byte, 0, 128), buf: make([]byte, 16<<10)}, fds[1]
}

func nlError(seq uint32, errno unix.Errno) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+4))
	b = binary.NativeEndian.AppendUint16(b, unix.NLMSG_ERROR)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return binary.NativeEndian.AppendUint32(b, uint32(-int32(errno)))
}

// readRequest is the kernel side: one GET, its sequence number.
func readRequest(t *testing.T, fd int) uint32 {
	t.Helper()
	b := make([]byte, 512)
	n, err := unix.Read(fd, b)
	if err != nil || n < nlmsgHdrLen {
		t.Errorf("kernel side: read %d, %v", n, err)
		return 0
	}
	if typ := binary.NativeEndian.Uint16(b[4:6]); typ != nfnlSubsysCTNetlink<<8|ctMsgGet {
		t.Errorf("request type %#x, want IPCTNL_MSG_CT_GET", typ)
	}
	return binary.NativeEndian.Uint32(b[8:12])
}

var testTuple = Tuple{Proto: 17, Src: netip.MustParseAddrPort("127.0.0.1:5399"), Dst: netip.MustParseAddrPort("192.0.2.7:40000")}

// An answer left by an earlier lookup that gave up is skipped; the
// current one is taken, whether it is already queued or arrives while the
// lookup waits for it.
func TestExchangeSkipsStaleAndWaits(t *testing.T) {
	s, kfd := kernelPair(t)
	if _, err := unix.Write(kfd, nlError(0, unix.EPERM)); err != nil { // an old answer still queued
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.get(testTuple, 0); done <- err }()
	seq := readRequest(t, kfd)
	if _, err := unix.Write(kfd, nlError(seq, unix.ENOENT)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrNotFound) {
		t.Errorf("with a stale answer queued first: %v, want ErrNotFound", err)
	}

	go func() { _, err := s.get(testTuple, 7); done <- err }()
	seq = readRequest(t, kfd)
	time.Sleep(20 * time.Millisecond) // the lookup finds nothing queued and polls
	if _, err := unix.Write(kfd, nlError(seq, unix.EPERM)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, unix.EPERM) {
		t.Errorf("an answer after a wait: %v, want EPERM", err)
	}
}

// A kernel that never answers ends the lookup with an error (after the
// poll timeout), never with a flow.
func TestExchangeNoAnswer(t *testing.T) {
	s, kfd := kernelPair(t)
	done := make(chan error, 1)
	go func() { _, err := s.get(testTuple, 0); done <- err }()
	readRequest(t, kfd)
	select {
	case err := <-done:
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("no answer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lookup waits for ever")
	}
}
