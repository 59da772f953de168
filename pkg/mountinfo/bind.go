package mountinfo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const self = "/proc/self/mountinfo"

// ErrMountedElsewhere means the target already holds a different mount.
var ErrMountedElsewhere = errors.New("target is already a mount of something else")

// Bind bind-mounts src at dst, creating dst. It is idempotent: dst already
// holding the same filesystem and root as src is success.
func Bind(src, dst string, readOnly bool) error {
	src, dst = filepath.Clean(src), filepath.Clean(dst)
	mounts, err := ReadFile(self)
	if err != nil {
		return err
	}
	if cur, ok := IsMountPoint(mounts, dst); ok {
		want, ok := Find(mounts, src)
		rel, _ := filepath.Rel(want.MountPoint, src)
		if ok && cur.Major == want.Major && cur.Minor == want.Minor && cur.Root == filepath.Join(want.Root, rel) {
			return nil
		}
		return fmt.Errorf("bind %s at %s: %w", src, dst, ErrMountedElsewhere)
	}
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	if readOnly {
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(dst, 0)
			return fmt.Errorf("read-only remount of %s: %w", dst, err)
		}
	}
	return nil
}

// Unmount unmounts everything stacked at path. Not a mount is success.
func Unmount(path string) error {
	path = filepath.Clean(path)
	for i := 0; i < 8; i++ {
		mounts, err := ReadFile(self)
		if err != nil {
			return err
		}
		if _, ok := IsMountPoint(mounts, path); !ok {
			return nil
		}
		if err := unix.Unmount(path, 0); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 8 unmounts", path)
}

// MakeShared makes dir a mount point of its own, marked rshared. Mounts made
// below it then propagate into mount namespaces created later (containers),
// so an unmount here reaches them too and ZFS is not left holding a dataset
// "busy" for a stale private copy.
func MakeShared(dir string) error {
	dir = filepath.Clean(dir)
	mounts, err := ReadFile(self)
	if err != nil {
		return err
	}
	m, ok := IsMountPoint(mounts, dir)
	if ok && m.Shared() {
		return nil
	}
	if !ok {
		// MS_REC carries along anything already mounted below dir.
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
	}
	// A bind of a folder on a shared mount joins that mount's peer group, and
	// every mount below it would then be propagated back onto the parent at
	// the same path, stacked twice. Going private first gives it a peer
	// group of its own.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s rshared: %w", dir, err)
	}
	return nil
}
