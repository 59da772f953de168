package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	caps := wrapEach(func(t csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
		return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
	}, csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER)
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.cfg.NodeID,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: d.cfg.NodeID}},
	}, nil
}

// NodeStageVolume mounts the dot's filesystem at the staging path itself
// (see zfsd.Pool.StageDot); a block dot is only made ready.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	staging, err := d.volumePath(id, "staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	if req.GetVolumeCapability() == nil {
		return nil, invalidf("volume capability is required")
	}
	pools, err := d.pools(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkCapability(req.GetVolumeCapability(), anyZvols(pools)); err != nil {
		return nil, err
	}
	// A block volume's staging path is never mounted on; a filesystem's is.
	if req.GetVolumeCapability().GetMount() != nil {
		if err := checkFolder("staging target path", staging); err != nil {
			return nil, err
		}
	}
	dot, rel, err := d.lockDot(ctx, lockKey(lockVolume, id, staging), id, req.GetVolumeCapability(), "staged")
	if err != nil {
		return nil, err
	}
	defer rel()
	if dot.Block {
		// A block volume is published straight from its device; staging
		// only makes it local (a handoff, in a cluster) and ready.
		dev, err := d.store.MountDot(ctx, id)
		if err != nil {
			return nil, toStatus(err)
		}
		klog.V(2).InfoS("block volume staged", "volume", id, "device", dev)
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := d.store.StageDot(ctx, id, staging); err != nil {
		return nil, toStatus(err)
	}
	klog.V(2).InfoS("volume staged", "volume", id, "staging", staging)
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume unmounts the dot from the staging path, its only mount
// while staged, so it can be destroyed or handed off. Only mounts of the
// named volume are touched.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	staging, err := d.unmountAt(id, "staging target path", req.GetStagingTargetPath(), lockVolume, func(staging string) error {
		// Another volume's mount at the path is refused before the store
		// is asked to unstage anything.
		if err := d.onlyVolumeAt("staging target path", id, staging); err != nil {
			return err
		}
		if !isDotID(id) {
			return nil
		}
		if err := d.store.UnstageDot(ctx, id, staging); err != nil && !isNotFound(err) {
			return toStatus(fmt.Errorf("volume %s: unstaging %s: %w", id, staging, err))
		}
		// What the store left there (a dead or stacked mount of the
		// volume) goes too.
		return nil
	})
	if err != nil {
		return nil, err
	}
	klog.V(2).InfoS("volume unstaged", "volume", id, "staging", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id := req.GetVolumeId()
	target, err := d.volumePath(id, "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	staging, err := d.checkPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	capability := req.GetVolumeCapability()
	if capability == nil {
		return nil, invalidf("volume capability is required")
	}
	// Whether this ZFS has zvols was settled when the volume was made; here
	// only the capability's shape is checked, and below its kind.
	if err := checkCapability(capability, true); err != nil {
		return nil, err
	}
	if err := checkTargetKind(target, capability.GetBlock() != nil); err != nil {
		return nil, err
	}
	dot, rel, err := d.lockDot(ctx, lockKey(lockTarget, id, target), id, capability, "published")
	if err != nil {
		return nil, err
	}
	defer rel()
	readOnly := req.GetReadonly() || capability.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if dot.Block {
		return d.publishBlock(ctx, id, target, readOnly, mode(capability))
	}
	sm, err := d.stagedAt(id, staging)
	if err != nil {
		return nil, err
	}
	mounts, err := d.mounter.Mounts()
	if err != nil {
		return nil, statusf(codes.Internal, "reading mounts: %v", err)
	}
	mode := capability.GetAccessMode().GetMode()
	if mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		// Every mount of the dot's filesystem other than the staging path
		// (its only mount while staged) and this target is another
		// publication.
		for _, o := range mounts {
			if o.Major == sm.Major && o.Minor == sm.Minor && o.MountPoint != staging && o.MountPoint != target {
				return nil, statusf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", id, o.MountPoint)
			}
		}
	}
	// A bind of the volume left dead at the target (zfs-fuse restarted
	// under it) would pass for published; it goes, and is bound afresh.
	if _, _, err := d.mounter.DetachDead(target, volumeMount(id)); err != nil {
		return nil, statusf(codes.Internal, "volume %s: target %s: %v", id, target, err)
	}
	if err := d.mounter.Bind(staging, target, readOnly); err != nil {
		if errors.Is(err, mountinfo.ErrMountedElsewhere) {
			return nil, statusf(codes.AlreadyExists, "volume %s: target %s holds another mount", id, target)
		}
		return nil, statusf(codes.Internal, "volume %s: publishing at %s: %v", id, target, err)
	}
	klog.V(2).InfoS("volume published", "volume", id, "target", target, "readOnly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	target, err := d.unmountAt(id, "target path", req.GetTargetPath(), lockTarget, nil)
	if err != nil {
		return nil, err
	}
	// The SP removes what it created at the target path; a non-empty or
	// missing folder is left as it is.
	if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
		klog.V(4).InfoS("target path kept", "path", target, "err", err)
	}
	klog.V(2).InfoS("volume unpublished", "volume", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id := req.GetVolumeId()
	dot, p, err := d.servedAt(ctx, id, req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if dot.Block {
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: dot.Capacity}}}, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Clean(p), &st); err != nil {
		return nil, statusf(codes.Internal, "volume %s: statfs %s: %v", id, p, err)
	}
	bs := int64(st.Bsize)
	total, free, avail := int64(st.Blocks)*bs, int64(st.Bfree)*bs, int64(st.Bavail)*bs
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: total, Available: avail, Used: total - free},
		{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files) - int64(st.Ffree)},
	}}, nil
}

