package zfsd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// A pool is down when its ZFS stops answering (the zfs-fuse daemon died or
// was restarted, the tools fail on OpenZFS) or when it is no longer
// imported (zfs-fuse forgets its pools on restart: they are imported with
// cachefile=none). While down, every call on the pool answers
// ErrUnavailable, which the CO retries, rather than NotFound, which it
// would take as "gone" (and, for a delete, as done). Check, run by the
// monitor, notices both and brings the pool back.

// markDown records why the pool cannot serve. The first cause is kept.
func (p *Pool) markDown(cause error) {
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	if p.down == nil {
		p.down = cause
		klog.ErrorS(cause, "pool unavailable; calls answer Unavailable until it is back", "pool", p.cfg.Name)
	}
}

// available answers ErrUnavailable, with the cause, while the pool is down.
func (p *Pool) available() error {
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	if p.down != nil {
		return fmt.Errorf("pool %s: %w: %v", p.cfg.Name, ErrUnavailable, p.down)
	}
	return nil
}

// unavailableIf turns a failure into ErrUnavailable when ZFS itself did
// not answer, or when the pool turns out not to be imported: only then is
// a "does not exist" about the pool rather than about what was named. It
// runs a command on failures only, so a call that works costs nothing.
func (p *Pool) unavailableIf(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if zfs.IsKind(err, zfs.KindUnavailable) {
		p.markDown(err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !zfs.IsKind(err, zfs.KindNotFound) {
		return err
	}
	imported, ierr := p.z.PoolImported(ctx, p.cfg.Name)
	switch {
	case ierr != nil:
		p.markDown(ierr)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case !imported:
		cause := fmt.Errorf("pool %s is not imported", p.cfg.Name)
		p.markDown(cause)
		return fmt.Errorf("%w: %w: %w", ErrUnavailable, cause, err)
	}
	return err
}

// gone is unavailableIf for the deletion paths: a dataset that does not
// exist on an imported pool is already deleted (nil), and any other
// failure is returned.
func (p *Pool) gone(ctx context.Context, err error) error {
	if err = p.unavailableIf(ctx, err); zfs.IsKind(err, zfs.KindNotFound) && !errors.Is(err, ErrUnavailable) {
		return nil
	}
	return err
}

// Check asks ZFS whether the pool is imported and serving, and brings it
// back when ZFS answers again after an outage: the pool is imported again
// if it has to be, and its index reloaded and swept (so deletions that ZFS
// refused before, "dataset is busy" on zfs-fuse among them, complete).
// It returns nil while the pool serves.
func (p *Pool) Check(ctx context.Context) error {
	p.recoverMu.Lock()
	defer p.recoverMu.Unlock()
	imported, err := p.z.PoolImported(ctx, p.cfg.Name)
	if err != nil {
		p.markDown(err)
		return fmt.Errorf("pool %s: %w: %w", p.cfg.Name, ErrUnavailable, err)
	}
	if !imported {
		p.markDown(fmt.Errorf("pool %s is not imported", p.cfg.Name))
	}
	if p.available() == nil {
		return nil
	}
	if err := p.reopen(ctx, imported); err != nil {
		return fmt.Errorf("pool %s: %w: bringing it back: %w", p.cfg.Name, ErrUnavailable, err)
	}
	p.healthMu.Lock()
	cause := p.down
	p.down = nil
	p.healthMu.Unlock()
	klog.InfoS("pool back in service", "pool", p.cfg.Name, "after", cause)
	return nil
}

// reopen imports the pool again (never creating one: a missing pool file
// after an outage is a fault to report, not a pool to start afresh) and
// rebuilds what was lost with the ZFS that went away.
func (p *Pool) reopen(ctx context.Context, imported bool) error {
	if !imported {
		if _, err := os.Stat(filepath.Join(p.hostDir, PoolFile)); err != nil {
			return fmt.Errorf("pool file: %w", err)
		}
		// Forced: a ZFS that died with the pool imported left it marked
		// in use ("pool may be in use from other system"), and it was in
		// use here, by this process, until that ZFS went away. Its backing
		// folder is this node's (a PV-per-node pool stays fenced to this
		// node while its pool pod is here).
		if err := p.z.ImportPool(ctx, p.cfg.Name, p.hostDir, true); err != nil {
			return fmt.Errorf("importing from %s: %w", p.hostDir, err)
		}
		klog.InfoS("pool imported again", "pool", p.cfg.Name, "dir", p.hostDir)
	}
	if err := p.prepare(ctx); err != nil {
		return err
	}
	if err := p.load(ctx); err != nil {
		return err
	}
	if err := p.sweep(ctx); err != nil {
		klog.ErrorS(err, "sweeping pool after it came back; will retry on the next deletion", "pool", p.cfg.Name)
	}
	p.armReserve(ctx)
	return nil
}

// Monitor checks every pool of the set each interval until ctx ends, so a
// pool comes back by itself after its ZFS restarts.
func (s *Set) Monitor(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		for _, p := range s.List() {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			if err := p.Check(cctx); err != nil {
				klog.V(2).InfoS("pool still unavailable", "pool", p.Name(), "err", err)
			}
			cancel()
		}
	}, interval)
}
