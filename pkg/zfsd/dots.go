package zfsd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// CreateDot makes a dot: empty, or a branch of a commit or of another dot.
// The caller (the driver) has checked names, sizes and idempotency; this
// only refuses what the pool itself cannot do.
func (p *Pool) CreateDot(ctx context.Context, s DotSpec) (Dot, error) {
	if err := p.available(); err != nil {
		return Dot{}, err
	}
	if _, err := uuid.Parse(s.ID); err != nil {
		return Dot{}, fmt.Errorf("dot %q: %w: id must be a UUID", s.ID, ErrInvalid)
	}
	if s.Pool != "" && s.Pool != p.cfg.Name {
		return Dot{}, fmt.Errorf("dot %s asked for pool %s, this is pool %s: %w", s.ID, s.Pool, p.cfg.Name, ErrInvalid)
	}
	if k := s.Source.Kind; !s.Source.IsZero() && k != SourceCommit && k != SourceDot {
		return Dot{}, fmt.Errorf("dot %s asked to branch from %q, neither a commit nor a dot: %w", s.ID, s.Source, ErrInvalid)
	}
	if s.Block && !p.zvols {
		return Dot{}, fmt.Errorf("dot %s: block volumes need zvols, which this ZFS does not have: %w", s.ID, ErrUnsupported)
	}
	if v := s.Params.Compression; v != "" {
		if err := p.checkCompression(v); err != nil {
			return Dot{}, fmt.Errorf("dot %s (%s): %w", s.ID, s.Name, err)
		}
	}
	now := time.Now()
	d := &Dot{Pool: p.cfg.Name, ID: s.ID, Name: s.Name, Capacity: s.Capacity, Params: s.Params.copy(), Source: s.Source, Created: now, Block: s.Block, Master: true}
	props := map[string]string{
		propRole:     "master",
		propManaged:  "true",
		propID:       s.ID,
		propName:     s.Name,
		propCapacity: strconv.FormatInt(s.Capacity, 10),
		propCreated:  formatTime(now),
	}
	if m := s.Params.Map(); len(m) > 0 {
		props[propParams] = encodeParams(m)
	}
	if !s.Source.IsZero() {
		props[propSource] = s.Source.String()
	}
	if !s.Block {
		// Dots mount when staged, and refquota is the capacity (snapshots
		// do not count against it). A zvol's capacity is its volsize.
		props["canmount"] = "noauto"
		props["refquota"] = strconv.FormatInt(s.Capacity, 10)
		if p.legacy {
			// The driver mounts the dot where it wants it (mount -t zfs),
			// so nothing hangs off the pool's mountpoint property, which
			// names the folder of whichever node imported the pool, and
			// nothing mounts it behind the driver's back.
			props["mountpoint"] = "legacy"
			d.legacyMount = true
		}
	}
	for k, v := range s.Params.Props() {
		props[k] = v
	}
	ds := p.dataset(s.ID)
	p.armReserve(ctx)
	var err error
	switch {
	case s.Source.Kind == SourceCommit:
		err = p.branch(ctx, s.Source.ID, ds, s.Params.Clone(), props, d)
	case s.Source.Kind == SourceDot:
		err = p.branchDot(ctx, s.Source.ID, ds, s.Params.Clone(), props, d)
	case s.Block:
		err = p.z.CreateVolume(ctx, ds, s.Capacity, zfs.PropsFromMap(props))
	default:
		err = p.z.Create(ctx, ds, zfs.PropsFromMap(props))
	}
	if err == nil && s.Block && !s.Source.IsZero() {
		// A branch of a zvol starts at its origin's size.
		err = p.growVolume(ctx, ds, s.Capacity)
	}
	if err != nil {
		return Dot{}, fmt.Errorf("dot %s (%s) on pool %s: %w", s.ID, s.Name, p.cfg.Name, p.unavailableIf(ctx, err))
	}
	p.mu.Lock()
	p.dots[s.ID] = d
	p.mu.Unlock()
	klog.InfoS("dot created", "pool", p.cfg.Name, "dot", s.ID, "name", s.Name, "bytes", s.Capacity, "source", d.Source.String())
	return copyDot(d), nil
}

