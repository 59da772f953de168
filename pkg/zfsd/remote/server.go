package remote

import (
	"context"
	"sync"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// Server serves one pool.
type Server struct {
	api.UnimplementedZfsdServer
	pool  *zfsd.Pool
	peers *Dialer // for pushes to other zfsds; nil when it never pushes

	mu   sync.Mutex
	busy map[string]bool // dots with a stream in progress
}

// NewServer serves pool, pushing to peers through dialer (may be nil).
func NewServer(pool *zfsd.Pool, peers *Dialer) *Server { return &Server{pool: pool, peers: peers} }

func (s *Server) Info(ctx context.Context, _ *api.InfoRequest) (*api.PoolInfo, error) {
	i, err := s.pool.Info(ctx)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return &api.PoolInfo{Name: i.Name, Node: i.Node, Size: i.Size, Available: i.Available, Zvols: i.Zvols, Compression: i.Compression}, nil
}

func (s *Server) ListDots(ctx context.Context, _ *api.ListRequest) (*api.DotList, error) {
	dots, err := s.pool.ListDots(ctx)
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
	return dotReply(s.pool.GetDot(ctx, r.GetId()))
}

func (s *Server) GetDotByName(ctx context.Context, r *api.NameRef) (*api.Dot, error) {
	return dotReply(s.pool.GetDotByName(ctx, r.GetName()))
}

func (s *Server) CreateDot(ctx context.Context, r *api.DotSpec) (*api.Dot, error) {
	return dotReply(s.pool.CreateDot(ctx, zfsd.DotSpec{Pool: r.GetPool(), ID: r.GetId(), Name: r.GetName(), Capacity: r.GetCapacity(),
		Params: r.GetParams(), FromCommit: r.GetFromCommit(), FromDot: r.GetFromDot(),
		CloneMode: zfsd.CloneMode(r.GetCloneMode()), Props: r.GetProps(), Block: r.GetBlock()}))
}

func (s *Server) DeleteDot(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	return &api.Empty{}, errcode.ToStatus(s.pool.DeleteDot(ctx, r.GetId()))
}

func (s *Server) ResizeDot(ctx context.Context, r *api.ResizeRequest) (*api.Dot, error) {
	return dotReply(s.pool.ResizeDot(ctx, r.GetId(), r.GetCapacity()))
}

func (s *Server) ListCommits(ctx context.Context, _ *api.ListRequest) (*api.CommitList, error) {
	cs, err := s.pool.ListCommits(ctx)
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
	return commitReply(s.pool.GetCommit(ctx, r.GetId()))
}

func (s *Server) GetCommitByName(ctx context.Context, r *api.NameRef) (*api.Commit, error) {
	return commitReply(s.pool.GetCommitByName(ctx, r.GetName()))
}

func (s *Server) CreateCommit(ctx context.Context, r *api.CommitRequest) (*api.Commit, error) {
	return commitReply(s.pool.CreateCommit(ctx, r.GetDotId(), r.GetName()))
}

func (s *Server) DeleteCommit(ctx context.Context, r *api.CommitRef) (*api.Empty, error) {
	return &api.Empty{}, errcode.ToStatus(s.pool.DeleteCommit(ctx, r.GetId()))
}

func (s *Server) MountDot(ctx context.Context, r *api.DotRef) (*api.MountReply, error) {
	p, err := s.pool.MountDot(ctx, r.GetId())
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	return &api.MountReply{Path: p}, nil
}

func (s *Server) UnmountDot(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	return &api.Empty{}, errcode.ToStatus(s.pool.UnmountDot(ctx, r.GetId()))
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
