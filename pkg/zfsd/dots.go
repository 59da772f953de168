package zfsd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"k8s.io/klog/v2"

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

// changeStructure runs change under structMu, under which datasets and
// snapshots are made and destroyed, once the pool is known to serve.
func (p *Pool) changeStructure(change func() error) error {
	if err := p.available(); err != nil {
		return err
	}
	p.structMu.Lock()
	defer p.structMu.Unlock()
	return change()
}

// DeleteCommit deletes a commit now, or hides it until its last branch goes.
// Deleting a missing commit succeeds.
func (p *Pool) DeleteCommit(ctx context.Context, id string) error {
	return p.changeStructure(func() error { return p.deleteCommitLocked(ctx, id) })
}

func (p *Pool) deleteCommitLocked(ctx context.Context, id string) error {
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
	return p.changeStructure(func() error { return p.deleteDotLocked(ctx, id) })
}

func (p *Pool) deleteDotLocked(ctx context.Context, id string) error {
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