// branch makes ds from a commit, as an instant clone or a detached copy.
func (p *Pool) branch(ctx context.Context, commitID, ds string, mode CloneMode, props map[string]string, d *Dot) error {
	p.structMu.Lock()
	defer p.structMu.Unlock()
	return p.branchLocked(ctx, commitID, ds, mode, props, d)
}

// branchLocked is branch for a caller that holds structMu.
func (p *Pool) branchLocked(ctx context.Context, commitID, ds string, mode CloneMode, props map[string]string, d *Dot) error {
	p.mu.Lock()
	c, ok := p.commits[commitID]
	p.mu.Unlock()
	if !ok || (c.Deleted && !c.Internal) {
		return fmt.Errorf("commit %s: %w", commitID, ErrNotFound)
	}
	snap := p.snapshotName(commitID)
	var err error
	if mode == CloneDetached {
		err = p.detachedCopy(ctx, snap, ds, props)
	} else {
		err = p.z.Clone(ctx, snap, ds, zfs.PropsFromMap(props))
	}
	if err != nil {
		return p.explainTooSmall(ctx, snap, d.Capacity, err)
	}
	if mode != CloneDetached {
		d.Origin = snap
	}
	return nil
}

// explainTooSmall turns ZFS's answer to a refquota below the data a branch
// starts with ("out of space" on zfs-fuse, "size is less than current used"
// on OpenZFS) into ErrTooSmall. The source's size is only asked for on this
// failure path, so a successful branch costs no extra command.
func (p *Pool) explainTooSmall(ctx context.Context, snap string, capacity int64, err error) error {
	if !zfs.IsKind(err, zfs.KindOutOfSpace) && !zfs.IsKind(err, zfs.KindInvalid) {
		return err
	}
	ds, gerr := p.z.Get(ctx, []string{snap}, false, "referenced")
	if gerr != nil || len(ds) != 1 || ds[0].Bytes("referenced") <= capacity {
		return err
	}
	return fmt.Errorf("%w: %d bytes cannot hold the %d bytes of %s", ErrTooSmall, capacity, ds[0].Bytes("referenced"), snap)
}

// branchDot makes ds from the current state of another dot through an
// internal commit, which goes away by itself when the branch does. The
// internal commit is made hidden, so structMu is held from its making to
// the clone: a collection in between (a DeleteCommit of another commit of
// the source) would destroy it first.
func (p *Pool) branchDot(ctx context.Context, srcID, ds string, mode CloneMode, props map[string]string, d *Dot) error {
	p.structMu.Lock()
	defer p.structMu.Unlock()
	c, err := p.commitLocked(ctx, srcID, "", true)
	if err != nil {
		return err
	}
	err = p.branchLocked(ctx, c.ID, ds, mode, props, d)
	if mode == CloneDetached || err != nil {
		// Nothing depends on the internal commit: collect it now.
		if cerr := p.collectLocked(ctx, srcID); cerr != nil {
			klog.ErrorS(cerr, "collecting internal commit", "pool", p.cfg.Name, "commit", c.ID)
		}
	}
	return err
}

