package mesh

import (
	"context"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// replicasFor picks the pools that hold the other copies: the emptiest
// alive pools on other nodes than the master's.
func (s *Store) replicasFor(ctx context.Context, master string, asked int) ([]cluster.Replica, error) {
	all, err := s.cfg.View.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	var alive []cluster.Pool
	masterNode := ""
	for _, p := range all {
		if p.Name == master {
			masterNode = p.Node
		}
		if s.alive(p) {
			alive = append(alive, p)
		}
	}
	want := min(3, len(alive))
	if asked > 0 {
		want = asked
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].Available > alive[j].Available })
	var out []cluster.Replica
	for _, p := range alive {
		if len(out) == want-1 {
			break
		}
		if p.Name != master && p.Node != masterNode {
			out = append(out, cluster.Replica{Pool: p.Name})
		}
	}
	if len(out) < want-1 {
		return nil, status.Errorf(codes.ResourceExhausted, "replicas=%d needs %d pools on other nodes than %s; %d are alive", want, want-1, masterNode, len(out))
	}
	return out, nil
}

// checkCompression asks the target pool whether it can compress with
// value before the dot is claimed in the view: the view does not carry
// pool features, and a dot the pool then refuses would leave a claim to
// undo.
func (s *Store) checkCompression(ctx context.Context, pool, value string) error {
	if _, feature := zfs.CompressionFeature(value); feature == "" {
		return nil
	}
	c, _, err := s.client(ctx, pool)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	return info.CheckCompression(value)
}

// bringSource makes sure the source of a branch is on the target pool: an
// instant clone needs its origin there. If the source dot lives elsewhere
// its master pushes it to the target, which becomes one more replica.
func (s *Store) bringSource(ctx context.Context, spec zfsd.DotSpec) error {
	srcID := spec.Source.DotID()
	rec, err := s.record(ctx, srcID)
	if spec.Source.Kind == zfsd.SourceCommit {
		rec, err = s.holder(ctx, srcID)
	}
	if err != nil {
		return err
	}
	if rec.Master == spec.Pool {
		return nil
	}
	if spec.Source.Kind == zfsd.SourceDot {
		return status.Errorf(codes.Unimplemented, "branching dot %s (on pool %s) onto pool %s: branch a commit of it instead", srcID, rec.Master, spec.Pool)
	}
	src, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return err
	}
	_, dst, err := s.client(ctx, spec.Pool)
	if err != nil {
		return err
	}
	if _, err := src.Push(ctx, srcID, dst.Address, dst.Name); err != nil {
		return err
	}
	return s.noteReplica(ctx, srcID, spec.Pool)
}
