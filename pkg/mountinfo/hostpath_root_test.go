//go:build zfs

package mountinfo

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRoot fails, never skips: CI runs as root, so these tests run there.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("mounting needs root; running as uid %d (run through make test)", os.Geteuid())
	}
}

// The helper process plays the node plugin's container: a mount namespace
// of its own, where the host's folder shows at a different path.
const (
	helperDirEnv = "MOUNTINFO_HELPER_DIR"
	helperPIDEnv = "MOUNTINFO_HELPER_HOST_PID"
)

func TestHostPathFromOtherMountNamespace(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	hostDir := filepath.Join(tmp, "host", "realdata")
	if err := os.MkdirAll(filepath.Join(hostDir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "file"), []byte("from the host"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "container", "data"), 0o750); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+tmp, helperPIDEnv+"="+strconv.Itoa(os.Getpid()))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper in its own mount namespace: %v\n%s", err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "HOSTPATH ") {
			got[strings.TrimPrefix(k, "HOSTPATH ")] = v
		}
	}
	for in, want := range map[string]string{
		"data": hostDir,
		"sub":  filepath.Join(hostDir, "sub"),
	} {
		if got[in] != want {
			t.Errorf("host path of the container's %s = %q, want %q\nhelper output:\n%s", in, got[in], want, out)
		}
	}

	// The helper's mounts stayed in its namespace.
	ms, err := ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := IsMountPoint(ms, filepath.Join(tmp, "container", "data")); ok {
		t.Errorf("helper's bind leaked into the test's namespace: %+v", m)
	}
}

// TestHelperProcess is the "container" side of
// TestHostPathFromOtherMountNamespace; run directly it does nothing.
func TestHelperProcess(t *testing.T) {
	tmp := os.Getenv(helperDirEnv)
	if tmp == "" {
		t.Skip("helper for TestHostPathFromOtherMountNamespace, run by it in a new mount namespace")
	}
	hostPID := os.Getenv(helperPIDEnv)
	hostDir := filepath.Join(tmp, "host", "realdata")
	containerDir := filepath.Join(tmp, "container", "data")

	// Our namespace is private, so nothing here reaches the test's
	// namespace; unmount anyway so a failure leaves nothing behind either.
	// The container's volume mount: the host folder at another path.
	if err := unix.Mount(hostDir, containerDir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("container volume mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(containerDir, unix.MNT_DETACH) })
	// And the host's path shows nothing in the container, so only the
	// mount tables can say where the folder is.
	hidden := filepath.Join(tmp, "host")
	if err := unix.Mount("tmpfs", hidden, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("hiding the host folder: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(hidden, unix.MNT_DETACH) })
	if _, err := os.Stat(filepath.Join(hostDir, "file")); err == nil {
		t.Fatal("host folder still visible at its host path; the helper does not model a container")
	}
	if b, err := os.ReadFile(filepath.Join(containerDir, "file")); err != nil || string(b) != "from the host" {
		t.Fatalf("host file through the container's mount: %q, %v", b, err)
	}

	for name, dir := range map[string]string{"data": containerDir, "sub": filepath.Join(containerDir, "sub")} {
		got, err := HostPath(dir, "/proc/self/mountinfo", "/proc/"+hostPID+"/mountinfo")
		if err != nil {
			t.Fatalf("HostPath(%s): %v", dir, err)
		}
		fmt.Printf("HOSTPATH %s=%s\n", name, got)
	}
}
