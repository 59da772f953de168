package zfsd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// PoolFile is the name of the pool's single vdev inside its backing folder.
const PoolFile = "dotmesh_data"

// minPoolSize is zfs-fuse's and OpenZFS's floor for a vdev (64 MiB).
const minPoolSize = 64 << 20

// Config says where a pool lives and how it is named.
type Config struct {
	// Name of the pool. It names the backing, not the node, so a pool keeps
	// its identity when its backing moves to another node.
	Name string
	// Dir is the backing folder as this process sees it.
	Dir string
	// HostMountinfo is the mountinfo of a process in the host's mount
	// namespace (with hostPID, /proc/1/mountinfo). When set, Dir is resolved
	// to the path the host (and so the ZFS daemon or kernel) sees, and that
	// path is bind-mounted here too, so `zpool import -d` gets a path that is
	// the same on both sides. Empty means we share the host's namespace.
	HostMountinfo string
	// Size of a new pool file in bytes; 0 sizes it from the folder's free space.
	Size int64
	// MountRoot is where dots are mounted: <MountRoot>/<pool>/dots/<id>.
	MountRoot string
	// Node names the node the pool is imported on, for placement answers.
	Node string
	// ForceImport imports a pool that another host had imported when it
	// was lost (`zpool import -f`). Only for a caller that fenced the pool
	// first (PV-per-node, through the cluster view): ZFS's own check would
	// otherwise refuse every pool whose node died.
	ForceImport bool
}

// Pool is one imported pool and the index of its dots and commits.
type Pool struct {
	cfg      Config
	z        *zfs.Client
	dotsRoot string // <pool>/dots
	hostDir  string // Dir as the host sees it; where the pool file is imported from
	bound    bool   // hostDir is our own bind mount, to remove on Close

	// What this pool and its tools can do, asked once when it opens (see
	// probe): never assumed from which ZFS it is.
	zvols     bool              // zfs create -V (raw block volumes)
	legacy    bool              // mountpoint=legacy and mount -t zfs
	resumable bool              // zfs recv -s and zfs send -t
	features  *zfs.PoolFeatures // nil when the pool could not be asked

	// mu guards the index. ZFS commands run without it.
	mu      sync.Mutex
	dots    map[string]*Dot
	commits map[string]*Commit // by commit ID
	// structMu serialises changes that add or remove dependencies between
	// datasets (branching, committing, deleting, collecting), so a commit
	// is never destroyed while a branch of it is being made, and a dot is
	// never destroyed while a commit of it is being taken.
	structMu sync.Mutex

	// Health (health.go): down is why the pool cannot serve now, nil while
	// it serves. recoverMu lets one Check at a time bring it back.
	healthMu  sync.Mutex
	down      error
	recoverMu sync.Mutex

	// reserveArmed: the delete reserve (reserve.go) holds its space now.
	reserveArmed atomic.Bool
}

// Open imports the pool from cfg.Dir, or creates it there, and loads its
// index. It is safe to call on a pool that is already imported (a driver
// restart that did not export).
func Open(ctx context.Context, z *zfs.Client, cfg Config) (*Pool, error) {
	if err := zfs.ValidatePool(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Dir == "" || !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("pool %s: backing folder %q must be an absolute path", cfg.Name, cfg.Dir)
	}
	if cfg.MountRoot == "" {
		cfg.MountRoot = filepath.Join(cfg.Dir, "mnt")
	}
	p := &Pool{cfg: cfg, z: z, dotsRoot: cfg.Name + "/dots", hostDir: filepath.Clean(cfg.Dir),
		dots: map[string]*Dot{}, commits: map[string]*Commit{}}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("pool %s: backing folder: %w", cfg.Name, err)
	}
	if err := p.resolveHostDir(); err != nil {
		return nil, err
	}
	// Dots mount below a shared mount so unmounts reach mount namespaces
	// created later (containers); otherwise a stale private copy keeps a
	// dataset "busy" for destroy. It must exist before the import mounts
	// anything, or the bind would hide those mounts.
	if err := os.MkdirAll(cfg.MountRoot, 0o750); err != nil {
		p.unbind()
		return nil, fmt.Errorf("pool %s: mount root: %w", cfg.Name, err)
	}
	if err := mountinfo.MakeShared(cfg.MountRoot); err != nil {
		p.unbind()
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	if err := p.importOrCreate(ctx); err != nil {
		p.unbind()
		return nil, err
	}
	if err := p.prepare(ctx); err != nil {
		return nil, err
	}
	p.armReserve(ctx)
	// Before load: what load reads depends on what the tools know.
	p.probe(ctx)
	if err := p.load(ctx); err != nil {
		return nil, err
	}
	if err := p.sweep(ctx); err != nil {
		klog.ErrorS(err, "sweeping pool after open; will retry on the next deletion", "pool", cfg.Name)
	}
	klog.InfoS("pool open", "pool", cfg.Name, "backing", p.hostDir, "dots", len(p.dots), "commits", len(p.commits),
		"zvols", p.zvols, "legacyMounts", p.legacy, "resumableReceive", p.resumable, "compression", p.compression())
	return p, nil
}