// NodeExpandVolume has nothing to do: refquota grows the filesystem online
// in ControllerExpandVolume. It reports the size the node sees.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	dot, _, err := d.servedAt(ctx, req.GetVolumeId(), req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: dot.Capacity}, nil
}

// volumePath checks a Node call's volume ID and one of its paths, and
// returns the path cleaned.
func (d *Driver) volumePath(id, kind, path string) (string, error) {
	if err := checkID("volume", id); err != nil {
		return "", err
	}
	return d.checkPath(kind, path)
}

// lockScope says what a Node call holds its in-flight lock on.
type lockScope int

const (
	// lockVolume: staging is one per volume on a node.
	lockVolume lockScope = iota
	// lockTarget: one volume may be published at several targets at once.
	lockTarget
)

func lockKey(scope lockScope, id, path string) string {
	if scope == lockTarget {
		return "publish/" + path
	}
	return "volume/" + id
}

// unmountAt is what NodeUnstageVolume and NodeUnpublishVolume share:
// under the call's in-flight lock, first runs (when given), then volume
// id's mounts at path go and anything else there stays. It returns the
// path cleaned.
func (d *Driver) unmountAt(id, kind, path string, scope lockScope, first func(clean string) error) (string, error) {
	clean, err := d.volumePath(id, kind, path)
	if err != nil {
		return "", err
	}
	rel, err := d.lockOrAbort(lockKey(scope, id, clean))
	if err != nil {
		return "", err
	}
	defer rel()
	if first != nil {
		if err := first(clean); err != nil {
			return "", err
		}
	}
	return clean, d.unmountVolume(kind, id, clean)
}

// servedAt checks a call about a volume at one of its paths: the dot, and
// the path cleaned, which must be one of the volume's own (volumeAt).
func (d *Driver) servedAt(ctx context.Context, id, path string) (zfsd.Dot, string, error) {
	if err := checkID("volume", id); err != nil {
		return zfsd.Dot{}, "", err
	}
	if path == "" {
		return zfsd.Dot{}, "", invalidf("volume path is required")
	}
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		return zfsd.Dot{}, "", toStatus(err)
	}
	p, err := d.volumeAt(id, path)
	return dot, p, err
}

