package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// MountDot makes one of this node's pools the dot's master, by handoff from
// the current master or by failover when the master's node is gone, and
// mounts it here. Only the master's node ever mounts a dot read-write.
func (s *Store) MountDot(ctx context.Context, id string) (string, error) {
	p, err := s.makeLocal(ctx, id)
	if err != nil {
		return "", err
	}
	return p.MountDot(ctx, id)
}

// StageDot is MountDot at the staging path (see zfsd.Pool.StageDot).
func (s *Store) StageDot(ctx context.Context, id, path string) error {
	p, err := s.makeLocal(ctx, id)
	if err != nil {
		return err
	}
	return p.StageDot(ctx, id, path)
}

// makeLocal makes one of this node's pools the dot's master, and returns
// it: by handoff from a live master, or by failover from one gone past the
// grace period.
func (s *Store) makeLocal(ctx context.Context, id string) (*zfsd.Pool, error) {
	if s.cfg.Local == nil {
		return nil, status.Error(codes.FailedPrecondition, "this process has no local pool to mount on")
	}
	for attempt := 0; ; attempt++ {
		rec, err := s.record(ctx, id)
		if err != nil {
			return nil, err
		}
		if p, ok := s.cfg.Local.Get(rec.Master); ok {
			return p, nil
		}
		if attempt > 0 {
			return nil, status.Errorf(codes.Aborted, "dot %s: master is now pool %s, not one of this node's pools", id, rec.Master)
		}
		target, err := s.localTarget(ctx, rec)
		if err != nil {
			return nil, err
		}
		if err := s.takeOver(ctx, rec, target); err != nil {
			return nil, err
		}
	}
}

// localTarget picks which of this node's pools a dot moves to: the one
// already holding the newest replica (least to send), else the one with
// the most free space.
func (s *Store) localTarget(ctx context.Context, rec cluster.Dot) (*zfsd.Pool, error) {
	pools := s.cfg.Local.List()
	if len(pools) == 1 {
		return pools[0], nil
	}
	var best *zfsd.Pool
	var bestSeq, bestFree int64 = -1, -1
	for _, p := range pools {
		seq := int64(-1)
		if r, ok := rec.Replica(p.Name()); ok && r.Commit != "" {
			seq = r.Seq
		}
		info, err := p.Info(ctx)
		if err != nil {
			klog.ErrorS(err, "skipping a local pool as handoff target", "dot", rec.ID, "pool", p.Name())
			continue
		}
		if seq > bestSeq || (seq == bestSeq && info.Available > bestFree) {
			best, bestSeq, bestFree = p, seq, info.Available
		}
	}
	if best == nil {
		return nil, status.Errorf(codes.Unavailable, "dot %s: this node serves no pool to take it on", rec.ID)
	}
	return best, nil
}

// localCopy is the local pool holding a copy of the dot: master, if that
// pool is local, else the first local pool that has one; nil when none does.
func (s *Store) localCopy(ctx context.Context, id, master string) *zfsd.Pool {
	if s.cfg.Local == nil {
		return nil
	}
	if p, ok := s.cfg.Local.Get(master); ok {
		return p
	}
	for _, p := range s.cfg.Local.List() {
		if _, err := p.GetDot(ctx, id); err == nil {
			return p
		}
	}
	return nil
}

// viewMaster is the dot's master as the view has it, "" when it has none.
func (s *Store) viewMaster(ctx context.Context, id string) string {
	rec, err := s.cfg.View.GetDot(ctx, id)
	if err != nil {
		return ""
	}
	return rec.Master
}

func (s *Store) UnmountDot(ctx context.Context, id string) error {
	if p := s.localCopy(ctx, id, s.viewMaster(ctx, id)); p != nil {
		return p.UnmountDot(ctx, id)
	}
	return nil
}

// UnstageDot undoes StageDot on the local pool that holds the dot.
func (s *Store) UnstageDot(ctx context.Context, id, path string) error {
	if p := s.localCopy(ctx, id, s.viewMaster(ctx, id)); p != nil {
		return p.UnstageDot(ctx, id, path)
	}
	return nil
}

