//go:build zfs

package mountinfo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// deadFUSE mounts at dir a FUSE filesystem whose daemon is already gone:
// the connection's descriptor is closed right after the mount, which
// aborts it, just as a zfs-fuse daemon exiting does. Every access through
// it then fails with ENOTCONN. source and fsType are what mountinfo shows
// (say a dataset and "fuse.zfs"). No daemon, shared or not, is involved.
func deadFUSE(t *testing.T, source, fsType, dir string) {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/fuse: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	err = unix.Mount(source, dir, fsType, unix.MS_NOSUID|unix.MS_NODEV, opts)
	_ = unix.Close(fd)
	if err != nil {
		t.Fatalf("mounting a FUSE filesystem at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

func tmpfsAt(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("tmpfs at %s: %v", dir, err)
	}
	unmountAtCleanup(t, dir)
}

func TestCheckAlive(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	live, dead, missing := filepath.Join(dir, "live"), filepath.Join(dir, "dead"), filepath.Join(dir, "missing")
	mkdirs(t, live, dead)
	tmpfsAt(t, live)
	deadFUSE(t, "tank/dots/x", "fuse.zfs", dead)

	if err := CheckAlive(live); err != nil {
		t.Errorf("live tmpfs: %v", err)
	}
	if err := CheckAlive(dead); !errors.Is(err, ErrDeadMount) || !strings.Contains(err.Error(), dead) {
		t.Errorf("FUSE mount without its daemon: %v, want ErrDeadMount naming the path", err)
	}
	if err := CheckAlive(missing); err == nil || errors.Is(err, ErrDeadMount) {
		t.Errorf("missing path: %v, want an error that is not ErrDeadMount", err)
	}
}

func TestUnmountLazy(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	dead, busy := filepath.Join(dir, "dead"), filepath.Join(dir, "busy")
	mkdirs(t, dead, busy)
	deadFUSE(t, "tank/dots/x", "fuse.zfs", dead)
	if err := UnmountLazy(dead); err != nil {
		t.Fatal(err)
	}
	if m, ok := mountPoint(t, dead); ok {
		t.Fatalf("dead mount still there after a lazy unmount: %+v", m)
	}
	if err := UnmountLazy(dead); err != nil {
		t.Errorf("lazy unmount of what is no mount point: %v", err)
	}

	// A file held open makes a plain unmount fail; a lazy one still takes
	// the mount out of the tree, and the open file stays usable.
	tmpfsAt(t, busy)
	f, err := os.Create(filepath.Join(busy, "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Unmount(busy, 0); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("plain unmount of a busy mount: %v, want EBUSY (the test shows nothing otherwise)", err)
	}
	if err := UnmountLazy(busy); err != nil {
		t.Fatal(err)
	}
	if m, ok := mountPoint(t, busy); ok {
		t.Fatalf("busy mount still there after a lazy unmount: %+v", m)
	}
	if _, err := f.WriteString("still open"); err != nil {
		t.Errorf("writing the file held open: %v", err)
	}
}

func TestDetachDead(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "p")
	mkdirs(t, p)
	isZFS := func(m Mount) bool { return m.FSType == "fuse.zfs" && m.Source == "tank/dots/x" }

	// A live tmpfs with two dead mounts of "ours" stacked on it: both go,
	// the live one stays and is returned.
	tmpfsAt(t, p)
	deadFUSE(t, "tank/dots/x", "fuse.zfs", p)
	deadFUSE(t, "tank/dots/x", "fuse.zfs", p)
	top, ok, err := DetachDead(p, isZFS)
	if err != nil || !ok || top.FSType != "tmpfs" {
		t.Fatalf("DetachDead = %+v %v %v, want the tmpfs left on top", top, ok, err)
	}
	if n := countAt(t, p); n != 1 {
		t.Fatalf("%d mounts at %s, want the tmpfs alone", n, p)
	}
	if err := CheckAlive(p); err != nil {
		t.Fatalf("what is left is not alive: %v", err)
	}

	// A dead mount that is not ours is left alone, and returned.
	deadFUSE(t, "tank/dots/other", "fuse.zfs", p)
	top, ok, err = DetachDead(p, isZFS)
	if err != nil || !ok || top.Source != "tank/dots/other" {
		t.Fatalf("DetachDead over a foreign dead mount = %+v %v %v", top, ok, err)
	}
	if n := countAt(t, p); n != 2 {
		t.Fatalf("%d mounts at %s, want the foreign dead mount kept on the tmpfs", n, p)
	}
	if _, ok, err := DetachDead(filepath.Join(dir, "none"), isZFS); ok || err != nil {
		t.Fatalf("DetachDead of no mount point: %v %v", ok, err)
	}
}

func TestUnmountOnly(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	src, p := filepath.Join(dir, "src"), filepath.Join(dir, "p")
	mkdirs(t, src, p)
	tmpfsAt(t, src)
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	ms, err := ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	srcMount, _ := IsMountPoint(ms, src)
	ours := func(m Mount) bool { return m.Major == srcMount.Major && m.Minor == srcMount.Minor }

	// Two binds of ours, a foreign tmpfs on top: nothing is unmounted.
	unmountAtCleanup(t, p)
	for range 2 {
		if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("other", p, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	// Counted, not assumed: under a shared parent (the guest's systemd
	// makes / shared) a bind shows up more than once.
	before := countAt(t, p)
	err = UnmountOnly(p, ours)
	var foreign *ForeignMountError
	if !errors.As(err, &foreign) || !errors.Is(err, ErrMountedElsewhere) || foreign.Mount.Source != "other" || foreign.Path != p {
		t.Fatalf("UnmountOnly under a foreign mount: %v, want a ForeignMountError naming it", err)
	}
	if n := countAt(t, p); n != before {
		t.Fatalf("%d mounts left at %s, want all %d untouched", n, p, before)
	}

	// The foreign one gone, both of ours go, and the source is untouched.
	if err := unix.Unmount(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := UnmountOnly(p, ours); err != nil {
		t.Fatal(err)
	}
	if n := countAt(t, p); n != 0 {
		t.Fatalf("%d mounts left at %s, want none", n, p)
	}
	if b, err := os.ReadFile(filepath.Join(src, "f")); err != nil || string(b) != "kept" {
		t.Fatalf("source after UnmountOnly: %q, %v", b, err)
	}
	if err := UnmountOnly(p, ours); err != nil {
		t.Errorf("nothing mounted: %v", err)
	}

	// A dead mount of ours goes too.
	deadFUSE(t, "tank/dots/x", "fuse.zfs", p)
	if err := UnmountOnly(p, func(m Mount) bool { return m.Source == "tank/dots/x" }); err != nil {
		t.Fatal(err)
	}
	if n := countAt(t, p); n != 0 {
		t.Fatalf("dead mount left at %s", p)
	}
}