// probe asks the tools and the pool what they can do. A probe that fails
// leaves its feature off (or, for compression, unknown, so ZFS itself
// decides) rather than failing the pool.
func (p *Pool) probe(ctx context.Context) {
	p.zvols = p.probeZvols(ctx)
	p.legacy = p.z.LegacyMount()
	if f, err := p.z.GetPoolFeatures(ctx, p.cfg.Name); err != nil {
		klog.ErrorS(err, "reading pool features; compression is left for ZFS to check", "pool", p.cfg.Name)
	} else {
		p.features = &f
	}
	// The kernel keeps a partial receive in fields that need
	// extensible_dataset; the tools must also know the token property.
	if p.features != nil && p.features.Has("extensible_dataset") {
		ok, err := p.z.ResumableReceive(ctx, p.cfg.Name)
		if err != nil {
			klog.ErrorS(err, "asking for resumable receive; streams start over after a break", "pool", p.cfg.Name)
		}
		p.resumable = ok
	}
}

// compression says, for each compression algorithm that needs a pool
// feature, whether this pool has it; nil when the pool could not be asked.
func (p *Pool) compression() map[string]bool {
	if p.features == nil {
		return nil
	}
	m := map[string]bool{}
	for _, algo := range zfs.CompressionAlgorithms() {
		_, feature := zfs.CompressionFeature(algo)
		m[algo] = p.features.Has(feature)
	}
	return m
}

// checkCompression refuses a compression value the pool cannot take,
// before anything is created, naming why.
func (p *Pool) checkCompression(value string) error {
	algo, feature := zfs.CompressionFeature(value)
	if feature == "" || p.features == nil || p.features.Has(feature) {
		return nil
	}
	return fmt.Errorf("parameter compression=%q: pool %s does not support %s compression: %s: %w",
		value, p.cfg.Name, algo, p.features.Why(feature), ErrInvalid)
}

// resolveHostDir makes the backing folder's host-visible path exist in our
// namespace too (the seed's "host-visible bind path").
func (p *Pool) resolveHostDir() error {
	if p.cfg.HostMountinfo == "" {
		return nil
	}
	host, err := mountinfo.HostPath(p.cfg.Dir, "/proc/self/mountinfo", p.cfg.HostMountinfo)
	if err != nil {
		return fmt.Errorf("pool %s: resolving host path of %s: %w", p.cfg.Name, p.cfg.Dir, err)
	}
	if host == filepath.Clean(p.cfg.Dir) {
		return nil
	}
	if err := mountinfo.Bind(p.cfg.Dir, host, false); err != nil {
		return fmt.Errorf("pool %s: binding %s at host path %s: %w", p.cfg.Name, p.cfg.Dir, host, err)
	}
	klog.InfoS("backing folder bound at its host-visible path", "pool", p.cfg.Name, "dir", p.cfg.Dir, "hostPath", host)
	p.hostDir, p.bound = host, true
	return nil
}

func (p *Pool) unbind() {
	if !p.bound {
		return
	}
	if err := mountinfo.Unmount(p.hostDir); err != nil {
		klog.ErrorS(err, "removing host-path bind mount", "pool", p.cfg.Name, "path", p.hostDir)
	}
	p.bound = false
}

