package systemd

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

	"github.com/egressd/egressd/internal/systest"
	"golang.org/x/sys/unix"
)

// require skips (or, under EGRESSD_REQUIRE_SYSTEM_TESTS=1, fails) unless
// this runs as root with the container tools, the given other tools (of the
// host) and a cgroup2 hierarchy.
func require(t *testing.T, tools ...string) {
	t.Helper()
	systest.Require(t)
	miss := func(why string) {
		if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
			t.Fatalf("real-systemd test: %s, and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping (apt-get install --no-install-recommends systemd-container debootstrap)", why)
		}
		t.Skipf("real-systemd test: %s (apt-get install --no-install-recommends systemd-container debootstrap)", why)
	}
	for _, tool := range append([]string{"systemd-nspawn", "debootstrap", "nsenter"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			miss(tool + " not installed")
		}
	}
	if cgroup2() == "" {
		miss("no cgroup2 hierarchy mounted")
	}
}

// cgroup2 is where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on a
// unified host, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

// container is one systemd-nspawn container: systemd as PID 1, a private
// network namespace holding only lo, the cached root file system under an
// overlay of its own (tests never write to the cache), in a cgroup of its
// own (the host runs no systemd to give it one).
type container struct {
	t     *testing.T
	name  string
	dir   string // upper, work, root
	root  string // the overlay, the container's /
	cg    string // its cgroup
	binds []string
	rw    []string // read-write binds (SRC:DST), set before boot
	caps  []string // capabilities beyond systemd-nspawn's default set, set before boot

	cmd    *exec.Cmd
	exited chan struct{}
	pid    int // the container's PID 1, as the host sees it
}

func newContainer(t *testing.T, binds ...string) *container {
	t.Helper()
	return newContainerFrom(t, rootfs(t), binds...)
}

// newContainerFrom is newContainer on another cached root file system
// (rootfsFor).
func newContainerFrom(t *testing.T, lower string, binds ...string) *container {
	t.Helper()
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck
	c := &container{t: t, name: fmt.Sprintf("egressd-systest-%x", b), binds: binds}
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

// boot starts the container and waits until systemd reports the boot done.
func (c *container) boot() {
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
	args := []string{"--quiet", "--directory=" + c.root, "--machine=" + c.name,
		"--register=no", "--keep-unit", "--private-network", "--system-call-filter=bpf"}
	for _, b := range c.binds {
		args = append(args, "--bind-ro="+b)
	}
	for _, b := range c.rw {
		args = append(args, "--bind="+b)
	}
	for _, cp := range c.caps {
		args = append(args, "--capability="+cp)
	}
	args = append(args, "--boot")
	cmd := exec.Command("systemd-nspawn", args...)
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
			t.Fatalf("systemd-nspawn exited: %v\n%s", cmd.ProcessState, c.console())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PID 1 in the container after 60 s\n%s", c.console())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Until systemd has exec'd and opened its private bus, systemctl
	// cannot connect: retry that; then wait for the boot to finish.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out string
	for {
		out, _ = c.exec(ctx, "systemctl", "is-system-running", "--wait")
		// systemd 252: "Failed to connect to bus"; 257: "Failed to connect to system scope bus".
		// "offline": systemd has not created /run/systemd/system yet (seen on a
		// loaded machine right after PID 1 appeared).
		starting := strings.Contains(out, "Failed to connect to bus") || strings.Contains(out, "Failed to connect to system scope bus") ||
			strings.TrimSpace(out) == "offline"
		if !starting || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := strings.TrimSpace(out); s != "running" {
		failed, _ := c.run("systemctl", "--failed", "--no-legend", "--plain")
		t.Fatalf("boot finished %q, failed units:\n%s", s, failed)
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
			// PID 1 once it runs systemd (before that it is nspawn's child).
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

// must runs a command that has to succeed.
func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// show returns one property of a unit (systemctl show --value).
func (c *container) show(unit, prop string) string {
	c.t.Helper()
	return strings.TrimSpace(c.must("systemctl", "show", "--value", "--property="+prop, unit))
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

// wait waits for systemd-nspawn to exit and returns its exit status.
func (c *container) wait(d time.Duration) (int, bool) {
	select {
	case <-c.exited:
		c.pid = 0
		return c.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// reboot reboots systemd inside: systemd-nspawn exits with 133, and the
// container is booted again on the same file system.
func (c *container) reboot() {
	c.t.Helper()
	c.run("systemctl", "reboot") //nolint:errcheck // the connection may drop
	code, ok := c.wait(2 * time.Minute)
	if !ok || code != 133 {
		c.t.Fatalf("after systemctl reboot: systemd-nspawn exit %d (want 133), exited %v\n%s", code, ok, c.console())
	}
	c.boot()
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
			out, _ := c.run("journalctl", "--boot", "--no-pager", "--lines=150", "--output=short-monotonic")
			t.Logf("container journal (last lines):\n%s", out)
		}
		c.run("systemctl", "poweroff") //nolint:errcheck
		if _, ok := c.wait(60 * time.Second); !ok {
			t.Errorf("container did not power off in 60 s; killing it")
		}
	}
	if c.cmd != nil {
		select {
		case <-c.exited:
		default:
			os.WriteFile(filepath.Join(c.cg, "cgroup.kill"), []byte("1"), 0) //nolint:errcheck
			if _, ok := c.wait(30 * time.Second); !ok {
				t.Errorf("systemd-nspawn still running after cgroup.kill")
			}
		}
	}
	// The last processes may still be dying: wait until the tree is empty.
	for i := 0; i < 200; i++ {
		b, _ := os.ReadFile(filepath.Join(c.cg, "cgroup.events"))
		if !strings.Contains(string(b), "populated 1") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Remove the cgroup tree, deepest first.
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

// runSplit runs a command inside the container, stdout and stderr apart.
func (c *container) runSplit(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", fmt.Sprint(c.pid), "--all", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
