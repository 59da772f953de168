package mesh

import (
	"context"
	"errors"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// DeleteDot deletes a dot on its master and drops its replicas.
func (s *Store) DeleteDot(ctx context.Context, id string) error {
	rec, c, err := s.master(ctx, id)
	if errors.Is(err, zfsd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.DeleteDot(ctx, id); err != nil {
		return err
	}
	return s.dropCopies(ctx, rec)
}

// masterHolds reports whether a deleted dot's master still has commits of
// it (the dot's deletion was deferred for them). Unknown counts as yes:
// the record then stays, and Reconcile asks again.
func (s *Store) masterHolds(ctx context.Context, rec cluster.Dot) bool {
	if rec.Master == "" {
		return false
	}
	c, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return true
	}
	cs, err := c.ListCommits(ctx)
	if err != nil {
		return true
	}
	for _, x := range cs {
		if x.DotID == rec.ID {
			return true
		}
	}
	return false
}

// dropCopies drops a deleted dot's replicas. Those on pools that do not
// answer stay listed on a tombstone record, which Reconcile retries, so a
// later rebuild of the view cannot bring the dot back from them. While the
// master still holds commits of the dot, the tombstone keeps naming it, so
// deleting or branching those commits still finds them; the last commit's
// deletion removes the record.
func (s *Store) dropCopies(ctx context.Context, rec cluster.Dot) error {
	var left []cluster.Replica
	for _, r := range rec.Replicas {
		rc, _, err := s.client(ctx, r.Pool)
		if err == nil {
			err = rc.DropCopy(ctx, rec.ID)
		}
		if err != nil {
			klog.ErrorS(err, "dropping a replica of a deleted dot; retried later", "dot", rec.ID, "pool", r.Pool)
			left = append(left, r)
		}
	}
	holds := s.masterHolds(ctx, rec)
	if len(left) == 0 && !holds {
		return s.cfg.View.DeleteDot(ctx, rec.ID)
	}
	for {
		cur, err := s.cfg.View.GetDot(ctx, rec.ID)
		if err != nil {
			return err
		}
		if !holds {
			cur.Master = ""
		}
		if cur.Deleted && len(cur.Replicas) == len(left) {
			return nil // a tombstone already saying this
		}
		cur.Deleted, cur.Replicas = true, left
		if _, err = s.cfg.View.UpdateDot(ctx, cur); !errors.Is(err, cluster.ErrConflict) {
			return err
		}
	}
}
