//go:build zfs

package zfsd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// The helper runs in a mount namespace of its own, playing the node
// plugin's container: it sees the backing folder only at a path of its own.
const helperEnv = "DOTMESH_BACKING_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := backingHelper(); err != nil {
			fmt.Println("HELPER-ERROR", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// backingHelper: args in env are hostDir, containerDir, pool, mountRoot, hostPID.
func backingHelper() error {
	a := strings.Split(os.Getenv(helperEnv), "|")
	hostDir, containerDir, pool, mountRoot, hostPID := a[0], a[1], a[2], a[3], a[4]
	// The container's volume mount: the host folder at another path.
	if err := unix.Mount(hostDir, containerDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("container volume mount: %w", err)
	}
	// And the host's folder is not visible in the container at all.
	if err := unix.Mount("tmpfs", filepath.Dir(hostDir), "tmpfs", 0, ""); err != nil {
		return fmt.Errorf("hiding the host folder: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	z := zfs.New(zfs.ExecRunner{}, zfs.Options{})
	cfg := zfsd.Config{Name: pool, Dir: containerDir, Size: 128 << 20, MountRoot: mountRoot, Node: "helper"}

	// Without the host path, ZFS (which lives in the host's namespace) is
	// handed a path that means nothing there.
	if p, err := zfsd.Open(ctx, z, cfg); err == nil {
		_ = p.Close(ctx)
		return fmt.Errorf("opening from the container's own path worked; the test does not model a container")
	}
	if _, err := os.Stat(filepath.Join(containerDir, zfsd.PoolFile)); err == nil {
		return fmt.Errorf("failed open left a pool file behind")
	}

	cfg.HostMountinfo = "/proc/" + hostPID + "/mountinfo"
	p, err := zfsd.Open(ctx, z, cfg)
	if err != nil {
		return fmt.Errorf("open through the host-visible path: %w", err)
	}
	if _, err := p.CreateDot(ctx, zfsd.DotSpec{ID: uuid.NewString(), Name: "from-container", Capacity: 16 << 20}); err != nil {
		return err
	}
	if err := p.Close(ctx); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if _, ok := mountinfo.IsMountPoint(mounts, hostDir); ok {
		return fmt.Errorf("bind at the host path %s left after Close", hostDir)
	}
	fmt.Println("HELPER-OK")
	return nil
}

func TestBackingFolderThroughHostVisiblePath(t *testing.T) {
	zfstest.Require(t)
	tmp := t.TempDir()
	hostDir := filepath.Join(tmp, "host", "backing")
	containerDir := filepath.Join(tmp, "container", "backing")
	mountRoot := filepath.Join(tmp, "mnt")
	for _, d := range []string{hostDir, containerDir, mountRoot} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	pool := zfstest.UniqueName("bk")
	t.Cleanup(func() { zfstest.ForgetPool(t, pool) })

	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join([]string{hostDir, containerDir, pool, mountRoot, strconv.Itoa(os.Getpid())}, "|"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "HELPER-OK") {
		t.Fatalf("helper in its own mount namespace: %v\n%s", err, out)
	}
	// The pool file is in the host's folder, and the host imports it from
	// there with the dot the "container" made.
	if _, err := os.Stat(filepath.Join(hostDir, zfsd.PoolFile)); err != nil {
		t.Fatalf("pool file not in the host folder: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := zfsd.Config{Name: pool, Dir: hostDir, MountRoot: mountRoot, Node: "host"}
	p, err := zfsd.Open(ctx, zfstest.Client(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zfstest.Remove(t, p, cfg) })
	if _, err := p.GetDotByName(ctx, "from-container"); err != nil {
		t.Fatalf("dot made in the container is not on the host's import: %v", err)
	}
}
