package remote

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// Server serves a node's pools. A call names its pool in the PoolHeader
// metadata; a call that names none is for the node's only pool.
type Server struct {
	api.UnimplementedZfsdServer
	pools *zfsd.Set
	peers *Dialer // for pushes to other zfsds; nil when it never pushes

	mu   sync.Mutex
	busy map[string]bool // pool/dot pairs with a stream in progress
}

// NewServer serves pools, pushing to peers through dialer (may be nil).
func NewServer(pools *zfsd.Set, peers *Dialer) *Server { return &Server{pools: pools, peers: peers} }

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

func (s *Server) Info(ctx context.Context, _ *api.InfoRequest) (*api.PoolInfo, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	i, err := pool.Info(ctx)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return &api.PoolInfo{Name: i.Name, Node: i.Node, Size: i.Size, Available: i.Available, Zvols: i.Zvols, Compression: i.Compression}, nil
}

func (s *Server) ListDots(ctx context.Context, _ *api.ListRequest) (*api.DotList, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	dots, err := pool.ListDots(ctx)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	out := &api.DotList{}
	for _, d := range dots {
		out.Dots = append(out.Dots, dotToAPI(d))
	}
	return out, nil
}

func (s *Server) GetDot(ctx context.Context, r *api.DotRef) (*api.Dot, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return dotReply(pool.GetDot(ctx, r.GetId()))
}

func (s *Server) GetDotByName(ctx context.Context, r *api.NameRef) (*api.Dot, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return dotReply(pool.GetDotByName(ctx, r.GetName()))
}

func (s *Server) CreateDot(ctx context.Context, r *api.DotSpec) (*api.Dot, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	spec, err := specFromAPI(r)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return dotReply(pool.CreateDot(ctx, spec))
}

func (s *Server) DeleteDot(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return &api.Empty{}, errcode.ToStatus(pool.DeleteDot(ctx, r.GetId()))
}

func (s *Server) ResizeDot(ctx context.Context, r *api.ResizeRequest) (*api.Dot, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return dotReply(pool.ResizeDot(ctx, r.GetId(), r.GetCapacity()))
}

func (s *Server) ListCommits(ctx context.Context, _ *api.ListRequest) (*api.CommitList, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := pool.ListCommits(ctx)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	out := &api.CommitList{}
	for _, c := range cs {
		out.Commits = append(out.Commits, commitToAPI(c))
	}
	return out, nil
}

func (s *Server) GetCommit(ctx context.Context, r *api.CommitRef) (*api.Commit, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return commitReply(pool.GetCommit(ctx, r.GetId()))
}

func (s *Server) GetCommitByName(ctx context.Context, r *api.NameRef) (*api.Commit, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return commitReply(pool.GetCommitByName(ctx, r.GetName()))
}

func (s *Server) CreateCommit(ctx context.Context, r *api.CommitRequest) (*api.Commit, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return commitReply(pool.CreateCommit(ctx, r.GetDotId(), r.GetName()))
}

func (s *Server) DeleteCommit(ctx context.Context, r *api.CommitRef) (*api.Empty, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return &api.Empty{}, errcode.ToStatus(pool.DeleteCommit(ctx, r.GetId()))
}

func (s *Server) MountDot(ctx context.Context, r *api.DotRef) (*api.MountReply, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	p, err := pool.MountDot(ctx, r.GetId())
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return &api.MountReply{Path: p}, nil
}

func (s *Server) UnmountDot(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return &api.Empty{}, errcode.ToStatus(pool.UnmountDot(ctx, r.GetId()))
}

func dotReply(d zfsd.Dot, err error) (*api.Dot, error) {
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return dotToAPI(d), nil
}

func commitReply(c zfsd.Commit, err error) (*api.Commit, error) {
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return commitToAPI(c), nil
}
