// Package driver holds the CSI services: identity.go, controller.go and
// node.go. Every call validates its request first, takes a per-ID in-flight
// lock (a duplicate concurrent call is Aborted), and is idempotent. Errors
// become gRPC codes in one place, errors.go.
package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/dotmesh-io/dotmesh-csi/pkg/lock"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// TopologyKey is the topology segment NodeGetInfo reports and CreateVolume
// honours: the node a pool is imported on.
const TopologyKey = "dotmesh.io/node"

// Store is what the services work on: a local *zfsd.Pool in standalone
// mode, a node's zfsd reached over its API, or the whole cluster (pkg/mesh).
// Dots and commits are addressed by ID wherever they live; MountDot makes
// the dot writable on this node first (a handoff, in a cluster).
type Store interface {
	Pools(ctx context.Context) ([]zfsd.PoolInfo, error)
	ListDots(ctx context.Context) ([]zfsd.Dot, error)
	GetDot(ctx context.Context, id string) (zfsd.Dot, error)
	GetDotByName(ctx context.Context, name string) (zfsd.Dot, error)
	CreateDot(ctx context.Context, s zfsd.DotSpec) (zfsd.Dot, error)
	DeleteDot(ctx context.Context, id string) error
	ResizeDot(ctx context.Context, id string, capacity int64) (zfsd.Dot, error)
	ListCommits(ctx context.Context) ([]zfsd.Commit, error)
	GetCommit(ctx context.Context, id string) (zfsd.Commit, error)
	GetCommitByName(ctx context.Context, name string) (zfsd.Commit, error)
	CreateCommit(ctx context.Context, dotID, name string) (zfsd.Commit, error)
	DeleteCommit(ctx context.Context, id string) error
	MountDot(ctx context.Context, id string) (string, error)
	UnmountDot(ctx context.Context, id string) error
	// StageDot mounts a filesystem dot at the staging path itself, and
	// UnstageDot undoes it: the kubelet unstages only once the staged
	// filesystem has no other mount (see zfsd.Pool.StageDot).
	StageDot(ctx context.Context, id, path string) error
	UnstageDot(ctx context.Context, id, path string) error
}

// Config configures the services.
type Config struct {
	Name    string // CSI driver name
	Version string
	NodeID  string
	// AllowedTargetDirs bounds where NodeStage and NodePublish may mount.
	AllowedTargetDirs []string
	// DefaultCapacity is used when a CreateVolume asks for no size.
	DefaultCapacity int64
	// Roaming is cluster mode, where a dot follows its pod: any node can
	// stage it (a handoff brings it), so CreateVolume reports no topology.
	// Kubernetes turns reported topology into the PV's required node
	// affinity, which would pin the pod, and so the dot, to one node.
	Roaming bool
	// Mounter is what the node service mounts and unmounts through; nil
	// is this process's mount namespace (HostMounter). Tests give a fake.
	Mounter Mounter
}

// Driver implements the CSI Identity, Controller and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	cfg      Config
	store    Store
	mounter  Mounter
	inflight *lock.Inflight
}

// New returns a Driver over store.
func New(cfg Config, store Store) *Driver {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.DefaultCapacity == 0 {
		cfg.DefaultCapacity = 1 << 30
	}
	if len(cfg.AllowedTargetDirs) == 0 {
		cfg.AllowedTargetDirs = []string{"/var/lib/kubelet"}
	}
	if cfg.Mounter == nil {
		cfg.Mounter = HostMounter{}
	}
	return &Driver{cfg: cfg, store: store, mounter: cfg.Mounter, inflight: lock.New()}
}

// DefaultName is the driver name in the CSIDriver object.
const DefaultName = "csi.dotmesh.io"

// lockOrAbort takes the in-flight keys or answers Aborted.
func (d *Driver) lockOrAbort(keys ...string) (func(), error) {
	rel := d.inflight.TryAcquire(keys...)
	if rel == nil {
		return nil, abortedf("an operation on %v is already in progress", keys)
	}
	return rel, nil
}

// lockDot takes a call's in-flight lock and finds its dot, refusing a
// capability of the other kind (a block volume to be staged as a
// filesystem, say); verb says what the call does. The caller defers the
// release.
func (d *Driver) lockDot(ctx context.Context, key, id string, c *csi.VolumeCapability, verb string) (zfsd.Dot, func(), error) {
	rel, err := d.lockOrAbort(key)
	if err != nil {
		return zfsd.Dot{}, nil, err
	}
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		rel()
		return zfsd.Dot{}, nil, toStatus(err)
	}
	if block := c.GetBlock() != nil; c != nil && block != dot.Block {
		rel()
		return zfsd.Dot{}, nil, invalidf("volume %s is a %s volume; it cannot be %s as %s", id, kind(dot.Block), verb, kind(block))
	}
	return dot, rel, nil
}

// wrapEach wraps each capability in its service's message.
func wrapEach[T, M any](wrap func(T) M, types ...T) []M {
	out := make([]M, 0, len(types))
	for _, t := range types {
		out = append(out, wrap(t))
	}
	return out
}