func (p *Pool) importOrCreate(ctx context.Context) error {
	name := p.cfg.Name
	imported, err := p.z.PoolImported(ctx, name)
	if err != nil {
		return fmt.Errorf("pool %s: listing pools: %w", name, err)
	}
	if imported {
		klog.InfoS("pool already imported; adopting it", "pool", name)
		return nil
	}
	file := filepath.Join(p.hostDir, PoolFile)
	if _, err := os.Stat(file); err == nil {
		if err := p.z.ImportPool(ctx, name, p.hostDir, p.cfg.ForceImport); err != nil {
			return fmt.Errorf("pool %s: importing from %s: %w", name, p.hostDir, err)
		}
		klog.InfoS("pool imported", "pool", name, "dir", p.hostDir)
		return nil
	}
	size, err := p.newPoolSize()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("pool %s: creating pool file: %w", name, err)
	}
	// Sparse: the file takes space only as the pool fills.
	terr := f.Truncate(size)
	cerr := f.Close()
	if err := errors.Join(terr, cerr); err != nil {
		os.Remove(file)
		return fmt.Errorf("pool %s: sizing pool file: %w", name, err)
	}
	if err := p.z.CreatePool(ctx, name, file, p.mountpoint(), []zfs.Prop{{Name: "canmount", Value: "off"}}); err != nil {
		os.Remove(file)
		return fmt.Errorf("pool %s: creating on %s: %w", name, file, err)
	}
	klog.InfoS("pool created", "pool", name, "file", file, "bytes", size)
	return nil
}

// newPoolSize is the configured size, or 90% of the backing folder's free
// space, leaving room for the filesystem under it.
func (p *Pool) newPoolSize() (int64, error) {
	size := p.cfg.Size
	if size == 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(p.hostDir, &st); err != nil {
			return 0, fmt.Errorf("pool %s: statfs %s: %w", p.cfg.Name, p.hostDir, err)
		}
		size = int64(st.Bavail) * st.Bsize / 10 * 9
	}
	if size < minPoolSize {
		return 0, fmt.Errorf("pool %s: size %d bytes is below the minimum of %d", p.cfg.Name, size, minPoolSize)
	}
	return size, nil
}

func (p *Pool) mountpoint() string { return filepath.Join(p.cfg.MountRoot, p.cfg.Name) }

// prepare makes the pool ready to serve: the dots parent exists and the
// mountpoint names this node's folder (it still names the old node's after
// the backing moved).
func (p *Pool) prepare(ctx context.Context) error {
	ok, err := p.z.Exists(ctx, p.dotsRoot)
	if err != nil {
		return fmt.Errorf("pool %s: %w", p.cfg.Name, err)
	}
	if !ok {
		if err := p.z.Create(ctx, p.dotsRoot, []zfs.Prop{{Name: "canmount", Value: "off"}}); err != nil && !zfs.IsKind(err, zfs.KindAlreadyExists) {
			return fmt.Errorf("pool %s: %w", p.cfg.Name, err)
		}
	}
	ds, err := p.z.Get(ctx, []string{p.cfg.Name}, false, "mountpoint")
	if err != nil {
		return fmt.Errorf("pool %s: %w", p.cfg.Name, err)
	}
	if len(ds) == 1 && ds[0].Props["mountpoint"].Value != p.mountpoint() {
		if err := p.z.Set(ctx, p.cfg.Name, "mountpoint", p.mountpoint()); err != nil {
			return fmt.Errorf("pool %s: %w", p.cfg.Name, err)
		}
	}
	return nil
}

// probeZvols asks the ZFS whether it can make zvols (zfs-fuse cannot; its CLI
// aborts with "Function not implemented" and leaves nothing behind).
func (p *Pool) probeZvols(ctx context.Context) bool {
	probe := p.cfg.Name + "/zvol-probe"
	err := p.z.CreateVolume(ctx, probe, 1<<20, nil)
	if err != nil {
		klog.V(2).InfoS("zvols not available", "pool", p.cfg.Name, "err", err)
		return false
	}
	if err := p.z.Destroy(ctx, probe, false); err != nil {
		klog.ErrorS(err, "destroying zvol probe", "pool", p.cfg.Name)
	}
	return true
}

