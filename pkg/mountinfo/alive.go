package mountinfo

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ErrDeadMount means a mount is still in the table but its filesystem no
// longer answers: its FUSE daemon died (zfs-fuse restarted) or its handle
// went stale. Such a mount looks staged or published to anyone reading
// mountinfo, yet every access through it fails.
var ErrDeadMount = errors.New("mount no longer answers")

// CheckAlive asks the filesystem mounted at path for its statistics, which
// a FUSE filesystem must answer from its daemon (no cache). A dead mount
// gives an error wrapping ErrDeadMount; any other failure is returned as
// it is, since it says nothing about the mount.
func CheckAlive(path string) error {
	var st unix.Statfs_t
	err := unix.Statfs(path, &st)
	if err == nil {
		return nil
	}
	if deadConnection(err) {
		return fmt.Errorf("statfs %s: %v: %w", path, err, ErrDeadMount)
	}
	return fmt.Errorf("statfs %s: %w", path, err)
}

// deadConnection reports whether err is what the kernel answers for a
// filesystem whose server is gone: ENOTCONN (FUSE daemon exited or its
// connection was aborted), ECONNABORTED (aborted through
// /sys/fs/fuse/connections on some kernels) or ESTALE (a handle the server
// forgot). EIO is left out: a suspended pool answers it too, and
// remounting over a suspended pool would hang rather than heal.
func deadConnection(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.ESTALE)
}

// UnmountLazy detaches the topmost mount at path (MNT_DETACH): it leaves
// the tree at once, whatever still holds it open, which is the only way to
// be rid of a dead FUSE mount that a process has a file open on. Not a
// mount point is success.
func UnmountLazy(path string) error {
	path = resolve(path)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("lazy unmount %s: %w", path, err)
	}
	klog.V(4).InfoS("lazily unmounted", "path", path)
	return nil
}

// DetachDead lazily unmounts dead mounts stacked on top at path for as long
// as ours says they are the caller's, and returns the mount then on top, if
// any: alive, or not the caller's (dead or not, it is left alone).
func DetachDead(path string, ours func(Mount) bool) (Mount, bool, error) {
	path = resolve(path)
	for range maxStacked {
		mounts, err := ReadFile(selfMountinfo)
		if err != nil {
			return Mount{}, false, fmt.Errorf("checking mounts at %s: %w", path, err)
		}
		top, ok := IsMountPoint(mounts, path)
		if !ok || !ours(top) {
			return top, ok, nil
		}
		err = CheckAlive(path)
		if !errors.Is(err, ErrDeadMount) {
			return top, true, nil
		}
		klog.InfoS("detaching dead mount", "path", path, "fsType", top.FSType, "source", top.Source, "err", err)
		if err := UnmountLazy(path); err != nil {
			return Mount{}, false, err
		}
	}
	return Mount{}, false, fmt.Errorf("%s: still a dead mount after %d lazy unmounts", path, maxStacked)
}