// detachedCopy sends snap into ds. The stream carries the origin's
// properties (-p), so until the last step the copy is marked with the
// origin's ID; a crash before then leaves a dataset that load() recognises as
// half-made and destroys.
func (p *Pool) detachedCopy(ctx context.Context, snap, ds string, props map[string]string) error {
	if _, err := p.z.Copy(ctx, snap, ds, zfs.SendOptions{Properties: true}); err != nil {
		return err
	}
	cleanup := func(cause error) error {
		if err := p.z.Destroy(ctx, ds, true); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
			klog.ErrorS(err, "removing half-made detached copy; it is collected on next open", "dataset", ds)
		}
		return cause
	}
	// The received snapshot is history the copy does not need.
	_, snapName, _ := cutAt(snap)
	if err := p.z.Destroy(ctx, ds+"@"+snapName, false); err != nil {
		return cleanup(err)
	}
	// Nor the origin's mountpoint: a staged origin's is its staging path,
	// where the copy would otherwise be mounted on top of it.
	if err := p.z.Inherit(ctx, ds, "mountpoint"); err != nil {
		return cleanup(err)
	}
	for _, kv := range zfs.PropsFromMap(props) {
		if kv.Name == propID {
			continue
		}
		if err := p.z.Set(ctx, ds, kv.Name, kv.Value); err != nil {
			return cleanup(err)
		}
	}
	// The origin's own metadata came along in the stream; what the new dot
	// does not set must not survive as if it were its own.
	for _, name := range dotProps {
		if _, ok := props[name]; !ok {
			if err := p.z.Inherit(ctx, ds, name); err != nil {
				return cleanup(err)
			}
		}
	}
	if err := p.z.Set(ctx, ds, propID, props[propID]); err != nil {
		return cleanup(err)
	}
	return nil
}

