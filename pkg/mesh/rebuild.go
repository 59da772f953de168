package mesh

import (
	"context"
	"errors"
	"sort"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// Rebuild restores the view's record of every dot that a live pool holds
// but the view has lost (architecture rule 1: the pools tell the whole
// story). The copy with the most commits is taken as master; the others
// become replicas at the commit they hold. Each pool records whether its
// copy is the master (io.dotmesh:role), and that decides first. Records that exist are left
// alone. It returns how many records it restored.
func (s *Store) Rebuild(ctx context.Context) (int, error) {
	pools, err := s.Pools(ctx)
	if err != nil {
		return 0, err
	}
	type holder struct {
		pool   string
		dot    zfsd.Dot
		snaps  []zfsd.Snapshot
		newest string
	}
	held := map[string][]holder{}
	for _, p := range pools {
		c, _, err := s.client(ctx, p.Name)
		if err != nil {
			return 0, err
		}
		dots, err := c.ListDots(ctx)
		if err != nil {
			return 0, err
		}
		for _, d := range dots {
			snaps, err := c.Snapshots(ctx, d.ID)
			if err != nil {
				return 0, err
			}
			h := holder{pool: p.Name, dot: d}
			for _, sn := range snaps {
				h.snaps = append(h.snaps, zfsd.Snapshot{Name: sn.GetName(), GUID: sn.GetGuid()})
			}
			if len(h.snaps) > 0 {
				h.newest = d.ID + "@" + h.snaps[len(h.snaps)-1].Name
			}
			held[d.ID] = append(held[d.ID], h)
		}
	}
	restored := 0
	for id, hs := range held {
		if _, err := s.cfg.View.GetDot(ctx, id); !errors.Is(err, cluster.ErrNotFound) {
			continue
		}
		// The copy that says it was master wins; among the rest (a master
		// lost mid-handoff), the one with most commits.
		sort.SliceStable(hs, func(i, j int) bool {
			if hs[i].dot.Master != hs[j].dot.Master {
				return hs[i].dot.Master
			}
			return len(hs[i].snaps) > len(hs[j].snaps)
		})
		m := hs[0]
		rec := cluster.Dot{ID: id, Name: m.dot.Name, Capacity: m.dot.Capacity, Master: m.pool,
			Seq: int64(len(m.snaps)), NewestCommit: m.newest, CommitInterval: m.dot.Params.CommitInterval}
		for _, h := range hs[1:] {
			rec.Replicas = append(rec.Replicas, cluster.Replica{Pool: h.pool, Commit: h.newest, Seq: int64(len(h.snaps)), Updated: s.cfg.Now()})
		}
		if _, err := s.cfg.View.CreateDot(ctx, rec); err != nil && !errors.Is(err, cluster.ErrExists) {
			return restored, err
		}
		restored++
		klog.InfoS("restored a dot's record from its pools", "dot", id, "master", rec.Master, "replicas", len(rec.Replicas))
	}
	return restored, nil
}
