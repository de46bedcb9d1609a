// Package nspawn is test support for the container tiers (integration/systemd
// and integration/fleet), not part of egressd: systemd-nspawn containers that
// boot systemd as PID 1 from a cached Debian root file system (RootFS) under
// an overlay of their own, in a cgroup of their own. Only tests import it.
package nspawn

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

// Cgroup2 is where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on a
// unified host, /sys/fs/cgroup/unified on a hybrid one; "" when none is.
func Cgroup2() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

// Container is one systemd-nspawn container: systemd as PID 1, the cached
// root file system under an overlay of its own (tests never write to the
// cache), in a cgroup of its own (the host runs no systemd to give it one).
// Its network is what the options given to Start make it.
type Container struct {
	T    testing.TB // failures are reported here (tests may swap in a subtest's)
	Name string     // the machine name
	Dir  string     // upper, work, root, console.log
	Root string     // the overlay, the container's /
	Cg   string     // its cgroup
	PID  int        // the container's PID 1, as the host sees it; 0 when not running

	// JournalLines is how much of the journal Destroy logs when T failed.
	JournalLines int

	cmd    *exec.Cmd
	exited chan struct{}
}

// New mounts the overlay on lower (a RootFS) and makes the cgroup of a
// container named prefix-<random hex>; t's cleanup destroys it.
func New(t testing.TB, prefix, lower string) *Container {
	t.Helper()
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck
	c := &Container{T: t, Name: fmt.Sprintf("%s-%x", prefix, b), JournalLines: 150}
	c.Dir = t.TempDir()
	c.Root = filepath.Join(c.Dir, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(c.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(c.Dir, "upper"), filepath.Join(c.Dir, "work"))
	if err := unix.Mount("overlay", c.Root, "overlay", 0, opts); err != nil {
		t.Fatalf("overlay on the cached root: %v", err)
	}
	c.Cg = filepath.Join(Cgroup2(), c.Name)
	if err := os.Mkdir(c.Cg, 0o755); err != nil {
		unix.Unmount(c.Root, unix.MNT_DETACH) //nolint:errcheck
		t.Fatal(err)
	}
	t.Cleanup(c.Destroy)
	return c
}

// Start starts systemd-nspawn with the given options (network, binds,
// capabilities) besides the fixed ones, and waits for systemd to be PID 1.
func (c *Container) Start(opts ...string) {
	t := c.T
	t.Helper()
	cgfd, err := unix.Open(c.Cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgfd)
	console, err := os.OpenFile(filepath.Join(c.Dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	args := []string{"--quiet", "--directory=" + c.Root, "--machine=" + c.Name,
		"--register=no", "--keep-unit", "--system-call-filter=bpf"}
	args = append(append(args, opts...), "--boot")
	cmd := exec.Command("systemd-nspawn", args...)
	// The host has a hybrid cgroup layout; systemd in the container wants
	// the unified one (cgroup2), delegated: the cgroup made for it.
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	c.cmd, c.exited, c.PID = cmd, make(chan struct{}), 0
	go func(done chan struct{}) { cmd.Wait(); close(done) }(c.exited) //nolint:errcheck
	deadline := time.Now().Add(60 * time.Second)
	for c.PID == 0 {
		c.PID = c.findPID1()
		select {
		case <-c.exited:
			t.Fatalf("%s: systemd-nspawn exited: %v\n%s", c.Name, cmd.ProcessState, c.Console())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no PID 1 in the container after 60 s\n%s", c.Name, c.Console())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Booted waits until systemd reports the boot done, and every unit up.
func (c *Container) Booted() {
	t := c.T
	t.Helper()
	// Until systemd has exec'd and opened its private bus, systemctl
	// cannot connect: retry that; then wait for the boot to finish.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out string
	for {
		out, _ = c.Exec(ctx, "systemctl", "is-system-running", "--wait")
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
		failed, _ := c.Run("systemctl", "--failed", "--no-legend", "--plain")
		t.Fatalf("%s: boot finished %q, failed units:\n%s", c.Name, s, failed)
	}
}

// findPID1 finds the process of the container's cgroup that is PID 1 in its
// own PID namespace.
func (c *Container) findPID1() int {
	pid := 0
	filepath.WalkDir(c.Cg, func(p string, d os.DirEntry, err error) error { //nolint:errcheck
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

// command is a fixed command inside the container, in every namespace of
// its PID 1 (nsenter, no shell).
func (c *Container) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", fmt.Sprint(c.PID), "--all", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="}
	return cmd
}

// Exec runs a fixed command inside the container and returns its combined
// output.
func (c *Container) Exec(ctx context.Context, args ...string) (string, error) {
	if c.PID == 0 {
		return "", errors.New("container not running")
	}
	out, err := c.command(ctx, args).CombinedOutput()
	return string(out), err
}

// Run is Exec with a two-minute bound.
func (c *Container) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.Exec(ctx, args...)
}

// RunSplit is Run with stdout and stderr apart.
func (c *Container) RunSplit(args ...string) (string, string, error) {
	if c.PID == 0 {
		return "", "", errors.New("container not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// Must runs a command that has to succeed; failures are reported to c.T.
func (c *Container) Must(args ...string) string {
	c.T.Helper()
	return c.MustT(c.T, args...)
}

// MustT is Must reporting to t.
func (c *Container) MustT(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Run(args...)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", c.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Show returns one property of a unit (systemctl show --value).
func (c *Container) Show(unit, prop string) string {
	c.T.Helper()
	return strings.TrimSpace(c.Must("systemctl", "show", "--value", "--property="+prop, unit))
}

// Write creates a file in the container's file system (through the overlay).
func (c *Container) Write(path, content string, mode os.FileMode) {
	c.T.Helper()
	p := filepath.Join(c.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.T.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		c.T.Fatal(err)
	}
}

// Link creates a symbolic link in the container's file system.
func (c *Container) Link(target, path string) {
	c.T.Helper()
	p := filepath.Join(c.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.T.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		c.T.Fatal(err)
	}
}

// Wait waits up to d for systemd-nspawn to exit and returns its exit status.
func (c *Container) Wait(d time.Duration) (int, bool) {
	select {
	case <-c.exited:
		c.PID = 0
		return c.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// Console is the last lines of the container's console.
func (c *Container) Console() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "console.log"))
	return Tail(b, 30)
}

// Destroy powers the container off (killing what remains through the
// cgroup), removes its cgroup and unmounts its overlay; when T failed, it
// logs the end of the journal first.
func (c *Container) Destroy() {
	t := c.T
	if c.cmd != nil && c.PID != 0 {
		if t.Failed() {
			out, _ := c.Run("journalctl", "--boot", "--no-pager", fmt.Sprintf("--lines=%d", c.JournalLines), "--output=short-monotonic")
			t.Logf("%s: journal (last lines):\n%s", c.Name, out)
		}
		c.Run("systemctl", "poweroff") //nolint:errcheck
		if _, ok := c.Wait(60 * time.Second); !ok {
			t.Errorf("%s did not power off in 60 s; killing it", c.Name)
		}
	}
	if c.cmd != nil {
		select {
		case <-c.exited:
		default:
			os.WriteFile(filepath.Join(c.Cg, "cgroup.kill"), []byte("1"), 0) //nolint:errcheck
			if _, ok := c.Wait(30 * time.Second); !ok {
				t.Errorf("%s: systemd-nspawn still running after cgroup.kill", c.Name)
			}
		}
	}
	// The last processes may still be dying: wait until the tree is empty.
	for i := 0; i < 200; i++ {
		b, _ := os.ReadFile(filepath.Join(c.Cg, "cgroup.events"))
		if !strings.Contains(string(b), "populated 1") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Remove the cgroup tree, deepest first.
	var dirs []string
	filepath.WalkDir(c.Cg, func(p string, d os.DirEntry, err error) error { //nolint:errcheck
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
	if err := unix.Unmount(c.Root, 0); err != nil {
		t.Errorf("unmount the container's overlay: %v", err)
		unix.Unmount(c.Root, unix.MNT_DETACH) //nolint:errcheck
	}
	os.Remove("/run/systemd/nspawn/propagate/" + c.Name) //nolint:errcheck
}

// ExitCode is the exit status in err (from Run and the like), -1 when it
// holds none.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Tail is the last n lines of b.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