// takeOver moves the dot's master to target, one of this node's pools.
func (s *Store) takeOver(ctx context.Context, rec cluster.Dot, target *zfsd.Pool) error {
	master, err := s.cfg.View.GetPool(ctx, rec.Master)
	if err != nil {
		return status.Errorf(codes.Unavailable, "dot %s: its master pool %s is not in the cluster view: %v", rec.ID, rec.Master, err)
	}
	if s.alive(master) {
		return s.handoff(ctx, rec, master, target)
	}
	gone := s.cfg.Now().Sub(master.LastHeartbeat)
	if gone < s.cfg.FailoverGrace {
		return status.Errorf(codes.Unavailable, "dot %s: its master pool %s on node %s has been unreachable for %s; a replica is promoted after %s",
			rec.ID, master.Name, master.Node, gone.Round(time.Second), s.cfg.FailoverGrace)
	}
	return s.failover(ctx, rec, master, target)
}

// handoff: the master takes a final commit of the dot (refused while the
// dot is staged there), sends the increment since the newest commit this
// pool holds, and the master is flipped by compare-and-swap. The old
// master stays as a replica.
func (s *Store) handoff(ctx context.Context, rec cluster.Dot, master cluster.Pool, target *zfsd.Pool) error {
	c, err := s.cfg.Peers.Client(master.Address, master.Name)
	if err != nil {
		return status.Errorf(codes.Unavailable, "dot %s: master pool %s on node %s: %v", rec.ID, master.Name, master.Node, err)
	}
	t0 := time.Now()
	probe, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = c.Info(probe)
	cancel()
	klog.V(4).InfoS("handoff: master answered", "dot", rec.ID, "took", time.Since(t0))
	if err != nil {
		return status.Errorf(codes.Unavailable, "dot %s: master pool %s on node %s does not answer: %v", rec.ID, master.Name, master.Node, err)
	}
	local := target.Name()
	// Claim the move first: of two nodes racing for one dot, exactly one
	// gets the claim, and the master is never asked to hand off twice.
	err = s.cas(ctx, rec.ID, func(d *cluster.Dot) error {
		if d.Master != rec.Master {
			return status.Errorf(codes.Aborted, "dot %s: its master changed to %s meanwhile; retry", rec.ID, d.Master)
		}
		if d.Moving != "" && d.Moving != local && s.cfg.Now().Sub(d.MovingSince) < s.cfg.FailoverGrace {
			return status.Errorf(codes.Aborted, "dot %s is being moved to pool %s; retry later", rec.ID, d.Moving)
		}
		d.Moving, d.MovingSince = local, s.cfg.Now()
		return nil
	})
	if err != nil {
		return err
	}
	klog.V(4).InfoS("handoff: move claimed", "dot", rec.ID, "took", time.Since(t0))
	start := time.Now()
	reply, err := c.Handoff(ctx, rec.ID, s.cfg.LocalAddress, local)
	if err == nil {
		err = target.SetRole(ctx, rec.ID, true)
	}
	if err != nil {
		if cerr := s.cas(context.WithoutCancel(ctx), rec.ID, func(d *cluster.Dot) error {
			if d.Moving != local {
				return errSkip
			}
			d.Moving = ""
			return nil
		}); cerr != nil {
			klog.ErrorS(cerr, "releasing the move claim after a failed handoff", "dot", rec.ID)
		}
		return err
	}
	err = s.cas(ctx, rec.ID, func(d *cluster.Dot) error {
		if d.Master != rec.Master || d.Moving != local {
			return status.Errorf(codes.Aborted, "dot %s: lost the move claim during the handoff", rec.ID)
		}
		d.Seq++ // the handoff commit
		d.NewestCommit = rec.ID + "@" + reply.GetCommit()
		old := cluster.Replica{Pool: d.Master, Commit: d.NewestCommit, Seq: d.Seq, Updated: s.cfg.Now()}
		d.Master, d.Moving = local, ""
		d.Replicas = append(withoutPool(d.Replicas, local), old)
		return nil
	})
	if err != nil {
		return err
	}
	klog.InfoS("dot handed over", "dot", rec.ID, "from", master.Name, "to", local, "bytes", reply.GetBytes(), "resumedBytes", reply.GetResumedBytes(),
		"base", reply.GetBase(), "took", time.Since(start))
	return nil
}

