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
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
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

func isUnreachable(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}

func (s *Store) GetDotByName(ctx context.Context, name string) (zfsd.Dot, error) {
	recs, err := s.liveDots(ctx)
	if err != nil {
		return zfsd.Dot{}, err
	}
	for _, r := range recs {
		if r.Name == name {
			return s.GetDot(ctx, r.ID)
		}
	}
	return zfsd.Dot{}, notFound("dot named", name)
}

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

func dotOf(commitID string) string {
	for i := 0; i < len(commitID); i++ {
		if commitID[i] == '@' {
			return commitID[:i]
		}
	}
	return commitID
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

// DeleteDot deletes a dot on its master and drops its replicas.
func (s *Store) DeleteDot(ctx context.Context, id string) error {
	rec, c, err := s.master(ctx, id)
	if errors.Is(err, zfsd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.DeleteDot(ctx, id); err != nil {
		return err
	}
	return s.dropCopies(ctx, rec)
}

// masterHolds reports whether a deleted dot's master still has commits of
// it (the dot's deletion was deferred for them). Unknown counts as yes:
// the record then stays, and Reconcile asks again.
func (s *Store) masterHolds(ctx context.Context, rec cluster.Dot) bool {
	if rec.Master == "" {
		return false
	}
	c, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return true
	}
	cs, err := c.ListCommits(ctx)
	if err != nil {
		return true
	}
	for _, x := range cs {
		if x.DotID == rec.ID {
			return true
		}
	}
	return false
}

// dropCopies drops a deleted dot's replicas. Those on pools that do not
// answer stay listed on a tombstone record, which Reconcile retries, so a
// later rebuild of the view cannot bring the dot back from them. While the
// master still holds commits of the dot, the tombstone keeps naming it, so
// deleting or branching those commits still finds them; the last commit's
// deletion removes the record.
func (s *Store) dropCopies(ctx context.Context, rec cluster.Dot) error {
	var left []cluster.Replica
	for _, r := range rec.Replicas {
		rc, _, err := s.client(ctx, r.Pool)
		if err == nil {
			err = rc.DropCopy(ctx, rec.ID)
		}
		if err != nil {
			klog.ErrorS(err, "dropping a replica of a deleted dot; retried later", "dot", rec.ID, "pool", r.Pool)
			left = append(left, r)
		}
	}
	holds := s.masterHolds(ctx, rec)
	if len(left) == 0 && !holds {
		return s.cfg.View.DeleteDot(ctx, rec.ID)
	}
	for {
		cur, err := s.cfg.View.GetDot(ctx, rec.ID)
		if err != nil {
			return err
		}
		if !holds {
			cur.Master = ""
		}
		if cur.Deleted && len(cur.Replicas) == len(left) {
			return nil // a tombstone already saying this
		}
		cur.Deleted, cur.Replicas = true, left
		if _, err = s.cfg.View.UpdateDot(ctx, cur); !errors.Is(err, cluster.ErrConflict) {
			return err
		}
	}
}

func (s *Store) ResizeDot(ctx context.Context, id string, capacity int64) (zfsd.Dot, error) {
	_, c, err := s.master(ctx, id)
	if err != nil {
		return zfsd.Dot{}, err
	}
	d, err := c.ResizeDot(ctx, id, capacity)
	if err != nil {
		return d, err
	}
	return d, s.updateDot(ctx, id, func(r *cluster.Dot) bool { r.Capacity = capacity; return true })
}

// ListCommits lists each dot's commits as its master has them.
func (s *Store) ListCommits(ctx context.Context) ([]zfsd.Commit, error) {
	recs, err := s.cfg.View.ListDots(ctx) // with deleted dots' commits
	if err != nil {
		return nil, err
	}
	masterOf := map[string]string{}
	for _, r := range recs {
		masterOf[r.ID] = r.Master
	}
	pools, err := s.Pools(ctx)
	if err != nil {
		return nil, err
	}
	var out []zfsd.Commit
	for _, p := range pools {
		c, _, err := s.client(ctx, p.Name)
		if err != nil {
			return nil, err
		}
		cs, err := c.ListCommits(ctx)
		if err != nil {
			return nil, err
		}
		for _, x := range cs {
			if masterOf[x.DotID] == p.Name {
				out = append(out, x)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Store) GetCommit(ctx context.Context, id string) (zfsd.Commit, error) {
	rec, err := s.holder(ctx, dotOf(id))
	if err != nil {
		return zfsd.Commit{}, notFound("commit", id)
	}
	c, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return zfsd.Commit{}, err
	}
	return c.GetCommit(ctx, id)
}

func (s *Store) GetCommitByName(ctx context.Context, name string) (zfsd.Commit, error) {
	cs, err := s.ListCommits(ctx)
	if err != nil {
		return zfsd.Commit{}, err
	}
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
	}
	return zfsd.Commit{}, notFound("commit named", name)
}

// CreateCommit commits on the master, records it, and replicates it in
// the background.
func (s *Store) CreateCommit(ctx context.Context, dotID, name string) (zfsd.Commit, error) {
	_, c, err := s.master(ctx, dotID)
	if err != nil {
		return zfsd.Commit{}, err
	}
	commit, err := c.CreateCommit(ctx, dotID, name)
	if err != nil {
		return commit, err
	}
	if err := s.noteCommit(ctx, dotID, commit.ID); err != nil {
		return commit, err
	}
	s.Replicate(dotID)
	return commit, nil
}

func (s *Store) noteCommit(ctx context.Context, dotID, commitID string) error {
	return s.updateDot(ctx, dotID, func(d *cluster.Dot) bool {
		d.Seq++
		d.NewestCommit = commitID
		d.LastCommitAt = s.cfg.Now()
		return true
	})
}

func (s *Store) DeleteCommit(ctx context.Context, id string) error {
	rec, err := s.holder(ctx, dotOf(id))
	if errors.Is(err, zfsd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return err
	}
	if err := c.DeleteCommit(ctx, id); err != nil {
		return err
	}
	if rec.Deleted {
		// The dot's last commit may just have gone, taking the dot.
		return s.dropCopies(ctx, rec)
	}
	return nil
}
