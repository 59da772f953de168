// Package cluster is the cluster view: which node has each pool imported and
// at what address, which pool is master of each dot, and its replicas. It
// has two implementations: the Kubernetes API (CRDs, compare-and-swap on
// resourceVersion) and an in-memory one for standalone mode and unit tests.
// The pools remain the source of truth for data and metadata; this view
// holds only what must be agreed cluster-wide.
package cluster

import (
	"context"
	"fmt"
	"time"
)

// Pool is one imported pool, kept fresh by its node's heartbeat.
type Pool struct {
	Name          string
	Node          string
	Address       string // zfsd's API, host:port
	Size          int64
	Available     int64
	Zvols         bool
	LastHeartbeat time.Time
}

// Replica is how far one copy of a dot has got.
type Replica struct {
	Pool    string
	Commit  string    // newest commit it holds ("" for none yet)
	Seq     int64     // that commit's sequence number on the master
	Updated time.Time // when it last caught up
	// LastBytes is the size of the last stream sent to it: an incremental
	// catch-up costs the changed blocks, not the dot.
	LastBytes int64
}

// Loss records what a failover could not carry over.
type Loss struct {
	CommitsLost            int64
	LastReplicatedCommit   string
	LastReplicatedCommitAt time.Time
	At                     time.Time
	FromPool, ToPool       string
}

// Dot is the cluster's record of one dot.
type Dot struct {
	ID       string
	Name     string
	Capacity int64
	Master   string    // pool that may write it
	Replicas []Replica // every other copy
	// CommitInterval, when set, has the controller commit the dot that
	// often, bounding what a failover can lose; LastCommitAt is the newest.
	CommitInterval time.Duration
	LastCommitAt   time.Time
	// NewestCommit and Seq are the master's newest commit and how many
	// commits it has taken; replicas lag by Seq - Replica.Seq.
	NewestCommit string
	Seq          int64
	Loss         *Loss
	// Deleted marks a dot deleted while copies of it remain on pools that
	// were unreachable; the record stays, so no rebuild brings the dot back,
	// until those copies are dropped.
	Deleted bool
	// Moving names the pool a handoff is bringing the dot to: the claim
	// that lets exactly one node move a dot at a time.
	Moving      string
	MovingSince time.Time
	// Version is the record's resourceVersion: updates compare-and-swap on it.
	Version string
}

// Replica returns the replica record for pool.
func (d *Dot) Replica(pool string) (*Replica, bool) {
	for i := range d.Replicas {
		if d.Replicas[i].Pool == pool {
			return &d.Replicas[i], true
		}
	}
	return nil, false
}

// Lag is how many commits a replica is behind the master.
func (d *Dot) Lag(r Replica) int64 { return d.Seq - r.Seq }

// View is the cluster view.
type View interface {
	// PutPool claims a pool for p.Node, or refreshes the claim (the
	// heartbeat). It fails with ErrHeld while another node holds the pool
	// and was heard from within stale: this is the fence that keeps a pool
	// imported on one node at a time, since ZFS itself (zfs-fuse above all)
	// imports a pool file that another node still has open.
	PutPool(ctx context.Context, p Pool, stale time.Duration) error
	// ReleasePool records that node exported the pool, so another node may
	// import it at once. A pool held by another node is left alone.
	ReleasePool(ctx context.Context, name, node string) error
	// ListPools returns every pool's record, in name order.
	ListPools(ctx context.Context) ([]Pool, error)
	GetPool(ctx context.Context, name string) (Pool, error)
	DeletePool(ctx context.Context, name string) error

	// CreateDot claims a dot's record; ErrExists if it is there.
	CreateDot(ctx context.Context, d Dot) (Dot, error)
	GetDot(ctx context.Context, id string) (Dot, error)
	// ListDots returns every dot's record, tombstones too, in ID order.
	ListDots(ctx context.Context) ([]Dot, error)
	// UpdateDot writes d if its Version is still current, else ErrConflict.
	UpdateDot(ctx context.Context, d Dot) (Dot, error)
	DeleteDot(ctx context.Context, id string) error

	// Event records something a human should see (a failover's loss).
	Event(ctx context.Context, dotID, reason, message string)
}

// released is cur with no holder, if node holds it; false leaves it as is.
func released(cur Pool, node string) (Pool, bool) {
	if cur.Node != node {
		return cur, false
	}
	cur.Node, cur.Address = "", ""
	return cur, true
}

// claimable says whether p may replace the record cur: the pool is free
// (released, or never held), already p.Node's, or its holder has not been
// heard from within stale.
func claimable(cur, p Pool, stale time.Duration) error {
	if cur.Node == "" || cur.Node == p.Node || p.LastHeartbeat.Sub(cur.LastHeartbeat) >= stale {
		return nil
	}
	return fmt.Errorf("pool %s: node %s heard from %s ago (a node may take it after %s): %w",
		p.Name, cur.Node, p.LastHeartbeat.Sub(cur.LastHeartbeat).Round(time.Second), stale, ErrHeld)
}
