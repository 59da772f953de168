package zfsd

import (
	"context"
	"fmt"
	"io"
	"strings"

	"k8s.io/klog/v2"

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

// Receive applies a fresh stream to this pool's copy of a dot, rolling
// back any change made to the copy since its newest commit, and reloads
// the dot. Where receives are resumable (-s), a break keeps what arrived;
// the partial state an earlier break left is discarded first, because ZFS
// refuses a fresh stream while it is there, even with -F.
func (p *Pool) Receive(ctx context.Context, dotID string, r io.Reader, master bool) error {
	if err := p.discardPartial(ctx, dotID); err != nil {
		return err
	}
	if err := p.z.Receive(ctx, p.dataset(dotID), zfs.ReceiveOptions{Force: true, Resumable: p.resumable}, r); err != nil {
		return fmt.Errorf("receiving dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	return p.received(ctx, dotID, master)
}

// ReceiveResume applies the rest of an interrupted stream (`zfs send -t`)
// onto the partial state it left, and reloads the dot.
func (p *Pool) ReceiveResume(ctx context.Context, dotID string, r io.Reader, master bool) error {
	if !p.resumable {
		return fmt.Errorf("resuming a stream into dot %s on pool %s: %w", dotID, p.cfg.Name, ErrUnsupported)
	}
	if err := p.z.Receive(ctx, p.dataset(dotID), zfs.ReceiveOptions{Resumable: true}, r); err != nil {
		return fmt.Errorf("resuming a stream into dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	return p.received(ctx, dotID, master)
}

// received finishes a receive: the copy is a replica, or the master when a
// handoff brought it. One read says which of its properties still need
// fixing; after a replica's first stream usually only the role does, and a
// handoff waits on every command.
func (p *Pool) received(ctx context.Context, dotID string, master bool) error {
	ds := p.dataset(dotID)
	list, err := p.z.Get(ctx, []string{ds}, false, "atime", "mountpoint", propRole)
	if err != nil || len(list) != 1 {
		return fmt.Errorf("dot %s on pool %s: reading the received copy: %w", dotID, p.cfg.Name, err)
	}
	props := list[0].Props
	// Replicas are never written; with atime on, reading one would dirty it
	// and fail the next incremental receive.
	if props["atime"].Value != "off" {
		if err := p.z.Set(ctx, ds, "atime", "off"); err != nil {
			klog.ErrorS(err, "atime=off on replica", "dot", dotID)
		}
	}
	// The stream carries properties (-p), among them the mountpoint of a
	// dot staged on the sender: a kubelet path of that node. Left set, the
	// next import would mount the copy there, and the copy would count as
	// staged here.
	if src := props["mountpoint"].Source; src == "local" || src == "received" {
		if err := p.z.Inherit(ctx, ds, "mountpoint"); err != nil {
			return fmt.Errorf("dot %s on pool %s: %w", dotID, p.cfg.Name, err)
		}
	}
	// The sender's role came with the stream; this copy's own is recorded.
	role := roleName(master)
	if r := props[propRole]; r.Source != "local" || r.Value != role {
		if err := p.z.Set(ctx, ds, propRole, role); err != nil {
			return fmt.Errorf("dot %s on pool %s: recording role %s: %w", dotID, p.cfg.Name, role, err)
		}
	}
	return p.Reload(ctx, dotID)
}

// ResumeToken returns the receive_resume_token an interrupted stream into
// a dot left on this pool: "" for none, and always "" where receives are
// not resumable (zfs-fuse does not even know the property).
func (p *Pool) ResumeToken(ctx context.Context, dotID string) (string, error) {
	if !p.resumable {
		return "", nil
	}
	tok, err := p.z.ResumeToken(ctx, p.dataset(dotID))
	if zfs.IsKind(err, zfs.KindNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resume token of dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	return tok, nil
}

// discardPartial removes the partial state of an interrupted receive into
// a dot (`zfs recv -A`), if there is one.
func (p *Pool) discardPartial(ctx context.Context, dotID string) error {
	tok, err := p.ResumeToken(ctx, dotID)
	if err != nil || tok == "" {
		return err
	}
	klog.InfoS("discarding the partial state of an interrupted receive; the sender did not resume it", "pool", p.cfg.Name, "dot", dotID)
	if err := p.z.AbortReceive(ctx, p.dataset(dotID)); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
		return fmt.Errorf("discarding an interrupted receive into dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	return nil
}

// ResumeInfo checks that a token a receiver holds can be resumed from this
// pool: the snapshots it names are still here and belong to dotID. A token
// from another sender (the dot's master changed since the break), or whose
// snapshots are gone, cannot; the caller then sends afresh.
func (p *Pool) ResumeInfo(ctx context.Context, dotID, token string) (zfs.ResumeInfo, error) {
	if !p.resumable {
		return zfs.ResumeInfo{}, fmt.Errorf("resuming a stream of dot %s from pool %s: %w", dotID, p.cfg.Name, ErrUnsupported)
	}
	info, err := p.z.ResumeInfo(ctx, token)
	if err != nil {
		return info, fmt.Errorf("resume token for dot %s on pool %s: %w", dotID, p.cfg.Name, err)
	}
	if ds, _, _ := strings.Cut(info.ToName, "@"); ds != p.dataset(dotID) {
		return info, fmt.Errorf("resume token for dot %s names %s, not a commit of it on pool %s: %w", dotID, info.ToName, p.cfg.Name, ErrInvalid)
	}
	return info, nil
}

// SendResume writes the rest of an interrupted stream of a dot.
func (p *Pool) SendResume(ctx context.Context, dotID, token string, w io.Writer) (int64, error) {
	n, err := p.z.SendResume(ctx, token, w)
	if err != nil {
		return n, fmt.Errorf("resuming the stream of dot %s from pool %s: %w", dotID, p.cfg.Name, err)
	}
	return n, nil
}

// Reload re-reads one dot and its commits from the pool into the index,
// after another process (a receive) changed it.
func (p *Pool) Reload(ctx context.Context, dotID string) error {
	list, err := p.z.Get(ctx, []string{p.dataset(dotID)}, true, p.loadProps()...)
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

// Staged reports whether a dot is in use on this node: mounted anywhere but
// its own mountpoint.
func (p *Pool) Staged(ctx context.Context, dotID string) (bool, error) {
	at, err := p.stagedAt(dotID)
	return len(at) > 0, err
}

// stagedAt lists where a dot is staged or published: any mount but the
// dot's own, that is a staging mount (StageDot) or a bind of one, where a
// pod may still be writing.
func (p *Pool) stagedAt(dotID string) ([]string, error) {
	ms, err := p.mountsOf(p.dataset(dotID))
	if err != nil {
		return nil, err
	}
	var at []string
	for _, m := range ms {
		if m.MountPoint != p.MountPath(dotID) {
			at = append(at, m.MountPoint)
		}
	}
	return at, nil
}

// SetRole records on this pool whether its copy of a dot is the master.
func (p *Pool) SetRole(ctx context.Context, dotID string, master bool) error {
	// The index is reloaded from the pool after every receive and kept with
	// every change: a role the copy already has costs no command.
	p.mu.Lock()
	d, ok := p.dots[dotID]
	same := ok && d.Master == master
	p.mu.Unlock()
	if same {
		return nil
	}
	role := roleName(master)
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

func roleName(master bool) string {
	if master {
		return "master"
	}
	return "replica"
}
