package remote

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// Client reaches one node's pool. Its errors match the zfsd sentinels, so
// it stands in for a local *zfsd.Pool.
type Client struct{ c api.ZfsdClient }

// NewClient wraps a connection to a node's zfsd that serves one pool.
func NewClient(conn grpc.ClientConnInterface) *Client { return NewPoolClient(conn, "") }

// NewPoolClient wraps a connection to a node's zfsd and names the pool
// every call is for, as a zfsd serving several pools (PV-per-node) needs.
func NewPoolClient(conn grpc.ClientConnInterface, pool string) *Client {
	if pool != "" {
		conn = poolConn{conn, pool}
	}
	return &Client{c: api.NewZfsdClient(conn)}
}

// PoolHeader is the gRPC metadata key naming the pool a call is for.
const PoolHeader = "dotmesh-pool"

// poolConn adds the pool's name to every call on a shared connection.
type poolConn struct {
	grpc.ClientConnInterface
	pool string
}

func (c poolConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.ClientConnInterface.Invoke(metadata.AppendToOutgoingContext(ctx, PoolHeader, c.pool), method, args, reply, opts...)
}

func (c poolConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.ClientConnInterface.NewStream(metadata.AppendToOutgoingContext(ctx, PoolHeader, c.pool), desc, method, opts...)
}

// Pools answers for the one remote pool.
func (c *Client) Pools(ctx context.Context) ([]zfsd.PoolInfo, error) {
	i, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	return []zfsd.PoolInfo{i}, nil
}

func (c *Client) Info(ctx context.Context) (zfsd.PoolInfo, error) {
	r, err := c.c.Info(ctx, &api.InfoRequest{})
	if err != nil {
		return zfsd.PoolInfo{}, errcode.FromStatus(err)
	}
	return zfsd.PoolInfo{Name: r.GetName(), Node: r.GetNode(), Size: r.GetSize(), Available: r.GetAvailable(), Zvols: r.GetZvols(),
		Compression: r.GetCompression()}, nil
}

func (c *Client) ListDots(ctx context.Context) ([]zfsd.Dot, error) {
	r, err := c.c.ListDots(ctx, &api.ListRequest{})
	return convert(r.GetDots(), errcode.FromStatus(err), dotsFromAPI)
}

func (c *Client) GetDot(ctx context.Context, id string) (zfsd.Dot, error) {
	return dotResult(c.c.GetDot(ctx, &api.DotRef{Id: id}))
}

func (c *Client) GetDotByName(ctx context.Context, name string) (zfsd.Dot, error) {
	return dotResult(c.c.GetDotByName(ctx, &api.NameRef{Name: name}))
}

func (c *Client) CreateDot(ctx context.Context, s zfsd.DotSpec) (zfsd.Dot, error) {
	return dotResult(c.c.CreateDot(ctx, specToAPI(s)))
}

func (c *Client) DeleteDot(ctx context.Context, id string) error {
	_, err := c.c.DeleteDot(ctx, &api.DotRef{Id: id})
	return errcode.FromStatus(err)
}

func (c *Client) ResizeDot(ctx context.Context, id string, capacity int64) (zfsd.Dot, error) {
	return dotResult(c.c.ResizeDot(ctx, &api.ResizeRequest{Id: id, Capacity: capacity}))
}

func (c *Client) ListCommits(ctx context.Context) ([]zfsd.Commit, error) {
	r, err := c.c.ListCommits(ctx, &api.ListRequest{})
	return convert(r.GetCommits(), errcode.FromStatus(err), commitsFromAPI)
}

func (c *Client) GetCommit(ctx context.Context, id string) (zfsd.Commit, error) {
	return commitResult(c.c.GetCommit(ctx, &api.CommitRef{Id: id}))
}

func (c *Client) GetCommitByName(ctx context.Context, name string) (zfsd.Commit, error) {
	return commitResult(c.c.GetCommitByName(ctx, &api.NameRef{Name: name}))
}

func (c *Client) CreateCommit(ctx context.Context, dotID, name string) (zfsd.Commit, error) {
	return commitResult(c.c.CreateCommit(ctx, &api.CommitRequest{DotId: dotID, Name: name}))
}

func (c *Client) DeleteCommit(ctx context.Context, id string) error {
	_, err := c.c.DeleteCommit(ctx, &api.CommitRef{Id: id})
	return errcode.FromStatus(err)
}

func (c *Client) MountDot(ctx context.Context, id string) (string, error) {
	r, err := c.c.MountDot(ctx, &api.DotRef{Id: id})
	if err != nil {
		return "", errcode.FromStatus(err)
	}
	return r.GetPath(), nil
}

func (c *Client) UnmountDot(ctx context.Context, id string) error {
	_, err := c.c.UnmountDot(ctx, &api.DotRef{Id: id})
	return errcode.FromStatus(err)
}

// StageDot and UnstageDot are node work, done by the node's own plugin on
// its local pool; a controller never stages.
func (c *Client) StageDot(context.Context, string, string) error {
	return status.Error(codes.Unimplemented, "staging is done by the node plugin on its own pool")
}

func (c *Client) UnstageDot(context.Context, string, string) error {
	return status.Error(codes.Unimplemented, "staging is done by the node plugin on its own pool")
}

func dotResult(d *api.Dot, err error) (zfsd.Dot, error) {
	return convert(d, errcode.FromStatus(err), dotFromAPI)
}

func commitResult(c *api.Commit, err error) (zfsd.Commit, error) {
	return convert(c, errcode.FromStatus(err), commitFromAPI)
}

func dotsFromAPI(ds []*api.Dot) []zfsd.Dot { return convertAll(ds, dotFromAPI) }

func commitsFromAPI(cs []*api.Commit) []zfsd.Commit { return convertAll(cs, commitFromAPI) }

// Snapshots lists a dot's snapshots on the remote pool.
func (c *Client) Snapshots(ctx context.Context, id string) ([]*api.Snapshot, error) {
	r, err := c.c.Snapshots(ctx, &api.DotRef{Id: id})
	return r.GetSnapshots(), errcode.FromStatus(err)
}

// DropCopy destroys the remote pool's copy of a dot.
func (c *Client) DropCopy(ctx context.Context, id string) error {
	_, err := c.c.DropCopy(ctx, &api.DotRef{Id: id})
	return errcode.FromStatus(err)
}

// Push asks the remote zfsd to bring the copy on pool targetPool of the
// zfsd at target up to date.
func (c *Client) Push(ctx context.Context, id, target, targetPool string) (*api.PushReply, error) {
	r, err := c.c.Push(ctx, &api.PushRequest{DotId: id, TargetAddress: target, TargetPool: targetPool})
	return r, errcode.FromStatus(err)
}

// Handoff asks the remote zfsd, the dot's master, to hand it to pool
// targetPool of the zfsd at target.
func (c *Client) Handoff(ctx context.Context, id, target, targetPool string) (*api.PushReply, error) {
	r, err := c.c.Handoff(ctx, &api.PushRequest{DotId: id, TargetAddress: target, TargetPool: targetPool})
	return r, errcode.FromStatus(err)
}
