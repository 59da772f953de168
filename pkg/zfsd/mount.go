package zfsd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// MountDot mounts a dot at its mountpoint and returns the path; for a
// block dot it returns its device once udev has made it.
func (p *Pool) MountDot(ctx context.Context, id string) (string, error) {
	d, err := p.GetDot(ctx, id)
	if err != nil {
		return "", err
	}
	if d.Block {
		return p.device(ctx, id)
	}
	if p.legacy {
		return p.mountLegacy(ctx, d, p.MountPath(id))
	}
	if err := p.z.Mount(ctx, p.dataset(id)); err != nil {
		return "", fmt.Errorf("mounting dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	return p.MountPath(id), nil
}

// mountLegacy mounts a dot at its path with `mount -t zfs`. It is
// idempotent: the path already showing this dataset is success, so a
// retried NodeStage does not stack a second mount.
func (p *Pool) mountLegacy(ctx context.Context, d Dot, path string) (string, error) {
	ds := p.dataset(d.ID)
	mounted, err := p.mountedAt(ds, path)
	if err != nil || mounted {
		return path, err
	}
	if !d.legacyMount {
		// A dot made before legacy mounts (or received from a pool without
		// them) moves over now, while it is not mounted here.
		if err := p.z.Set(ctx, ds, "mountpoint", "legacy"); err != nil {
			return "", fmt.Errorf("mounting dot %s on pool %s: %w", d.ID, p.cfg.Name, err)
		}
		p.mu.Lock()
		if live, ok := p.dots[d.ID]; ok {
			live.legacyMount = true
		}
		p.mu.Unlock()
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return "", fmt.Errorf("mounting dot %s on pool %s: %w", d.ID, p.cfg.Name, err)
	}
	if err := p.z.MountLegacy(ctx, ds, path); err != nil {
		// Two callers racing to mount one dot: the loser finds it mounted.
		if again, aerr := p.mountedAt(ds, path); aerr == nil && again {
			return path, nil
		}
		return "", fmt.Errorf("mounting dot %s on pool %s: %w", d.ID, p.cfg.Name, err)
	}
	klog.V(2).InfoS("dot mounted", "pool", p.cfg.Name, "dot", d.ID, "path", path, "legacy", true)
	return path, nil
}

// mountedAt reports whether path is a mount of dataset ds. A different
// mount there is an error: the dot's path is the driver's alone.
func (p *Pool) mountedAt(ds, path string) (bool, error) {
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("dataset %s on pool %s: %w", ds, p.cfg.Name, err)
	}
	m, ok := mountinfo.IsMountPoint(mounts, path)
	if !ok {
		return false, nil
	}
	if m.FSType != "zfs" || m.Source != ds {
		return false, fmt.Errorf("dataset %s on pool %s: its mount path %s holds %s from %s: %w", ds, p.cfg.Name, path, m.FSType, m.Source, ErrBusy)
	}
	return true, nil
}

// unmount unmounts a dot's filesystem from its path; not mounted is
// success. `zfs unmount` refuses legacy mounts ("legacy mountpoint"), so
// those are unmounted by path.
func (p *Pool) unmount(ctx context.Context, id string) error {
	ds := p.dataset(id)
	if !p.legacy {
		// Not mounted (a replica, a dot handed over): no command, since a
		// handoff waits on each one.
		if ms, err := p.mountsOf(ds); err == nil && len(ms) == 0 {
			return nil
		}
		return p.z.Unmount(ctx, ds)
	}
	path := p.MountPath(id)
	mounted, err := p.mountedAt(ds, path)
	if err != nil {
		return err
	}
	if mounted {
		if err := mountinfo.Unmount(path); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("dot %s on pool %s: %w: %v", id, p.cfg.Name, ErrBusy, err)
			}
			return fmt.Errorf("dot %s on pool %s: %w", id, p.cfg.Name, err)
		}
		return nil
	}
	p.mu.Lock()
	d, known := p.dots[id]
	legacy := known && d.legacyMount
	p.mu.Unlock()
	if legacy {
		return nil
	}
	// A dot still on its mountpoint property may be mounted through it.
	return p.z.Unmount(ctx, ds)
}

// MountPath is where a dot mounts.
func (p *Pool) MountPath(id string) string {
	return p.mountpoint() + "/dots/" + id
}

// UnmountDot unmounts a dot from its mountpoint (a block dot has none).
func (p *Pool) UnmountDot(ctx context.Context, id string) error {
	if d, err := p.GetDot(ctx, id); err == nil && d.Block {
		return nil
	}
	if err := p.unmount(ctx, id); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
		return fmt.Errorf("unmounting dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	return nil
}

// device waits for udev to make a zvol's device node.
func (p *Pool) device(ctx context.Context, id string) (string, error) {
	dev := "/dev/zvol/" + p.dataset(id)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("dot %s on pool %s: device %s did not appear", id, p.cfg.Name, dev)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
