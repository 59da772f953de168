package zfsd

import (
	"context"
	"fmt"
	"io"
	"strings"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// Snapshot is one snapshot of a dot as ZFS sees it, for finding the newest
// commit two pools share. The GUID tells a commit apart from another of the
// same name made on a diverged copy.
type Snapshot struct {
	Name string // the part after '@'
	GUID string
}

// Snapshots lists a dot's snapshots on this pool, oldest first. A dot that
// is not here has none.
func (p *Pool) Snapshots(ctx context.Context, dotID string) ([]Snapshot, error) {
	list, err := p.z.Get(ctx, []string{p.dataset(dotID)}, true, "guid")
	if zfs.IsKind(err, zfs.KindNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots of dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	var out []Snapshot
	for _, ds := range list {
		if _, snap, ok := strings.Cut(ds.Name, "@"); ok {
			out = append(out, Snapshot{Name: snap, GUID: ds.Props["guid"].Value})
		}
	}
	return out, nil
}

// Send writes the stream that brings a copy holding base up to commit
// (base "" sends everything up to commit, with all earlier commits).
func (p *Pool) Send(ctx context.Context, dotID, base, commit string, w io.Writer) (int64, error) {
	snap := p.dataset(dotID) + "@" + commit
	o := zfs.SendOptions{Properties: true, Replicate: base == ""}
	if base != "" {
		o.FromAll = p.dataset(dotID) + "@" + base
	}
	n, err := p.z.Send(ctx, snap, o, w)
	if err != nil {
		return n, fmt.Errorf("sending dot %s (%s..%s) from pool %s: %w", dotID, base, commit, p.cfg.Name, err)
	}
	return n, nil
}

// Receive applies a stream to this pool's copy of a dot, rolling back any
// change made to the copy since its newest commit, and reloads the dot.
func (p *Pool) Receive(ctx context.Context, dotID string, r io.Reader) error {
	if err := p.z.Receive(ctx, p.dataset(dotID), zfs.ReceiveOptions{Force: true}, r); err != nil {
		return fmt.Errorf("receiving dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	// Replicas are never written; with atime on, reading one would dirty it
	// and fail the next incremental receive.
	if err := p.z.Set(ctx, p.dataset(dotID), "atime", "off"); err != nil {
		klog.ErrorS(err, "atime=off on replica", "dot", dotID)
	}
	if err := p.SetRole(ctx, dotID, false); err != nil {
		return err
	}
	return p.Reload(ctx, dotID)
}

// Reload re-reads one dot and its commits from the pool into the index,
// after another process (a receive) changed it.
func (p *Pool) Reload(ctx context.Context, dotID string) error {
	list, err := p.z.Get(ctx, []string{p.dataset(dotID)}, true, loadProps...)
	if err != nil {
		return fmt.Errorf("reloading dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	dots, commits := p.parse(list)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgetDotLocked(dotID)
	for id, d := range dots {
		p.dots[id] = d
	}
	for id, c := range commits {
		p.commits[id] = c
	}
	return nil
}

// DropCopy destroys this pool's copy of a dot with all its commits. It is
// for replicas (diverged, or of a deleted dot); branches of it are not
// expected on a replica and make it fail.
func (p *Pool) DropCopy(ctx context.Context, dotID string) error {
	p.structMu.Lock()
	defer p.structMu.Unlock()
	if err := p.z.Destroy(ctx, p.dataset(dotID), true); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
		return fmt.Errorf("dropping copy of dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	p.mu.Lock()
	p.forgetDotLocked(dotID)
	p.mu.Unlock()
	klog.InfoS("copy dropped", "pool", p.cfg.Name, "dot", dotID)
	return nil
}

// Staged reports whether a dot is in use on this node: mounted, with some
// other mount (a staging bind) of the same filesystem.
func (p *Pool) Staged(ctx context.Context, dotID string) (bool, error) {
	ds, err := p.z.Get(ctx, []string{p.dataset(dotID)}, false, "mounted")
	if err != nil || len(ds) != 1 {
		return false, err
	}
	if ds[0].Props["mounted"].Value != "yes" {
		return false, nil
	}
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	own, ok := mountinfo.IsMountPoint(mounts, p.MountPath(dotID))
	if !ok {
		return false, nil
	}
	for _, m := range mounts {
		if m.Major == own.Major && m.Minor == own.Minor && m.MountPoint != own.MountPoint {
			return true, nil
		}
	}
	return false, nil
}

// SetRole records on this pool whether its copy of a dot is the master.
func (p *Pool) SetRole(ctx context.Context, dotID string, master bool) error {
	role := "replica"
	if master {
		role = "master"
	}
	if err := p.z.Set(ctx, p.dataset(dotID), propRole, role); err != nil {
		return fmt.Errorf("dot %s on pool %s: recording role %s: %w", dotID, p.cfg.Name, role, err)
	}
	p.mu.Lock()
	if d, ok := p.dots[dotID]; ok {
		d.Master = master
	}
	p.mu.Unlock()
	return nil
}
