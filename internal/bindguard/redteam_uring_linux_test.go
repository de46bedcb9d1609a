//go:build linux

package bindguard

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// io_uring (linux/io_uring.h): enough of it to submit one IORING_OP_BIND.
const (
	ioringOpBind            = 56 // Linux 6.11
	ioringOpURingCmd        = 46 // Linux 5.19; on sockets 6.7
	socketURingOpSetsockopt = 3
	ioringSetupSQPoll       = 1 << 1
	ioringEnterGetEv        = 1 << 0
	ioringEnterSQWake       = 1 << 1
	iosqeAsync              = 1 << 4
	ioringOffSQRing         = 0
	ioringOffCQRing         = 0x8000000
	ioringOffSQEs           = 0x10000000
	ioringSQENeedsWake      = 1 << 0
)

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// uringBind binds fd to sa through io_uring, submitted inline, forced to
// an io-wq worker (IOSQE_ASYNC), or by the kernel's SQPOLL thread, and
// returns the completion's result (0 or -errno).
func uringBind(mode string, fd int, sa *unix.RawSockaddrInet4) (int32, error) {
	return uringSubmit(mode, func(sqe []byte) {
		sqe[0] = ioringOpBind
		*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
		*(*uint64)(unsafe.Pointer(&sqe[8])) = uint64(unsafe.Sizeof(*sa))           // addr2: the address's length
		*(*uint64)(unsafe.Pointer(&sqe[16])) = uint64(uintptr(unsafe.Pointer(sa))) // addr
	})
}

// uringSetsockopt sets the option level/name of fd to val through io_uring
// (IORING_OP_URING_CMD, SOCKET_URING_OP_SETSOCKOPT: Linux 6.7), submitted
// inline, and returns the completion's result (0 or -errno).
func uringSetsockopt(fd, level, name int, val []byte) (int32, error) {
	return uringSubmit("inline", func(sqe []byte) {
		sqe[0] = ioringOpURingCmd
		*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
		*(*uint32)(unsafe.Pointer(&sqe[8])) = socketURingOpSetsockopt // cmd_op
		*(*uint32)(unsafe.Pointer(&sqe[16])) = uint32(level)
		*(*uint32)(unsafe.Pointer(&sqe[20])) = uint32(name)
		*(*uint32)(unsafe.Pointer(&sqe[44])) = uint32(len(val))                         // optlen
		*(*uint64)(unsafe.Pointer(&sqe[48])) = uint64(uintptr(unsafe.Pointer(&val[0]))) // optval
	})
}

// uringSubmit submits the one SQE fill writes (IOSQE_ASYNC added in mode
// async; by the SQPOLL thread in mode sqpoll) and returns its completion's
// result.
func uringSubmit(mode string, fill func(sqe []byte)) (int32, error) {
	var p uringParams
	if mode == "sqpoll" {
		p.flags = ioringSetupSQPoll
		p.sqThreadIdle = 1000
	}
	rfd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return 0, fmt.Errorf("io_uring_setup: %w", e)
	}
	ring := int(rfd)
	sq, err := unix.Mmap(ring, ioringOffSQRing, int(p.sqOff.array+p.sqEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap sq: %w", err)
	}
	cq, err := unix.Mmap(ring, ioringOffCQRing, int(p.cqOff.cqes+p.cqEntries*16), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap cq: %w", err)
	}
	sqes, err := unix.Mmap(ring, ioringOffSQEs, int(p.sqEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap sqes: %w", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	sqe := sqes[:64]
	fill(sqe)
	if mode == "async" {
		sqe[1] = iosqeAsync
	}
	tail := atomic.LoadUint32(u32(sq, p.sqOff.tail))
	*u32(sq, p.sqOff.array+(tail&*u32(sq, p.sqOff.ringMask))*4) = 0
	atomic.StoreUint32(u32(sq, p.sqOff.tail), tail+1)
	flags := uintptr(ioringEnterGetEv)
	if mode == "sqpoll" && atomic.LoadUint32(u32(sq, p.sqOff.flags))&ioringSQENeedsWake != 0 {
		flags |= ioringEnterSQWake
	}
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, rfd, 1, 1, flags, 0, 0); e != 0 {
		return 0, fmt.Errorf("io_uring_enter: %w", e)
	}
	head := atomic.LoadUint32(u32(cq, p.cqOff.head))
	if atomic.LoadUint32(u32(cq, p.cqOff.tail)) == head {
		return 0, fmt.Errorf("no completion")
	}
	cqe := p.cqOff.cqes + (head&*u32(cq, p.cqOff.ringMask))*16
	res := *(*int32)(unsafe.Pointer(&cq[cqe+8]))
	atomic.StoreUint32(u32(cq, p.cqOff.head), head+1)
	return res, nil
}

// uringHelper performs "uring,MODE,PORT": a TCP socket bound to
// 127.0.0.1:PORT through io_uring; prints "ok PORT" or the errno's name.
func uringHelper(op string) int {
	f := strings.Split(op, ",")
	port, _ := strconv.Atoi(f[2])
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: uint16(port>>8 | port&0xff<<8), Addr: [4]byte{127, 0, 0, 1}}
	res, err := uringBind(f[1], fd, &sa)
	switch {
	case err != nil:
		fmt.Println(err)
		return 1
	case res < 0:
		fmt.Println(unix.ErrnoName(unix.Errno(-res)))
		return 1
	}
	fmt.Println("ok", port)
	return 0
}

// io_uring binds (IORING_OP_BIND, Linux 6.11) reach inet_bind, and so the
// bind hooks, from the submitting task, an io-wq worker or the SQPOLL
// thread: each is a thread of the service's process, in its cgroup, with
// its credentials. As a restricted user and in a restricted unit.
func TestRedteamIOUringBind(t *testing.T) {
	r := newRig(t)
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Skipf("io_uring disabled here (kernel.io_uring_disabled=%s)", strings.TrimSpace(string(b)))
	}
	if got := r.run(0, "uring,inline,9990"); got != "ok 9990" {
		if got == "EINVAL" {
			t.Skip("no IORING_OP_BIND (Linux < 6.11)")
		}
		t.Fatalf("control, before any restriction: %q", got)
	}
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	// The attack works while nothing restricts it, from every context.
	for _, mode := range []string{"inline", "async", "sqpoll"} {
		if got := r.in(unitPath).run(protected, "uring,"+mode+",9999"); got != "ok 9999" {
			t.Fatalf("before the restriction, %s: %q", mode, got)
		}
	}
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	r.apply(policy)
	for _, mode := range []string{"inline", "async", "sqpoll"} {
		for _, c := range []struct {
			who string
			r   *rig
			uid int
		}{{"user", r, protected}, {"unit", r.in(unitPath), other}} {
			t.Run(mode+"/"+c.who, func(t *testing.T) {
				if got := c.r.run(c.uid, "uring,"+mode+",9999"); got != "EPERM" {
					t.Fatalf("io_uring bind of an unlisted port: %q, want EPERM", got)
				}
				if got := c.r.run(c.uid, "uring,"+mode+",8080"); got != "ok 8080" {
					t.Fatalf("control: io_uring bind of the listed port: %q", got)
				}
			})
		}
	}
}
