package mountinfo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

const selfMountinfo = "/proc/self/mountinfo"

// maxStacked bounds Unmount's loop so a mount that keeps reappearing (say,
// propagated back from a peer) is reported instead of spun on.
const maxStacked = 8

// ErrMountedElsewhere means the target already holds a different mount.
var ErrMountedElsewhere = errors.New("target is already a mount of something else")

// Bind bind-mounts src at dst, creating dst. It is idempotent: dst already
// showing the same folder of the same filesystem as src is success, so a
// retried CSI call does not stack a second mount.
func Bind(src, dst string, readOnly bool) error {
	return bind(src, dst, readOnly, func(dst string) error { return os.MkdirAll(dst, 0o750) })
}

// BindFile is Bind for a file, such as a block device node, onto a file at
// dst, which it creates (empty) when missing.
func BindFile(src, dst string, readOnly bool) error {
	return bind(src, dst, readOnly, func(dst string) error {
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o640)
		if err != nil {
			return err
		}
		return f.Close()
	})
}

func bind(src, dst string, readOnly bool, makeTarget func(string) error) error {
	src, dst = resolve(src), resolve(dst)
	mounts, err := ReadFile(selfMountinfo)
	if err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	if cur, ok := IsMountPoint(mounts, dst); ok {
		if !sameFolder(mounts, cur, src) {
			return fmt.Errorf("bind %s at %s: %s from %d:%d %s: %w", src, dst, cur.FSType, cur.Major, cur.Minor, cur.Root, ErrMountedElsewhere)
		}
		if readOnly && !hasOption(cur.Options, "ro") {
			// An earlier call may have died between the bind and the
			// remount; finish its job rather than hand out a writable
			// mount.
			return remountReadOnly(dst, cur.Options)
		}
		return nil
	}
	if err := makeTarget(dst); err != nil {
		return fmt.Errorf("bind %s at %s: creating target: %w", src, dst, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	klog.V(4).InfoS("bind mounted", "src", src, "dst", dst, "readOnly", readOnly)
	if !readOnly {
		return nil
	}
	// MS_RDONLY is ignored on the initial bind; only a remount applies it.
	opts := ""
	if mounts, err := ReadFile(selfMountinfo); err == nil {
		if m, ok := IsMountPoint(mounts, dst); ok {
			opts = m.Options
		}
	}
	if err := remountReadOnly(dst, opts); err != nil {
		// Never leave a writable mount where a read-only one was asked for.
		if uerr := unix.Unmount(dst, 0); uerr != nil {
			klog.ErrorS(uerr, "undoing writable bind after failed read-only remount", "path", dst)
		}
		return err
	}
	return nil
}

// remountReadOnly makes the bind at dst read-only. The per-mount flags it
// already has are passed again: a bind remount replaces them all, and
// would otherwise silently drop nosuid/nodev/noexec (and in a user
// namespace fail outright on the locked ones).
func remountReadOnly(dst, options string) error {
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	// mountinfo shows no atime option for strictatime, and the kernel
	// would turn "none given" into relatime.
	atime := uintptr(unix.MS_STRICTATIME)
	for _, o := range strings.Split(options, ",") {
		switch o {
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "noatime":
			atime = unix.MS_NOATIME
		case "relatime":
			atime = unix.MS_RELATIME
		case "nodiratime":
			flags |= unix.MS_NODIRATIME
		}
	}
	if err := unix.Mount("", dst, "", flags|atime, ""); err != nil {
		return fmt.Errorf("read-only remount of %s: %w", dst, err)
	}
	return nil
}

// sameFolder reports whether cur shows the folder src shows: same device
// and, within it, the same root.
func sameFolder(mounts []Mount, cur Mount, src string) bool {
	want, ok := Find(mounts, src)
	if !ok || cur.Major != want.Major || cur.Minor != want.Minor {
		return false
	}
	rel, err := filepath.Rel(want.MountPoint, src)
	return err == nil && cur.Root == filepath.Join(want.Root, rel)
}

func hasOption(options, o string) bool {
	for _, x := range strings.Split(options, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// Unmount unmounts everything stacked at path, whatever it is. Not a
// mount point is success.
func Unmount(path string) error {
	return UnmountOnly(path, func(Mount) bool { return true })
}

// ForeignMountError is UnmountOnly's refusal: path holds Mount, which is
// not the caller's.
type ForeignMountError struct {
	Path  string
	Mount Mount
}

func (e *ForeignMountError) Error() string {
	return fmt.Sprintf("%s holds a mount of something else: %s", e.Path, Describe(e.Mount))
}

// Is makes a ForeignMountError match ErrMountedElsewhere.
func (e *ForeignMountError) Is(target error) bool { return target == ErrMountedElsewhere }

// Describe names what a mount shows, for messages: its filesystem type,
// source and, for a bind of part of a filesystem, the folder it shows.
func Describe(m Mount) string {
	s := m.FSType + " " + m.Source
	if m.Root != "/" && m.Root != "" {
		s += " (" + m.Root + ")"
	}
	return s
}

// StackAt returns the mounts stacked exactly at path in this mount
// namespace, bottom first.
func StackAt(path string) ([]Mount, error) {
	path = resolve(path)
	mounts, err := ReadFile(selfMountinfo)
	if err != nil {
		return nil, fmt.Errorf("mounts at %s: %w", path, err)
	}
	var out []Mount
	for _, m := range mounts {
		if m.MountPoint == path {
			out = append(out, m)
		}
	}
	return out, nil
}

// UnmountOnly unmounts everything stacked at path provided ours holds for
// every mount there; when one is not the caller's it unmounts nothing more
// and returns a *ForeignMountError. A dead mount that something still holds
// open is detached lazily. Not a mount point is success.
func UnmountOnly(path string, ours func(Mount) bool) error {
	path = resolve(path)
	for range maxStacked {
		stack, err := StackAt(path)
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
		if len(stack) == 0 {
			return nil
		}
		// Every layer is checked before the first unmount, so a foreign
		// mount anywhere in the stack leaves it all as it was.
		for _, m := range stack {
			if !ours(m) {
				return &ForeignMountError{Path: path, Mount: m}
			}
		}
		if err := unmountTop(path); err != nil {
			return err
		}
	}
	return fmt.Errorf("unmount %s: still a mount point after %d unmounts", path, maxStacked)
}

// unmountTop unmounts the topmost mount at path. Only when that fails as
// busy is the mount asked whether it still answers, so a hung (not dead)
// filesystem never stalls an unmount that would have worked.
func unmountTop(path string) error {
	err := unix.Unmount(path, 0)
	switch {
	case err == nil:
		klog.V(4).InfoS("unmounted", "path", path)
		return nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
		// Gone between reading the table and unmounting: someone else
		// (or propagation from a peer) did it for us.
		return nil
	case errors.Is(err, unix.EBUSY) && errors.Is(CheckAlive(path), ErrDeadMount):
		// Held open by processes that can never use it again (its
		// daemon is gone): it is let go of lazily.
		return UnmountLazy(path)
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// MakeShared makes dir a mount point of its own, marked rshared. Mounts
// made below it then propagate into mount namespaces created later
// (containers), so an unmount here reaches them too and ZFS is not left
// holding a dataset "busy" for a stale private copy.
func MakeShared(dir string) error {
	dir = resolve(dir)
	mounts, err := ReadFile(selfMountinfo)
	if err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	m, ok := IsMountPoint(mounts, dir)
	if ok && m.Shared() {
		return nil
	}
	if parent, found := Find(mounts, dir); !ok && found && parent.Shared() {
		// Already below a shared mount (a Bidirectional volume in a
		// container): mounts made here propagate as they are. A self-bind
		// would be worse than useless: it gets a peer group of its own, and
		// mounts another namespace makes here (zfs-fuse's daemon on the
		// host) then land under it, hidden from this namespace.
		return nil
	}
	if ok {
		// Already a mount point (say a kubelet volume that is a slave of
		// the host's): MS_SHARED keeps it receiving from its master too.
		if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("make %s rshared: %w", dir, err)
		}
		klog.InfoS("marked mount rshared", "path", dir)
		return nil
	}
	// MS_REC carries along anything already mounted below dir.
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	// A bind of a folder on a shared mount joins that mount's peer group,
	// and every mount below it would then propagate back onto the parent
	// at the same path, stacked twice. Going private first gives it a peer
	// group of its own.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return undoSelfBind(dir, fmt.Errorf("make %s private: %w", dir, err))
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return undoSelfBind(dir, fmt.Errorf("make %s rshared: %w", dir, err))
	}
	klog.InfoS("bound folder onto itself as an rshared mount", "path", dir)
	return nil
}

// undoSelfBind drops the bind MakeShared just made, so a failed call
// leaves dir as it found it and a retry starts over.
func undoSelfBind(dir string, cause error) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		klog.ErrorS(err, "undoing bind of folder onto itself", "path", dir)
	}
	return cause
}

// resolve gives the path the kernel would record in mountinfo for p:
// absolute with symlinks followed, as mount(2) follows them. A dead mount
// cannot be looked at, but its folder still can: its parent is resolved
// and its own name kept. A path that cannot be resolved at all (missing)
// is used as written.
func resolve(p string) string {
	p = absPath(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if r, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		return filepath.Join(r, filepath.Base(p))
	}
	return p
}
