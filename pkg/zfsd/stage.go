package zfsd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// StageDot mounts a dot's filesystem at path itself, instead of binding its
// own mountpoint there. The kubelet only unstages a volume once no other
// mount of the staged filesystem is left (its GetDeviceMountRefs check),
// and a dot's own mountpoint would be one for ever: the kubelet would never
// call NodeUnstageVolume, and the dot could never leave the node. So while
// staged, the staging path is the dot's only mount (its pods' binds come
// and go). Idempotent: a dot already mounted at path, and answering, is
// success; another mount there is ErrAlreadyExists. A mount of the dot
// there that no longer answers (zfs-fuse restarted under it) is detached
// and the dot mounted afresh, since a retried stage must heal it rather
// than report it staged.
func (p *Pool) StageDot(ctx context.Context, id, path string) error {
	d, err := p.GetDot(ctx, id)
	if err != nil {
		return err
	}
	if d.Block {
		return fmt.Errorf("dot %s on pool %s is a block volume; it has no filesystem to stage: %w", id, p.cfg.Name, ErrInvalid)
	}
	path = filepath.Clean(path)
	ds := p.dataset(id)
	ours := func(m mountinfo.Mount) bool { return isMountOf(m, ds) }
	top, ok, err := mountinfo.DetachDead(path, ours)
	if err != nil {
		return fmt.Errorf("staging dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	if ok {
		if ours(top) {
			return nil
		}
		return fmt.Errorf("staging dot %s on pool %s: %s holds another mount (%s): %w", id, p.cfg.Name, path, mountinfo.Describe(top), ErrAlreadyExists)
	}
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("staging dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	if p.legacy {
		_, err := p.mountLegacy(ctx, d, path)
		return err
	}
	// Mounted at its own path (zfs-fuse mounts at create) or elsewhere:
	// unmount first, since `zfs set mountpoint` on a mounted dataset
	// remounts without the busy retry the client gives unmount. Not
	// mounted (a dot just handed over): no command, since a handoff waits
	// on every one.
	if slices.ContainsFunc(mounts, func(m mountinfo.Mount) bool { return isMountOf(m, ds) }) {
		if err := p.z.Unmount(ctx, ds); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
			return fmt.Errorf("staging dot %s on pool %s: %w", id, p.cfg.Name, err)
		}
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return fmt.Errorf("staging dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	// On a full pool too: a user must be able to get at the files to
	// delete some.
	if err := p.freeing(ctx, func() error { return p.z.Set(ctx, ds, "mountpoint", path) }); err != nil {
		return fmt.Errorf("staging dot %s on pool %s: %w", id, p.cfg.Name, p.unavailableIf(ctx, err))
	}
	if err := p.z.Mount(ctx, ds); err != nil {
		return fmt.Errorf("staging dot %s on pool %s at %s: %w", id, p.cfg.Name, path, p.unavailableIf(ctx, err))
	}
	klog.V(2).InfoS("dot mounted at its staging path", "pool", p.cfg.Name, "dot", id, "path", path)
	return nil
}

// UnstageDot undoes StageDot: the dot is unmounted from path and its
// mountpoint is its own again (inherited), so an import never mounts it at
// a staging path the kubelet has let go of. Not staged at path is success.
func (p *Pool) UnstageDot(ctx context.Context, id, path string) error {
	path = filepath.Clean(path)
	ds := p.dataset(id)
	// A dead mount of the dot there cannot be unmounted through ZFS (the
	// daemon that made it is gone); it is simply let go of.
	if _, _, err := mountinfo.DetachDead(path, func(m mountinfo.Mount) bool { return isMountOf(m, ds) }); err != nil {
		return fmt.Errorf("unstaging dot %s on pool %s from %s: %w", id, p.cfg.Name, path, err)
	}
	ms, err := p.mountsOf(ds)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.MountPoint != path {
			continue
		}
		if p.legacy {
			if err := mountinfo.Unmount(path); err != nil {
				return fmt.Errorf("unstaging dot %s on pool %s from %s: %w", id, p.cfg.Name, path, err)
			}
		} else if err := p.z.Unmount(ctx, ds); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
			return fmt.Errorf("unstaging dot %s on pool %s from %s: %w", id, p.cfg.Name, path, err)
		}
	}
	if p.legacy {
		return nil
	}
	got, err := p.z.Get(ctx, []string{ds}, false, "mountpoint")
	if err = p.gone(ctx, err); err != nil {
		return fmt.Errorf("unstaging dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	if len(got) == 1 && got[0].Props["mountpoint"].Value == path {
		// A full pool refuses the write; the delete reserve pays for it.
		if err := p.freeing(ctx, func() error { return p.z.Inherit(ctx, ds, "mountpoint") }); err != nil {
			return fmt.Errorf("unstaging dot %s on pool %s: %w", id, p.cfg.Name, p.unavailableIf(ctx, err))
		}
	}
	return nil
}

// mountsOf lists the mounts of dataset ds in this mount namespace: its own
// mount, a staging mount, and binds of either (pods' targets).
func (p *Pool) mountsOf(ds string) ([]mountinfo.Mount, error) {
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("dataset %s on pool %s: %w", ds, p.cfg.Name, err)
	}
	var out []mountinfo.Mount
	for _, m := range mounts {
		if isMountOf(m, ds) {
			out = append(out, m)
		}
	}
	return out, nil
}

// isMountOf reports whether m mounts dataset ds: through the kernel module
// ("zfs") or zfs-fuse ("fuse.zfs").
func isMountOf(m mountinfo.Mount, ds string) bool {
	return m.Source == ds && (m.FSType == "zfs" || m.FSType == "fuse.zfs")
}
