package remote

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/lock"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// Server serves a node's pools. A call names its pool in the PoolHeader
// metadata; a call that names none is for the node's only pool.
type Server struct {
	api.UnimplementedZfsdServer
	pools *zfsd.Set
	peers *Dialer        // for pushes to other zfsds; nil when it never pushes
	busy  *lock.Inflight // pool/dot pairs with a stream in progress
}

// NewServer serves pools, pushing to peers through dialer (may be nil).
func NewServer(pools *zfsd.Set, peers *Dialer) *Server {
	return &Server{pools: pools, peers: peers, busy: lock.New()}
}

// pool is the pool a call is for. A pool this node does not serve is
// Unavailable: the caller's view is behind a pool that moved, and a retry
// after the view catches up goes to the right node.
func (s *Server) pool(ctx context.Context) (*zfsd.Pool, error) {
	var name string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(PoolHeader); len(v) > 0 {
			name = v[0]
		}
	}
	if name != "" {
		if p, ok := s.pools.Get(name); ok {
			return p, nil
		}
		return nil, status.Errorf(codes.Unavailable, "pool %s is not imported on this node", name)
	}
	all := s.pools.List()
	if len(all) != 1 {
		return nil, status.Errorf(codes.FailedPrecondition, "this zfsd serves %d pools; the call must name one (%s metadata)", len(all), PoolHeader)
	}
	return all[0], nil
}

// serve answers a call with what do makes of the pool the call is for; an
// error of do's becomes a gRPC status.
func serve[R any](ctx context.Context, s *Server, do func(*zfsd.Pool) (R, error)) (R, error) {
	var none R
	pool, err := s.pool(ctx)
	if err != nil {
		return none, err
	}
	r, err := do(pool)
	if err != nil {
		return none, errcode.ToStatus(err)
	}
	return r, nil
}

func (s *Server) Info(ctx context.Context, _ *api.InfoRequest) (*api.PoolInfo, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.PoolInfo, error) {
		i, err := pool.Info(ctx)
		return &api.PoolInfo{Name: i.Name, Node: i.Node, Size: i.Size, Available: i.Available, Zvols: i.Zvols, Compression: i.Compression}, err
	})
}

func (s *Server) ListDots(ctx context.Context, _ *api.ListRequest) (*api.DotList, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.DotList, error) {
		dots, err := pool.ListDots(ctx)
		return &api.DotList{Dots: convertAll(dots, dotToAPI)}, err
	})
}

func (s *Server) GetDot(ctx context.Context, r *api.DotRef) (*api.Dot, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Dot, error) { return dotReply(pool.GetDot(ctx, r.GetId())) })
}

func (s *Server) GetDotByName(ctx context.Context, r *api.NameRef) (*api.Dot, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Dot, error) { return dotReply(pool.GetDotByName(ctx, r.GetName())) })
}

func (s *Server) CreateDot(ctx context.Context, r *api.DotSpec) (*api.Dot, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Dot, error) {
		spec, err := specFromAPI(r)
		if err != nil {
			return nil, err
		}
		return dotReply(pool.CreateDot(ctx, spec))
	})
}

func (s *Server) DeleteDot(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Empty, error) { return &api.Empty{}, pool.DeleteDot(ctx, r.GetId()) })
}

func (s *Server) ResizeDot(ctx context.Context, r *api.ResizeRequest) (*api.Dot, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Dot, error) {
		return dotReply(pool.ResizeDot(ctx, r.GetId(), r.GetCapacity()))
	})
}

func (s *Server) ListCommits(ctx context.Context, _ *api.ListRequest) (*api.CommitList, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.CommitList, error) {
		cs, err := pool.ListCommits(ctx)
		return &api.CommitList{Commits: convertAll(cs, commitToAPI)}, err
	})
}

func (s *Server) GetCommit(ctx context.Context, r *api.CommitRef) (*api.Commit, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Commit, error) { return commitReply(pool.GetCommit(ctx, r.GetId())) })
}

func (s *Server) GetCommitByName(ctx context.Context, r *api.NameRef) (*api.Commit, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Commit, error) { return commitReply(pool.GetCommitByName(ctx, r.GetName())) })
}

func (s *Server) CreateCommit(ctx context.Context, r *api.CommitRequest) (*api.Commit, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Commit, error) {
		return commitReply(pool.CreateCommit(ctx, r.GetDotId(), r.GetName()))
	})
}

func (s *Server) DeleteCommit(ctx context.Context, r *api.CommitRef) (*api.Empty, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Empty, error) { return &api.Empty{}, pool.DeleteCommit(ctx, r.GetId()) })
}

func (s *Server) MountDot(ctx context.Context, r *api.DotRef) (*api.MountReply, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.MountReply, error) {
		p, err := pool.MountDot(ctx, r.GetId())
		return &api.MountReply{Path: p}, err
	})
}

func (s *Server) UnmountDot(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Empty, error) { return &api.Empty{}, pool.UnmountDot(ctx, r.GetId()) })
}

func dotReply(d zfsd.Dot, err error) (*api.Dot, error) { return convert(d, err, dotToAPI) }

func commitReply(c zfsd.Commit, err error) (*api.Commit, error) { return convert(c, err, commitToAPI) }