// publishBlock binds a block dot's device onto a file at the target path.
// The dot's device is found afresh (MountDot is idempotent for block dots).
func (d *Driver) publishBlock(ctx context.Context, id, target string, readOnly bool, m csi.VolumeCapability_AccessMode_Mode) (*csi.NodePublishVolumeResponse, error) {
	dev, err := d.store.MountDot(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if m == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		// A bind of a device node shows in mountinfo as the device
		// filesystem's mount with the node's name as its root.
		real, err := filepath.EvalSymlinks(dev)
		if err != nil {
			return nil, statusf(codes.Internal, "volume %s: device %s: %v", id, dev, err)
		}
		mounts, err := d.mounter.Mounts()
		if err != nil {
			return nil, statusf(codes.Internal, "reading mounts: %v", err)
		}
		for _, o := range mounts {
			if o.Root == "/"+filepath.Base(real) && o.FSType == "devtmpfs" && o.MountPoint != filepath.Clean(target) {
				return nil, statusf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", id, o.MountPoint)
			}
		}
	}
	if err := d.mounter.BindFile(dev, target, readOnly); err != nil {
		if errors.Is(err, mountinfo.ErrMountedElsewhere) {
			return nil, statusf(codes.AlreadyExists, "volume %s: target %s holds another mount", id, target)
		}
		return nil, statusf(codes.Internal, "volume %s: publishing device %s at %s: %v", id, dev, target, err)
	}
	klog.V(2).InfoS("block volume published", "volume", id, "device", dev, "target", target, "readOnly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

func mode(c *csi.VolumeCapability) csi.VolumeCapability_AccessMode_Mode {
	return c.GetAccessMode().GetMode()
}

// volumeMount returns the test the Node calls use to act only on the
// volume they name: is m a mount of volume id? A filesystem dot's mounts
// (its staging mount and the binds of it, which keep the source) show its
// dataset <pool>/dots/<id>, on any of the node's pools. A block dot's
// publication is a bind of its zvol's device node, which shows as the
// device filesystem with the node's name as its root. Nothing is a mount
// of an ID that is not a dot ID.
func volumeMount(id string) func(mountinfo.Mount) bool {
	if !isDotID(id) {
		return func(mountinfo.Mount) bool { return false }
	}
	suffix := "/dots/" + id
	devices := zvolNodes(id)
	return func(m mountinfo.Mount) bool {
		switch m.FSType {
		case "zfs", "fuse.zfs":
			pool, ok := strings.CutSuffix(m.Source, suffix)
			return ok && pool != "" && !strings.Contains(pool, "/")
		case "devtmpfs":
			return devices[m.Root]
		}
		return false
	}
}

// zvolNodes returns, as mountinfo roots ("/zd0"), the device nodes of
// volume id's zvols on this node's pools; none where zvols do not exist.
func zvolNodes(id string) map[string]bool {
	links, _ := filepath.Glob("/dev/zvol/*/dots/" + id)
	out := map[string]bool{}
	for _, l := range links {
		if real, err := filepath.EvalSymlinks(l); err == nil {
			out["/"+filepath.Base(real)] = true
		}
	}
	return out
}

// onlyVolumeAt refuses a path holding any mount that is not volume id's.
func (d *Driver) onlyVolumeAt(kind, id, path string) error {
	stack, err := d.mounter.StackAt(path)
	if err != nil {
		return statusf(codes.Internal, "volume %s: %s %s: %v", id, kind, path, err)
	}
	ours := volumeMount(id)
	for _, m := range stack {
		if !ours(m) {
			return notOurs(kind, id, path, m)
		}
	}
	return nil
}

// unmountVolume unmounts volume id's mounts stacked at path; a mount of
// anything else there is refused and left as it is. Nothing mounted there
// is success, so a retried call finds its work done.
func (d *Driver) unmountVolume(kind, id, path string) error {
	err := d.mounter.UnmountOnly(path, volumeMount(id))
	var foreign *mountinfo.ForeignMountError
	if errors.As(err, &foreign) {
		return notOurs(kind, id, path, foreign.Mount)
	}
	if err != nil {
		return statusf(codes.Internal, "volume %s: unmounting %s %s: %v", id, kind, path, err)
	}
	return nil
}

func notOurs(kind, id, path string, m mountinfo.Mount) error {
	return statusf(codes.FailedPrecondition, "%s %s holds %s, which is not a mount of volume %s; left as it is", kind, path, mountinfo.Describe(m), id)
}

// stagedAt returns volume id's staging mount at path, refusing a path that
// holds nothing, another volume's mount, or a mount of this one that no
// longer answers (binding that would publish a dead mount).
func (d *Driver) stagedAt(id, path string) (mountinfo.Mount, error) {
	stack, err := d.mounter.StackAt(path)
	if err != nil {
		return mountinfo.Mount{}, statusf(codes.Internal, "volume %s: staging target path %s: %v", id, path, err)
	}
	if len(stack) == 0 {
		return mountinfo.Mount{}, statusf(codes.FailedPrecondition, "volume %s is not staged at %s", id, path)
	}
	top := stack[len(stack)-1]
	if !volumeMount(id)(top) {
		return mountinfo.Mount{}, statusf(codes.FailedPrecondition, "volume %s is not staged at %s: it holds %s", id, path, mountinfo.Describe(top))
	}
	if err := d.mounter.CheckAlive(path); errors.Is(err, mountinfo.ErrDeadMount) {
		return mountinfo.Mount{}, statusf(codes.FailedPrecondition, "volume %s: its staging mount at %s is dead (%v); NodeStageVolume mounts it again", id, path, err)
	} else if err != nil {
		return mountinfo.Mount{}, statusf(codes.Internal, "volume %s: staging target path %s: %v", id, path, err)
	}
	return top, nil
}

// volumeAt checks that path is one of volume id's own paths: inside the
// allowed folders and, on top, a mount of the volume (its staging mount or
// a publication). Anything else is NotFound, as the spec has it for a
// volume that does not exist on the given path, so a caller learns nothing
// about other paths.
func (d *Driver) volumeAt(id, path string) (string, error) {
	p, err := d.checkPath("volume path", path)
	if err != nil {
		return "", notFoundf("volume %s is not at %q: %s", id, path, status.Convert(err).Message())
	}
	stack, err := d.mounter.StackAt(p)
	if err != nil {
		return "", statusf(codes.Internal, "volume %s: volume path %s: %v", id, p, err)
	}
	if len(stack) == 0 {
		return "", notFoundf("volume %s is not mounted at %s", id, p)
	}
	if top := stack[len(stack)-1]; !volumeMount(id)(top) {
		return "", notFoundf("volume %s is not mounted at %s: it holds %s", id, p, mountinfo.Describe(top))
	}
	return p, nil
}

// checkFolder refuses a staging or target path that cannot become a mount
// point for a filesystem: something other than a folder, or below one.
// A missing path is fine (it is made), and so is one that cannot be looked
// at because a dead mount is there (the stage or publish heals it).
func checkFolder(kind, p string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, unix.ENOTDIR) {
		return invalidf("%s %s lies below something that is not a folder; a filesystem volume is mounted on a folder", kind, p)
	}
	if err == nil && !fi.IsDir() {
		return invalidf("%s %s is a %s, not a folder; a filesystem volume is mounted on a folder", kind, p, fileKind(fi))
	}
	return nil
}

// checkTargetKind refuses a publish target that cannot take the volume: a
// filesystem needs a folder, a block volume's device is bound onto a file.
func checkTargetKind(target string, block bool) error {
	if !block {
		return checkFolder("target path", target)
	}
	if fi, err := os.Stat(target); err == nil && fi.IsDir() {
		return invalidf("target path %s is a folder; a block volume is published onto a file", target)
	}
	return nil
}

func fileKind(fi os.FileInfo) string {
	switch m := fi.Mode(); {
	case m.IsRegular():
		return "regular file"
	case m&os.ModeDevice != 0:
		return "device"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	}
	return "file"
}