func cutAt(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '@' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// CreateCommit takes a user-visible commit of a dot.
func (p *Pool) CreateCommit(ctx context.Context, dotID, name string) (Commit, error) {
	if err := p.available(); err != nil {
		return Commit{}, err
	}
	p.armReserve(ctx)
	// Under structMu, so a DeleteDot cannot destroy the dot (and with it
	// the new snapshot) between the check that it exists and the snapshot:
	// a commit that was answered for must exist.
	p.structMu.Lock()
	defer p.structMu.Unlock()
	return p.commitLocked(ctx, dotID, name, false)
}

// commitLocked takes a commit; the caller holds structMu.
func (p *Pool) commitLocked(ctx context.Context, dotID, name string, internal bool) (Commit, error) {
	p.mu.Lock()
	d, ok := p.dots[dotID]
	var size int64
	if ok {
		size = d.Capacity
	}
	p.mu.Unlock()
	if !ok || d.Deleted {
		return Commit{}, fmt.Errorf("dot %s: %w", dotID, ErrNotFound)
	}
	now := time.Now()
	c := &Commit{ID: dotID + "@" + uuid.NewString(), DotID: dotID, Name: name, Size: size, Created: now, Internal: internal}
	props := map[string]string{
		propCommitSize:    strconv.FormatInt(size, 10),
		propCommitCreated: formatTime(now),
	}
	if name != "" {
		props[propCommitName] = name
	}
	if internal {
		props[propCommitInternal] = "true"
		props[propCommitDeleted] = formatTime(now)
		c.Deleted = true
	}
	if err := p.z.Snapshot(ctx, p.snapshotName(c.ID), zfs.PropsFromMap(props)); err != nil {
		return Commit{}, fmt.Errorf("commit of dot %s on pool %s: %w", dotID, p.cfg.Name, p.unavailableIf(ctx, err))
	}
	p.mu.Lock()
	p.commits[c.ID] = c
	p.mu.Unlock()
	klog.InfoS("commit created", "pool", p.cfg.Name, "commit", c.ID, "name", name, "internal", internal)
	return *c, nil
}

// DeleteCommit deletes a commit now, or hides it until its last branch goes.
// Deleting a missing commit succeeds.
func (p *Pool) DeleteCommit(ctx context.Context, id string) error {
	if err := p.available(); err != nil {
		return err
	}
	p.structMu.Lock()
	defer p.structMu.Unlock()
	p.mu.Lock()
	c, ok := p.commits[id]
	branches := 0
	if ok {
		branches = p.branchesOfLocked(id)
	}
	p.mu.Unlock()
	if !ok || c.Deleted {
		return nil
	}
	snap := p.snapshotName(id)
	if branches == 0 {
		// Nothing depends on it: one destroy, which needs no space, so a
		// full pool can always be freed this way.
		if err := p.gone(ctx, p.z.Destroy(ctx, snap, false)); err != nil {
			return fmt.Errorf("commit %s on pool %s: %w", id, p.cfg.Name, err)
		}
		p.forgetCommit(id)
		klog.V(2).InfoS("commit destroyed", "pool", p.cfg.Name, "commit", id)
		return p.collectLocked(ctx, c.DotID)
	}
	err := p.freeing(ctx, func() error { return p.z.Set(ctx, snap, propCommitDeleted, formatTime(time.Now())) })
	if err != nil {
		if err := p.gone(ctx, err); err != nil {
			return fmt.Errorf("commit %s on pool %s: %w", id, p.cfg.Name, err)
		}
		p.forgetCommit(id)
		return nil
	}
	p.mu.Lock()
	c.Deleted = true
	p.mu.Unlock()
	return p.collectLocked(ctx, c.DotID)
}

// DeleteDot deletes a dot now, or hides it while commits or branches of it
// remain. Deleting a missing dot succeeds; deleting one that is staged for
// a pod is refused (ErrBusy), since destroying it would take the pod's
// files away under it.
func (p *Pool) DeleteDot(ctx context.Context, id string) error {
	if err := p.available(); err != nil {
		return err
	}
	p.structMu.Lock()
	defer p.structMu.Unlock()
	p.mu.Lock()
	d, ok := p.dots[id]
	p.mu.Unlock()
	if !ok || d.Deleted {
		return nil
	}
	ds := p.dataset(id)
	if at, err := p.stagedAt(id); err != nil {
		return err
	} else if len(at) > 0 {
		return fmt.Errorf("dot %s on pool %s is staged at %s; unstage it first: %w", id, p.cfg.Name, strings.Join(at, ", "), ErrBusy)
	}
	if !p.hasDependantsLocked(id) {
		// Nothing to keep: one destroy, which also takes the hidden and
		// internal commits. Destroy unmounts and retries if ZFS says busy.
		if err := p.gone(ctx, p.z.Destroy(ctx, ds, true)); err != nil {
			return fmt.Errorf("dot %s on pool %s: %w", id, p.cfg.Name, err)
		}
		p.mu.Lock()
		p.forgetDotLocked(id)
		p.mu.Unlock()
		klog.InfoS("dot destroyed", "pool", p.cfg.Name, "dot", id, "name", d.Name)
		return p.collectLocked(ctx, p.parentOf(d))
	}
	if err := p.gone(ctx, p.unmount(ctx, id)); err != nil {
		return fmt.Errorf("dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	if err := p.freeing(ctx, func() error { return p.z.Set(ctx, ds, propDeleted, formatTime(time.Now())) }); err != nil {
		if err := p.gone(ctx, err); err != nil {
			return fmt.Errorf("dot %s on pool %s: %w", id, p.cfg.Name, err)
		}
		p.mu.Lock()
		delete(p.dots, id)
		p.mu.Unlock()
		return nil
	}
	p.mu.Lock()
	d.Deleted = true
	p.mu.Unlock()
	klog.InfoS("dot deleted", "pool", p.cfg.Name, "dot", id, "name", d.Name)
	return p.collectLocked(ctx, id)
}

// hasDependantsLocked reports whether a dot has commits a user can still
// see or that branches depend on. The caller holds structMu.
func (p *Pool) hasDependantsLocked(dotID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.commits {
		if c.DotID == dotID && (c.visible() || p.branchesOfLocked(id) > 0) {
			return true
		}
	}
	return false
}

func (p *Pool) collect(ctx context.Context, dotID string) error {
	p.structMu.Lock()
	defer p.structMu.Unlock()
	return p.collectLocked(ctx, dotID)
}

// collectLocked destroys what is hidden and no longer needed on dotID, and
// then on the dot it was branched from, and so on up the chain. Each step
// is idempotent, so a crash half-way is finished by the next sweep.
func (p *Pool) collectLocked(ctx context.Context, dotID string) error {
	for dotID != "" {
		p.mu.Lock()
		d, ok := p.dots[dotID]
		var doomed []string
		keep := 0
		for id, c := range p.commits {
			if c.DotID != dotID {
				continue
			}
			switch {
			case p.branchesOfLocked(id) > 0:
				keep++
			case c.Deleted, ok && d.Deleted && !c.visible():
				// Hidden, or a nameless handoff commit of a deleted dot.
				doomed = append(doomed, id)
			default:
				keep++
			}
		}
		p.mu.Unlock()
		if !ok {
			return nil
		}
		if d.Deleted && keep == 0 {
			if err := p.gone(ctx, p.z.Destroy(ctx, p.dataset(dotID), true)); err != nil {
				return fmt.Errorf("destroying dot %s on pool %s: %w", dotID, p.cfg.Name, err)
			}
			p.mu.Lock()
			delete(p.dots, dotID)
			for _, id := range doomed {
				delete(p.commits, id)
			}
			p.mu.Unlock()
			klog.InfoS("dot destroyed", "pool", p.cfg.Name, "dot", dotID)
			dotID = p.parentOf(d)
			continue
		}
		for _, id := range doomed {
			if err := p.gone(ctx, p.z.Destroy(ctx, p.snapshotName(id), false)); err != nil {
				return fmt.Errorf("destroying commit %s on pool %s: %w", id, p.cfg.Name, err)
			}
			p.forgetCommit(id)
			klog.V(2).InfoS("commit destroyed", "pool", p.cfg.Name, "commit", id)
		}
		return nil
	}
	return nil
}

// parentOf is the dot an instant branch came from, now possibly collectable.
func (p *Pool) parentOf(d *Dot) string {
	c := p.originCommit(d.Origin)
	if c == "" {
		return ""
	}
	dot, _, _ := cutAt(c)
	return dot
}

// forgetDotLocked drops a dot and all its commits from the index. The
// caller holds mu.
func (p *Pool) forgetDotLocked(dotID string) {
	delete(p.dots, dotID)
	for id, c := range p.commits {
		if c.DotID == dotID {
			delete(p.commits, id)
		}
	}
}

func (p *Pool) forgetCommit(id string) {
	p.mu.Lock()
	delete(p.commits, id)
	p.mu.Unlock()
}

// sweep finishes deletions a crash interrupted.
func (p *Pool) sweep(ctx context.Context) error {
	p.mu.Lock()
	var ids []string
	for id := range p.dots {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, p.collect(ctx, id))
	}
	return errors.Join(errs...)
}

// ResizeDot sets a dot's capacity. ZFS applies refquota online.
func (p *Pool) ResizeDot(ctx context.Context, id string, capacity int64) (Dot, error) {
	d, err := p.GetDot(ctx, id)
	if err != nil {
		return Dot{}, err
	}
	if capacity <= d.Capacity {
		return d, nil
	}
	v := strconv.FormatInt(capacity, 10)
	ds := p.dataset(id)
	prop := "refquota"
	if d.Block {
		prop = "volsize"
	}
	if err := p.z.Set(ctx, ds, prop, v); err != nil {
		return Dot{}, fmt.Errorf("resizing dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	if err := p.z.Set(ctx, ds, propCapacity, v); err != nil {
		return Dot{}, fmt.Errorf("resizing dot %s on pool %s: %w", id, p.cfg.Name, err)
	}
	p.mu.Lock()
	if live, ok := p.dots[id]; ok {
		live.Capacity = capacity
	}
	p.mu.Unlock()
	d.Capacity = capacity
	klog.InfoS("dot resized", "pool", p.cfg.Name, "dot", id, "bytes", capacity)
	return d, nil
}

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

// growVolume sets a zvol's size when it is larger than what it has.
func (p *Pool) growVolume(ctx context.Context, ds string, size int64) error {
	got, err := p.z.Get(ctx, []string{ds}, false, "volsize")
	if err != nil || len(got) != 1 {
		return err
	}
	if got[0].Bytes("volsize") >= size {
		return nil
	}
	return p.z.Set(ctx, ds, "volsize", strconv.FormatInt(size, 10))
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