// PoolInfo is what the controller needs to place and size dots.
type PoolInfo struct {
	Name      string
	Node      string // the node this pool is imported on
	Size      int64  // usable bytes (used + available of the root dataset)
	Available int64
	Zvols     bool // the ZFS can make zvols (raw block volumes)
	// Compression says, for each compression algorithm that needs a pool
	// feature (lz4, zstd), whether this pool has it. Nil when not known
	// (the pool could not be asked, or the cluster view does not carry
	// it); then the pool's own CreateDot decides.
	Compression map[string]bool
}

// CheckCompression refuses a compression value a pool is known not to
// support, so callers can answer before they create or claim anything.
func (i PoolInfo) CheckCompression(value string) error {
	algo, feature := zfs.CompressionFeature(value)
	if feature == "" || i.Compression == nil || i.Compression[algo] {
		return nil
	}
	return fmt.Errorf("parameter compression=%q: pool %s does not support %s compression: %w", value, i.Name, algo, ErrInvalid)
}

// Pools answers for a single pool: itself.
func (p *Pool) Pools(ctx context.Context) ([]PoolInfo, error) {
	i, err := p.Info(ctx)
	if err != nil {
		return nil, err
	}
	return []PoolInfo{i}, nil
}

// Info reports the pool's space; it fails (ErrUnavailable) when the pool
// is no longer imported or its ZFS does not answer.
func (p *Pool) Info(ctx context.Context) (PoolInfo, error) {
	if err := p.available(); err != nil {
		return PoolInfo{}, err
	}
	used, avail, err := p.z.PoolSpace(ctx, p.cfg.Name)
	if err != nil {
		return PoolInfo{}, fmt.Errorf("pool %s: %w", p.cfg.Name, p.unavailableIf(ctx, err))
	}
	return PoolInfo{Name: p.cfg.Name, Node: p.cfg.Node, Size: used + avail, Available: avail, Zvols: p.zvols,
		Compression: p.compression()}, nil
}

// Close exports the pool. It refuses (ErrBusy) while a dot is staged for a
// pod: export would unmount it under the pod, or, on a busy mount, fail
// half-way. The pool then stays imported with its data safe.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	ids := make([]string, 0, len(p.dots))
	for id := range p.dots {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	sort.Strings(ids)
	for _, id := range ids {
		if staged, err := p.Staged(ctx, id); err != nil {
			return fmt.Errorf("pool %s: export: %w", p.cfg.Name, err)
		} else if staged {
			return fmt.Errorf("pool %s: export: dot %s is staged for a pod: %w", p.cfg.Name, id, ErrBusy)
		}
	}
	for _, id := range ids {
		if err := p.unmount(ctx, id); err != nil {
			klog.V(2).InfoS("dot still in use at shutdown", "pool", p.cfg.Name, "dot", id, "err", err)
		}
	}
	err := p.z.ExportPool(ctx, p.cfg.Name)
	if err != nil {
		err = fmt.Errorf("pool %s: export: %w", p.cfg.Name, err)
	} else {
		klog.InfoS("pool exported", "pool", p.cfg.Name)
	}
	if err == nil {
		p.unbind()
	}
	if uerr := mountinfo.Unmount(p.cfg.MountRoot); uerr != nil {
		klog.V(2).InfoS("leaving shared mount root in place", "path", p.cfg.MountRoot, "err", uerr)
	}
	return err
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.cfg.Name }

// Zvols reports whether this ZFS makes zvols (raw block volumes).
func (p *Pool) Zvols() bool { return p.zvols }

// LegacyMounts reports whether dots are mounted with mountpoint=legacy and
// `mount -t zfs` here (OpenZFS), rather than through the mountpoint
// property (zfs-fuse).
func (p *Pool) LegacyMounts() bool { return p.legacy }

// ResumableReceive reports whether an interrupted stream into this pool
// keeps what arrived (`zfs recv -s`) and a stream from it can be resumed
// (`zfs send -t`).
func (p *Pool) ResumableReceive() bool { return p.resumable }
