package mesh

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
)

// Replicate brings every replica of a dot up to its master's newest commit,
// in the background. A pass already running for the dot is asked to run
// once more instead of starting a second.
func (s *Store) Replicate(dotID string) {
	s.mu.Lock()
	if _, running := s.replicating[dotID]; running {
		s.replicating[dotID] = true // run again when done
		s.mu.Unlock()
		return
	}
	s.replicating[dotID] = false
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			s.ReplicateNow(ctx, dotID)
			cancel()
			s.mu.Lock()
			if !s.replicating[dotID] {
				delete(s.replicating, dotID)
				s.mu.Unlock()
				return
			}
			s.replicating[dotID] = false
			s.mu.Unlock()
		}
	}()
}

// ReplicateNow pushes the master's newest commit to each live replica that
// lags, and records how far each got. Failures are logged and retried by
// the next pass; an unreachable replica catches up when it returns.
func (s *Store) ReplicateNow(ctx context.Context, dotID string) {
	rec, err := s.record(ctx, dotID)
	if err != nil {
		klog.ErrorS(err, "replication: reading the dot", "dot", dotID)
		return
	}
	master, _, err := s.client(ctx, rec.Master)
	if err != nil {
		klog.V(2).InfoS("replication: master unreachable", "dot", dotID, "err", err)
		return
	}
	for _, r := range rec.Replicas {
		if r.Seq >= rec.Seq && r.Commit != "" {
			continue
		}
		_, target, err := s.client(ctx, r.Pool)
		if err != nil {
			klog.V(2).InfoS("replication: replica unreachable", "dot", dotID, "pool", r.Pool, "err", err)
			continue
		}
		start := time.Now()
		reply, err := master.Push(ctx, dotID, target.Address, target.Name)
		if err != nil {
			klog.ErrorS(err, "replication: push failed", "dot", dotID, "pool", r.Pool)
			continue
		}
		klog.InfoS("replicated", "dot", dotID, "pool", r.Pool, "commit", reply.GetCommit(), "base", reply.GetBase(),
			"bytes", reply.GetBytes(), "resumedBytes", reply.GetResumedBytes(), "reseeded", reply.GetReseeded(), "took", time.Since(start))
		pool, seq, commit := r.Pool, rec.Seq, dotID+"@"+reply.GetCommit()
		err = s.updateDot(ctx, dotID, func(d *cluster.Dot) bool {
			rr, ok := d.Replica(pool)
			if !ok {
				return false
			}
			rr.Commit = commit
			if commit == d.NewestCommit || d.NewestCommit == "" {
				rr.Seq = d.Seq
			} else {
				rr.Seq = seq
			}
			rr.Updated = s.cfg.Now()
			rr.LastBytes = reply.GetBytes()
			return true
		})
		if err != nil {
			klog.ErrorS(err, "replication: recording progress", "dot", dotID, "pool", pool)
		}
	}
}

// Reconcile runs a replication pass for every dot with a lagging replica,
// every interval, until ctx ends: replicas that were away catch up.
func (s *Store) Reconcile(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		recs, err := s.cfg.View.ListDots(ctx)
		if err == nil {
			for _, d := range recs {
				if d.Deleted {
					if err := s.dropCopies(ctx, d); err != nil {
						klog.V(2).InfoS("deleted dot: copies still left", "dot", d.ID, "err", err)
					}
					continue
				}
				for _, r := range d.Replicas {
					if d.Lag(r) > 0 || (r.Commit == "" && d.Seq > 0) {
						s.Replicate(d.ID)
						break
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Heartbeat keeps this node's pools fresh in the view until ctx ends.
func (s *Store) Heartbeat(ctx context.Context, node string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, p := range s.cfg.Local.List() {
			info, err := p.Info(ctx)
			if err != nil {
				klog.ErrorS(err, "heartbeat: pool info", "pool", p.Name())
				continue
			}
			err = s.cfg.View.PutPool(ctx, cluster.Pool{Name: info.Name, Node: node, Address: s.cfg.LocalAddress,
				Size: info.Size, Available: info.Available, Zvols: info.Zvols, LastHeartbeat: s.cfg.Now()}, s.cfg.Unreachable)
			if errors.Is(err, cluster.ErrHeld) {
				// Another node took the pool while this one was not heard
				// from; serving it too would be two writers.
				klog.ErrorS(err, "heartbeat: pool taken over by another node; no longer serving it here", "pool", p.Name())
				s.cfg.Local.Remove(p.Name())
			} else if err != nil {
				klog.ErrorS(err, "heartbeat: writing the view", "pool", info.Name)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// AutoCommit commits every dot whose commitInterval has passed since its
// newest commit, checking every tick, until ctx ends. The commits have no
// CSI name, so they are not VolumeSnapshots; they are replicated like any
// other and bound what a failover loses.
func (s *Store) AutoCommit(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		recs, err := s.liveDots(ctx)
		if err != nil {
			klog.ErrorS(err, "automatic commits: listing dots")
			continue
		}
		for _, d := range recs {
			if d.CommitInterval <= 0 || s.cfg.Now().Sub(d.LastCommitAt) < d.CommitInterval {
				continue
			}
			if _, err := s.CreateCommit(ctx, d.ID, ""); err != nil {
				klog.V(2).InfoS("automatic commit failed; retried next tick", "dot", d.ID, "err", err)
			}
		}
	}
}

// ClaimPool fences a pool for this node before it is imported here: it
// fails with cluster.ErrHeld while another node holds the pool and is
// still heard from.
func (s *Store) ClaimPool(ctx context.Context, name, node string) error {
	return s.cfg.View.PutPool(ctx, cluster.Pool{Name: name, Node: node, Address: s.cfg.LocalAddress, LastHeartbeat: s.cfg.Now()}, s.cfg.Unreachable)
}

// ReleasePool records a clean export, so another node may import the pool
// without waiting for this node's heartbeat to go stale.
func (s *Store) ReleasePool(ctx context.Context, name, node string) error {
	return s.cfg.View.ReleasePool(ctx, name, node)
}
