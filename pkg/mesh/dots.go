package mesh

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// ListDots lists dots from the view, where their masters are.
func (s *Store) ListDots(ctx context.Context) ([]zfsd.Dot, error) {
	recs, err := s.liveDots(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]zfsd.Dot, 0, len(recs))
	for _, r := range recs {
		out = append(out, zfsd.Dot{Pool: r.Master, ID: r.ID, Name: r.Name, Capacity: r.Capacity})
	}
	return out, nil
}

// GetDot asks the dot's master for the whole story. On a node, a master
// that does not answer is not yet an error: staging decides between a
// handoff, a fast Unavailable and a failover, so the view's record (or this
// node's copy) stands in.
func (s *Store) GetDot(ctx context.Context, id string) (zfsd.Dot, error) {
	rec, err := s.record(ctx, id)
	if err != nil {
		return zfsd.Dot{}, err
	}
	c, p, err := s.client(ctx, rec.Master)
	if err == nil {
		var d zfsd.Dot
		if d, err = c.GetDot(ctx, id); !isUnreachable(err) {
			return d, err
		}
		err = status.Errorf(codes.Unavailable, "dot %s: master pool %s on node %s does not answer: %v", id, rec.Master, p.Node, err)
	}
	if lp := s.localCopy(ctx, id, rec.Master); lp != nil {
		if d, lerr := lp.GetDot(ctx, id); lerr == nil {
			d.Pool = rec.Master
			return d, nil
		}
	}
	if s.cfg.Local == nil {
		return zfsd.Dot{}, err
	}
	return zfsd.Dot{Pool: rec.Master, ID: id, Name: rec.Name, Capacity: rec.Capacity}, nil
}

func (s *Store) GetDotByName(ctx context.Context, name string) (zfsd.Dot, error) {
	recs, err := s.liveDots(ctx)
	r, err := named(recs, err, "dot", name, func(r cluster.Dot) string { return r.Name })
	if err != nil {
		return zfsd.Dot{}, err
	}
	return s.GetDot(ctx, r.ID)
}

// CreateDot claims the dot in the view first, so no two controllers can
// make it, then makes it on its master.
func (s *Store) CreateDot(ctx context.Context, spec zfsd.DotSpec) (zfsd.Dot, error) {
	replicas, err := s.replicasFor(ctx, spec.Pool, spec.Params.Replicas)
	if err != nil {
		return zfsd.Dot{}, err
	}
	if v := spec.Params.Compression; v != "" {
		if err := s.checkCompression(ctx, spec.Pool, v); err != nil {
			return zfsd.Dot{}, err
		}
	}
	if !spec.Source.IsZero() {
		if err := s.bringSource(ctx, spec); err != nil {
			return zfsd.Dot{}, err
		}
	}
	rec := cluster.Dot{ID: spec.ID, Name: spec.Name, Capacity: spec.Capacity, Master: spec.Pool, Replicas: replicas,
		CommitInterval: spec.Params.CommitInterval}
	if _, err := s.cfg.View.CreateDot(ctx, rec); err != nil {
		return zfsd.Dot{}, err
	}
	c, _, err := s.client(ctx, spec.Pool)
	if err == nil {
		var d zfsd.Dot
		if d, err = c.CreateDot(ctx, spec); err == nil {
			return d, nil
		}
	}
	if derr := s.cfg.View.DeleteDot(context.WithoutCancel(ctx), spec.ID); derr != nil {
		klog.ErrorS(derr, "removing the view record of a dot that was not made", "dot", spec.ID)
	}
	return zfsd.Dot{}, err
}

// noteReplica adds pool to a dot's replicas if it is not there.
func (s *Store) noteReplica(ctx context.Context, id, pool string) error {
	return s.updateDot(ctx, id, func(d *cluster.Dot) bool {
		if _, ok := d.Replica(pool); ok || d.Master == pool {
			return false
		}
		d.Replicas = append(d.Replicas, cluster.Replica{Pool: pool})
		return true
	})
}

func (s *Store) ResizeDot(ctx context.Context, id string, capacity int64) (zfsd.Dot, error) {
	return onMaster(ctx, s, id,
		func(c *remote.Client) (zfsd.Dot, error) { return c.ResizeDot(ctx, id, capacity) },
		func(zfsd.Dot) error {
			return s.updateDot(ctx, id, func(r *cluster.Dot) bool { r.Capacity = capacity; return true })
		})
}