// failover promotes the most up-to-date live replica in place of a master
// that has been gone past the grace period, and records what was lost.
func (s *Store) failover(ctx context.Context, rec cluster.Dot, master cluster.Pool, target *zfsd.Pool) error {
	var best *cluster.Replica
	for i := range rec.Replicas {
		r := &rec.Replicas[i]
		p, err := s.cfg.View.GetPool(ctx, r.Pool)
		if err != nil || !s.alive(p) || r.Commit == "" {
			continue
		}
		if best == nil || r.Seq > best.Seq || (r.Seq == best.Seq && r.Pool == target.Name()) {
			best = r
		}
	}
	if best == nil {
		return status.Errorf(codes.Unavailable, "dot %s: master pool %s on node %s is gone and no live replica holds a commit", rec.ID, master.Name, master.Node)
	}
	chosen := *best
	loss := &cluster.Loss{CommitsLost: rec.Seq - chosen.Seq, LastReplicatedCommit: chosen.Commit,
		LastReplicatedCommitAt: chosen.Updated, At: s.cfg.Now(), FromPool: master.Name, ToPool: chosen.Pool}
	err := s.cas(ctx, rec.ID, func(d *cluster.Dot) error {
		if d.Master != rec.Master {
			return status.Errorf(codes.Aborted, "dot %s: another node promoted %s first; retry", rec.ID, d.Master)
		}
		// The old master's copy may hold commits nobody else has; as a
		// replica with no known commit it is re-seeded when it returns.
		stale := cluster.Replica{Pool: d.Master}
		d.Master = chosen.Pool
		d.Seq = chosen.Seq
		d.NewestCommit = chosen.Commit
		d.Loss, d.Moving = loss, ""
		d.Replicas = append(withoutPool(d.Replicas, chosen.Pool), stale)
		return nil
	})
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("master pool %s on node %s gone for over %s; promoted %s; %d commit(s) lost; last replicated commit %s at %s",
		master.Name, master.Node, s.cfg.FailoverGrace, chosen.Pool, loss.CommitsLost, chosen.Commit, chosen.Updated.UTC().Format(time.RFC3339))
	s.cfg.View.Event(ctx, rec.ID, "FailedOver", msg)
	klog.InfoS("failed over", "dot", rec.ID, "from", master.Name, "to", chosen.Pool, "commitsLost", loss.CommitsLost)
	if p, ok := s.cfg.Local.Get(chosen.Pool); ok {
		return p.SetRole(ctx, rec.ID, true)
	}
	fresh, err := s.record(ctx, rec.ID)
	if err != nil {
		return err
	}
	p, err := s.cfg.View.GetPool(ctx, fresh.Master)
	if err != nil {
		return err
	}
	return s.handoff(ctx, fresh, p, target)
}

// errSkip, from a cas change, writes nothing and is not an error.
var errSkip = errors.New("nothing to change")

// cas applies change to the freshest record until the compare-and-swap on
// its version succeeds. An error from change aborts with that error.
func (s *Store) cas(ctx context.Context, id string, change func(*cluster.Dot) error) error {
	for {
		d, err := s.record(ctx, id)
		if err != nil {
			return err
		}
		if err := change(&d); err != nil {
			if errors.Is(err, errSkip) {
				return nil
			}
			return err
		}
		_, err = s.cfg.View.UpdateDot(ctx, d)
		if !errors.Is(err, cluster.ErrConflict) {
			return err
		}
	}
}

func withoutPool(rs []cluster.Replica, pool string) []cluster.Replica {
	var out []cluster.Replica
	for _, r := range rs {
		if r.Pool != pool {
			out = append(out, r)
		}
	}
	return out
}
