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
)

// MountDot makes this node's pool the dot's master, by handoff from the
// current master or by failover when the master's node is gone, and mounts
// it here. Only the master's node ever mounts a dot read-write.
func (s *Store) MountDot(ctx context.Context, id string) (string, error) {
	if err := s.makeLocal(ctx, id); err != nil {
		return "", err
	}
	return s.cfg.Local.MountDot(ctx, id)
}

// StageDot is MountDot at the staging path (see zfsd.Pool.StageDot).
func (s *Store) StageDot(ctx context.Context, id, path string) error {
	if err := s.makeLocal(ctx, id); err != nil {
		return err
	}
	return s.cfg.Local.StageDot(ctx, id, path)
}

// makeLocal makes this node's pool the dot's master: by handoff from a
// live master, or by failover from one gone past the grace period.
func (s *Store) makeLocal(ctx context.Context, id string) error {
	if s.cfg.Local == nil {
		return status.Error(codes.FailedPrecondition, "this process has no local pool to mount on")
	}
	for attempt := 0; ; attempt++ {
		rec, err := s.record(ctx, id)
		if err != nil {
			return err
		}
		if rec.Master == s.cfg.Local.Name() {
			return nil
		}
		if attempt > 0 {
			return status.Errorf(codes.Aborted, "dot %s: master is now pool %s, not this node's pool %s", id, rec.Master, s.cfg.Local.Name())
		}
		if err := s.takeOver(ctx, rec); err != nil {
			return err
		}
	}
}

func (s *Store) UnmountDot(ctx context.Context, id string) error {
	if s.cfg.Local == nil {
		return nil
	}
	return s.cfg.Local.UnmountDot(ctx, id)
}

// UnstageDot undoes StageDot on this node's pool.
func (s *Store) UnstageDot(ctx context.Context, id, path string) error {
	if s.cfg.Local == nil {
		return nil
	}
	return s.cfg.Local.UnstageDot(ctx, id, path)
}

// takeOver moves the dot's master to this node's pool.
func (s *Store) takeOver(ctx context.Context, rec cluster.Dot) error {
	master, err := s.cfg.View.GetPool(ctx, rec.Master)
	if err != nil {
		return status.Errorf(codes.Unavailable, "dot %s: its master pool %s is not in the cluster view: %v", rec.ID, rec.Master, err)
	}
	if s.alive(master) {
		return s.handoff(ctx, rec, master)
	}
	gone := s.cfg.Now().Sub(master.LastHeartbeat)
	if gone < s.cfg.FailoverGrace {
		return status.Errorf(codes.Unavailable, "dot %s: its master pool %s on node %s has been unreachable for %s; a replica is promoted after %s",
			rec.ID, master.Name, master.Node, gone.Round(time.Second), s.cfg.FailoverGrace)
	}
	return s.failover(ctx, rec, master)
}

// handoff: the master takes a final commit of the dot (refused while the
// dot is staged there), sends the increment since the newest commit this
// pool holds, and the master is flipped by compare-and-swap. The old
// master stays as a replica.
func (s *Store) handoff(ctx context.Context, rec cluster.Dot, master cluster.Pool) error {
	c, err := s.cfg.Peers.Client(master.Address)
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
	local := s.cfg.Local.Name()
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
	reply, err := c.Handoff(ctx, rec.ID, s.cfg.LocalAddress)
	if err == nil {
		err = s.cfg.Local.SetRole(ctx, rec.ID, true)
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
func (s *Store) failover(ctx context.Context, rec cluster.Dot, master cluster.Pool) error {
	var best *cluster.Replica
	for i := range rec.Replicas {
		r := &rec.Replicas[i]
		p, err := s.cfg.View.GetPool(ctx, r.Pool)
		if err != nil || !s.alive(p) || r.Commit == "" {
			continue
		}
		if best == nil || r.Seq > best.Seq || (r.Seq == best.Seq && r.Pool == s.cfg.Local.Name()) {
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
	if chosen.Pool == s.cfg.Local.Name() {
		return s.cfg.Local.SetRole(ctx, rec.ID, true)
	}
	fresh, err := s.record(ctx, rec.ID)
	if err != nil {
		return err
	}
	p, err := s.cfg.View.GetPool(ctx, fresh.Master)
	if err != nil {
		return err
	}
	return s.handoff(ctx, fresh, p)
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
