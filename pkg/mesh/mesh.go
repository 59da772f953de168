// Package mesh makes many pools one store: it places dots, replicates each
// commit to a dot's replicas, hands a dot over to the node that stages it,
// and promotes a replica when a master's node has been gone past a grace
// period. Cluster-wide facts go through a cluster.View; ZFS work goes to
// each pool's zfsd.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// Config wires a Store.
type Config struct {
	View  cluster.View
	Peers *remote.Dialer
	// Local is this node's pools and LocalAddress its zfsd; both empty in
	// the controller, which never mounts.
	Local        *zfsd.Set
	LocalAddress string
	// Unreachable is how long a pool may go without a heartbeat before it
	// counts as gone: calls that need it fail fast with Unavailable.
	Unreachable time.Duration
	// FailoverGrace is how long a master's pool must have been gone before
	// a replica is promoted in its place.
	FailoverGrace time.Duration
	Now           func() time.Time
}

// Store is the cluster as one driver.Store.
type Store struct {
	cfg Config

	mu          sync.Mutex
	replicating map[string]bool // dots with a replication pass running
	wg          sync.WaitGroup
}

// New returns a Store.
func New(cfg Config) *Store {
	if cfg.Unreachable == 0 {
		cfg.Unreachable = 10 * time.Second
	}
	if cfg.FailoverGrace == 0 {
		cfg.FailoverGrace = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, replicating: map[string]bool{}}
}

// Wait waits for background replication passes (for tests and shutdown).
func (s *Store) Wait() { s.wg.Wait() }

func (s *Store) alive(p cluster.Pool) bool {
	return s.cfg.Now().Sub(p.LastHeartbeat) < s.cfg.Unreachable
}

// client returns the zfsd of a pool that is alive, or Unavailable naming
// the pool's node.
func (s *Store) client(ctx context.Context, pool string) (*remote.Client, cluster.Pool, error) {
	p, err := s.cfg.View.GetPool(ctx, pool)
	if err != nil {
		return nil, p, status.Errorf(codes.Unavailable, "pool %s is not in the cluster view: %v", pool, err)
	}
	if !s.alive(p) {
		return nil, p, status.Errorf(codes.Unavailable, "pool %s on node %s has not been heard from for %s",
			pool, p.Node, s.cfg.Now().Sub(p.LastHeartbeat).Round(time.Second))
	}
	c, err := s.cfg.Peers.Client(p.Address, p.Name)
	if err != nil {
		return nil, p, status.Errorf(codes.Unavailable, "pool %s on node %s: %v", pool, p.Node, err)
	}
	return c, p, nil
}

// Pools lists the pools alive now.
func (s *Store) Pools(ctx context.Context) ([]zfsd.PoolInfo, error) {
	all, err := s.cfg.View.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	var out []zfsd.PoolInfo
	for _, p := range all {
		if s.alive(p) {
			out = append(out, zfsd.PoolInfo{Name: p.Name, Node: p.Node, Size: p.Size, Available: p.Available, Zvols: p.Zvols})
		}
	}
	return out, nil
}

func notFound(kind, id string) error {
	return fmt.Errorf("%s %s: %w", kind, id, zfsd.ErrNotFound)
}

// named finds the item called name in a list that came with err.
func named[T any](list []T, err error, kind, name string, nameOf func(T) string) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	for _, x := range list {
		if nameOf(x) == name {
			return x, nil
		}
	}
	return zero, notFound(kind+" named", name)
}

func (s *Store) record(ctx context.Context, id string) (cluster.Dot, error) {
	d, err := s.cfg.View.GetDot(ctx, id)
	if errors.Is(err, cluster.ErrNotFound) || (err == nil && d.Deleted) {
		return cluster.Dot{}, notFound("dot", id)
	}
	return d, err
}

// holder returns the record of a dot whose commits are still served: a live
// dot, or a deleted one whose master keeps commits (a VolumeSnapshot of a
// deleted claim), so commit calls still reach that master.
func (s *Store) holder(ctx context.Context, id string) (cluster.Dot, error) {
	d, err := s.cfg.View.GetDot(ctx, id)
	if errors.Is(err, cluster.ErrNotFound) || (err == nil && d.Master == "") {
		return cluster.Dot{}, notFound("dot", id)
	}
	return d, err
}

// master returns a dot's record and a client for its master's zfsd.
func (s *Store) master(ctx context.Context, id string) (cluster.Dot, *remote.Client, error) {
	rec, err := s.record(ctx, id)
	if err != nil {
		return rec, nil, err
	}
	c, _, err := s.client(ctx, rec.Master)
	return rec, c, err
}

// onMaster makes a change on a dot's master, then notes it in the view.
func onMaster[T any](ctx context.Context, s *Store, id string, change func(*remote.Client) (T, error), note func(T) error) (T, error) {
	_, c, err := s.master(ctx, id)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := change(c)
	if err != nil {
		return v, err
	}
	return v, note(v)
}

// liveDots lists the view's records of dots that are not deleted.
func (s *Store) liveDots(ctx context.Context) ([]cluster.Dot, error) {
	recs, err := s.cfg.View.ListDots(ctx)
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if !r.Deleted {
			out = append(out, r)
		}
	}
	return out, nil
}

func isUnreachable(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}

func dotOf(commitID string) string {
	for i := 0; i < len(commitID); i++ {
		if commitID[i] == '@' {
			return commitID[:i]
		}
	}
	return commitID
}

// updateDot is cas for changes that cannot fail: change returns false to
// write nothing.
func (s *Store) updateDot(ctx context.Context, id string, change func(*cluster.Dot) bool) error {
	return s.cas(ctx, id, func(d *cluster.Dot) error {
		if !change(d) {
			return errSkip
		}
		return nil
	})
}
