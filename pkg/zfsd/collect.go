package zfsd

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"
)

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
		// Each doomed commit is tried on its own: one that cannot go now
		// (ZFS says busy while a send holds it; zfs-fuse keeps that hold
		// for good once the zfs send it served was killed) must not keep
		// the others, which would otherwise wait for the next deletion.
		// What failed is tried again by the next collection.
		var errs []error
		for _, id := range doomed {
			if err := p.gone(ctx, p.z.Destroy(ctx, p.snapshotName(id), false)); err != nil {
				errs = append(errs, fmt.Errorf("destroying commit %s on pool %s: %w", id, p.cfg.Name, err))
				continue
			}
			p.forgetCommit(id)
			klog.V(2).InfoS("commit destroyed", "pool", p.cfg.Name, "commit", id)
		}
		return errors.Join(errs...)
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
