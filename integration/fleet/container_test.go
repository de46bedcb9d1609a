package fleet

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// container is one systemd-nspawn container: systemd as PID 1, in a network
// namespace made by the lab, the cached root file system under an overlay
// of its own (tests never write to the cache), in a cgroup of its own (the
// host runs no systemd to give it one). As integration/systemd's container,
// with the network namespace given and the boot split in start and wait so
// that the lab's hosts boot together.
type container struct {
	t     *testing.T
	name  string // the host name too
	dir   string // upper, work, root, console.log
	root  string // the overlay, the container's /
	cg    string // its cgroup
	netns string // the network namespace it joins (a path)

	cmd    *exec.Cmd
	exited chan struct{}
	pid    int // the container's PID 1, as the host sees it
}

func newContainer(t *testing.T, lower, host, netns string) *container {
	t.Helper()
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck
	c := &container{t: t, name: fmt.Sprintf("egressd-fleet-%s-%x", host, b), netns: netns}
	c.dir = t.TempDir()
	c.root = filepath.Join(c.dir, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(c.dir, "upper"), filepath.Join(c.dir, "work"))
	if err := unix.Mount("overlay", c.root, "overlay", 0, opts); err != nil {
		t.Fatalf("overlay on the cached root: %v", err)
	}
	c.cg = filepath.Join(cgroup2(), c.name)
	if err := os.Mkdir(c.cg, 0o755); err != nil {
		unix.Unmount(c.root, unix.MNT_DETACH) //nolint:errcheck
		t.Fatal(err)
	}
	t.Cleanup(c.destroy)
	return c
}

// start starts systemd-nspawn and waits for systemd to be PID 1.
func (c *container) start() {
	t := c.t
	t.Helper()
	cgfd, err := unix.Open(c.cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgfd)
	console, err := os.OpenFile(filepath.Join(c.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	cmd := exec.Command("systemd-nspawn", "--quiet", "--directory="+c.root, "--machine="+c.name,
		"--register=no", "--keep-unit", "--network-namespace-path="+c.netns, "--system-call-filter=bpf",
		// --private-network grants this; a given namespace does not. The
		// namespace is the container's own (the lab made it for it).
		"--capability=CAP_NET_ADMIN", "--boot")
	// The host has a hybrid cgroup layout; systemd in the container wants
	// the unified one (cgroup2), delegated: the cgroup made for it.
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	c.cmd, c.exited, c.pid = cmd, make(chan struct{}), 0
	go func(done chan struct{}) { cmd.Wait(); close(done) }(c.exited) //nolint:errcheck
	deadline := time.Now().Add(60 * time.Second)
	for c.pid == 0 {
		c.pid = c.findPID1()
		select {
		case <-c.exited:
			t.Fatalf("%s: systemd-nspawn exited: %v\n%s", c.name, cmd.ProcessState, c.console())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no PID 1 in the container after 60 s\n%s", c.name, c.console())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// booted waits until systemd reports the boot done, and every unit up.
func (c *container) booted() {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out string
	for {
		out, _ = c.exec(ctx, "systemctl", "is-system-running", "--wait")
		if !strings.Contains(out, "Failed to connect to bus") || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := strings.TrimSpace(out); s != "running" {
		failed, _ := c.run("systemctl", "--failed", "--no-legend", "--plain")
		t.Fatalf("%s: boot finished %q, failed units:\n%s", c.name, s, failed)
	}
}

// findPID1 finds the process of the container's cgroup that is PID 1 in its
// own PID namespace.
func (c *container) findPID1() int {
	pid := 0
	filepath.WalkDir(c.cg, func(p string, d os.DirEntry, err error) error { //nolint:errcheck
		if err != nil || d.Name() != "cgroup.procs" || pid != 0 {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if exe, _ := os.Readlink("/proc/" + f + "/exe"); !strings.HasSuffix(exe, "/systemd") {
				continue
			}
			st, err := os.ReadFile("/proc/" + f + "/status")
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(strings.NewReader(string(st)))
			for sc.Scan() {
				if ns := strings.Fields(strings.TrimPrefix(sc.Text(), "NSpid:")); strings.HasPrefix(sc.Text(), "NSpid:") && len(ns) == 2 && ns[1] == "1" {
					fmt.Sscan(ns[0], &pid) //nolint:errcheck
				}
			}
		}
		return nil
	})
	return pid
}

// exec runs a fixed command inside the container, in every namespace of
// its PID 1 (nsenter, no shell), and returns its combined output.
func (c *container) exec(ctx context.Context, args ...string) (string, error) {
	if c.pid == 0 {
		return "", errors.New("container not running")
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", fmt.Sprint(c.pid), "--all", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is exec with a two-minute bound.
func (c *container) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.exec(ctx, args...)
}

// must runs a command that has to succeed; failures are reported to t.
func (c *container) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(args...)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", c.name, strings.Join(args, " "), err, out)
	}
	return out
}

// write creates a file in the container's file system (through the overlay).
func (c *container) write(path, content string, mode os.FileMode) {
	c.t.Helper()
	p := filepath.Join(c.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		c.t.Fatal(err)
	}
}

// link creates a symbolic link in the container's file system.
func (c *container) link(target, path string) {
	c.t.Helper()
	p := filepath.Join(c.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		c.t.Fatal(err)
	}
}

func (c *container) wait(d time.Duration) bool {
	select {
	case <-c.exited:
		c.pid = 0
		return true
	case <-time.After(d):
		return false
	}
}

func (c *container) console() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "console.log"))
	return tail(b, 30)
}

// destroy powers the container off (killing what remains through the
// cgroup), removes its cgroup and unmounts its overlay.
func (c *container) destroy() {
	t := c.t
	if c.cmd != nil && c.pid != 0 {
		if t.Failed() {
			out, _ := c.run("journalctl", "--boot", "--no-pager", "--lines=80", "--output=short-monotonic")
			t.Logf("%s: journal (last lines):\n%s", c.name, out)
		}
		c.run("systemctl", "poweroff") //nolint:errcheck
		if !c.wait(60 * time.Second) {
			t.Errorf("%s did not power off in 60 s; killing it", c.name)
		}
	}
	if c.cmd != nil {
		select {
		case <-c.exited:
		default:
			os.WriteFile(filepath.Join(c.cg, "cgroup.kill"), []byte("1"), 0) //nolint:errcheck
			if !c.wait(30 * time.Second) {
				t.Errorf("%s: systemd-nspawn still running after cgroup.kill", c.name)
			}
		}
	}
	for i := 0; i < 200; i++ {
		b, _ := os.ReadFile(filepath.Join(c.cg, "cgroup.events"))
		if !strings.Contains(string(b), "populated 1") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var dirs []string
	filepath.WalkDir(c.cg, func(p string, d os.DirEntry, err error) error { //nolint:errcheck
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
			t.Errorf("remove cgroup: %v", err)
		}
	}
	if err := unix.Unmount(c.root, 0); err != nil {
		t.Errorf("unmount the container's overlay: %v", err)
		unix.Unmount(c.root, unix.MNT_DETACH) //nolint:errcheck
	}
	os.Remove("/run/systemd/nspawn/propagate/" + c.name) //nolint:errcheck
}
