//go:build zfs

package mountinfo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
}

// unmountAtCleanup registers an Unmount of path; t.Cleanup runs them last
// registered first, so registering before each mount unwinds in reverse.
func unmountAtCleanup(t *testing.T, path string) {
	t.Cleanup(func() {
		if err := Unmount(path); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func mountPoint(t *testing.T, path string) (Mount, bool) {
	t.Helper()
	ms, err := ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return IsMountPoint(ms, path)
}

func countAt(t *testing.T, path string) int {
	t.Helper()
	ms, err := ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.MountPoint == path {
			n++
		}
	}
	return n
}

func TestBindAndUnmount(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	other := filepath.Join(dir, "other")
	dst := filepath.Join(dir, "dst")
	mkdirs(t, filepath.Join(src, "sub"), other)

	unmountAtCleanup(t, dst)
	if err := Bind(src, dst, false); err != nil {
		t.Fatal(err)
	}
	if err := Bind(src, dst, false); err != nil {
		t.Fatalf("second bind of the same source: %v", err)
	}
	// Through a symlink to the target, as a caller might hold it.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dst, link); err != nil {
		t.Fatal(err)
	}
	if err := Bind(src, link, false); err != nil {
		t.Fatalf("bind through a symlink to the same target: %v", err)
	}
	if n := countAt(t, dst); n != 1 {
		t.Fatalf("%d mounts at %s after repeated binds, want 1", n, dst)
	}

	if err := os.WriteFile(filepath.Join(dst, "f"), []byte("through the bind"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(src, "f")); err != nil || string(b) != "through the bind" {
		t.Fatalf("write through the bind not visible at the source: %q, %v", b, err)
	}

	if err := Bind(other, dst, false); !errors.Is(err, ErrMountedElsewhere) {
		t.Fatalf("binding another folder over the target: %v", err)
	}
	// A folder below the source is another root of the same device.
	if err := Bind(filepath.Join(src, "sub"), dst, false); !errors.Is(err, ErrMountedElsewhere) {
		t.Fatalf("binding a subfolder of the source over the target: %v", err)
	}

	// A bind of a folder below a mount: its root is that folder.
	subDst := filepath.Join(dir, "subdst")
	unmountAtCleanup(t, subDst)
	if err := Bind(filepath.Join(dst, "sub"), subDst, false); err != nil {
		t.Fatal(err)
	}
	if err := Bind(filepath.Join(src, "sub"), subDst, false); err != nil {
		t.Fatalf("same folder reached through another mount: %v", err)
	}

	if err := Unmount(subDst); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(dst); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(dst); err != nil {
		t.Fatalf("unmounting what is no longer a mount: %v", err)
	}
	if _, ok := mountPoint(t, dst); ok {
		t.Fatalf("%s still a mount point", dst)
	}
	if err := Unmount(filepath.Join(dir, "never-existed")); err != nil {
		t.Fatalf("unmounting a missing path: %v", err)
	}

	// Stacked mounts all come off.
	stack := filepath.Join(dir, "stack")
	mkdirs(t, stack)
	unmountAtCleanup(t, stack)
	for _, s := range []string{src, other, src} {
		if err := unix.Mount(s, stack, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := countAt(t, stack); n != 3 {
		t.Fatalf("%d stacked mounts, want 3", n)
	}
	if err := Unmount(stack); err != nil {
		t.Fatal(err)
	}
	if n := countAt(t, stack); n != 0 {
		t.Fatalf("%d mounts left at %s", n, stack)
	}
}

func TestBindUnmountBusy(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	mkdirs(t, src)
	unmountAtCleanup(t, dst)
	if err := Bind(src, dst, false); err != nil {
		t.Fatal(err)
	}
	// An open file keeps the mount busy.
	f, err := os.Create(filepath.Join(dst, "held"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := Unmount(dst); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("unmount of a busy mount: %v, want EBUSY", err)
	}
	if _, ok := mountPoint(t, dst); !ok {
		t.Fatal("busy mount gone after a failed unmount")
	}
}

func TestBindReadOnly(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	ro := filepath.Join(dir, "ro")
	mkdirs(t, src)
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	unmountAtCleanup(t, ro)
	if err := Bind(src, ro, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "g"), []byte("x"), 0o600); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write to read-only bind: %v, want EROFS", err)
	}
	if b, err := os.ReadFile(filepath.Join(ro, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read through read-only bind: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(src, "g"), []byte("x"), 0o600); err != nil {
		t.Fatalf("the source went read-only too: %v", err)
	}
	if err := Bind(src, ro, true); err != nil {
		t.Fatalf("second read-only bind: %v", err)
	}
	if n := countAt(t, ro); n != 1 {
		t.Fatalf("%d mounts at %s, want 1", n, ro)
	}

	// A writable bind left by an interrupted call is made read-only.
	rw := filepath.Join(dir, "rw")
	unmountAtCleanup(t, rw)
	if err := Bind(src, rw, false); err != nil {
		t.Fatal(err)
	}
	if err := Bind(src, rw, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rw, "h"), []byte("x"), 0o600); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write after read-only rebind: %v, want EROFS", err)
	}

	// Per-mount flags survive the read-only remount.
	nosuid := filepath.Join(dir, "nosuid")
	nosuidRO := filepath.Join(dir, "nosuid-ro")
	mkdirs(t, nosuid)
	unmountAtCleanup(t, nosuid)
	if err := unix.Mount("tmpfs", nosuid, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, "size=64k"); err != nil {
		t.Fatal(err)
	}
	unmountAtCleanup(t, nosuidRO)
	if err := Bind(nosuid, nosuidRO, true); err != nil {
		t.Fatal(err)
	}
	m, _ := mountPoint(t, nosuidRO)
	for _, o := range []string{"ro", "nosuid", "nodev", "noatime"} {
		if !hasOption(m.Options, o) {
			t.Errorf("read-only bind of a %s mount lost %s: %s", "nosuid,nodev,noatime", o, m.Options)
		}
	}
}

func TestMakeShared(t *testing.T) {
	requireRoot(t)
	// A private mount of the test's own, so the outcome does not depend on
	// how the machine's / propagates (private here, shared in the guest).
	dir := filepath.Join(t.TempDir(), "root")
	mkdirs(t, dir)
	unmountAtCleanup(t, dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	outer := filepath.Join(dir, "outer")
	inner := filepath.Join(outer, "inner")
	mkdirs(t, inner)

	unmountAtCleanup(t, outer)
	if err := MakeShared(outer); err != nil {
		t.Fatal(err)
	}
	if err := MakeShared(outer); err != nil {
		t.Fatalf("second call: %v", err)
	}
	om, ok := mountPoint(t, outer)
	if !ok || !om.Shared() {
		t.Fatalf("%s not a shared mount point: %+v", outer, om)
	}
	if n := countAt(t, outer); n != 1 {
		t.Fatalf("%d mounts at %s after two calls, want 1", n, outer)
	}

	// Inside a shared mount nothing is bound: mounts made there already
	// propagate, and a self-bind with a peer group of its own would hide
	// the mounts other namespaces make below it.
	if err := MakeShared(inner); err != nil {
		t.Fatal(err)
	}
	if n := countAt(t, inner); n != 0 {
		t.Fatalf("%d mounts at %s inside a shared mount, want none", n, inner)
	}

	// An existing private mount point is marked shared in place.
	tm := filepath.Join(dir, "tmpfs")
	mkdirs(t, tm)
	unmountAtCleanup(t, tm)
	if err := unix.Mount("tmpfs", tm, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", tm, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	if err := MakeShared(tm); err != nil {
		t.Fatal(err)
	}
	if m, ok := mountPoint(t, tm); !ok || !m.Shared() || m.FSType != "tmpfs" || countAt(t, tm) != 1 {
		t.Fatalf("existing mount point not shared in place: %+v", m)
	}
}
