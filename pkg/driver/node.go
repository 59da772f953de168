package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

var nodeCaps = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

const selfMountinfo = "/proc/self/mountinfo"

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, c := range nodeCaps {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.cfg.NodeID,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: d.cfg.NodeID}},
	}, nil
}

// NodeStageVolume mounts the dot and binds it at the staging path.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	staging, err := d.checkPath("staging target path", req.GetStagingTargetPath())
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
	rel, err := d.lockOrAbort("volume/" + id)
	if err != nil {
		return nil, err
	}
	defer rel()
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if block := req.GetVolumeCapability().GetBlock() != nil; block != dot.Block {
		return nil, invalidf("volume %s is a %s volume; it cannot be staged as %s", id, kind(dot.Block), kind(block))
	}
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

// NodeUnstageVolume removes the staging bind and, when nothing else uses the
// dot on this node, unmounts the dot so it can be destroyed or handed off.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	staging, err := d.checkPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	rel, err := d.lockOrAbort("volume/" + id)
	if err != nil {
		return nil, err
	}
	defer rel()
	if isDotID(id) {
		if err := d.store.UnstageDot(ctx, id, staging); err != nil && !isNotFound(err) {
			return nil, statusf(codes.Internal, "volume %s: unstaging %s: %v", id, staging, err)
		}
	}
	// Whatever else is left there (nothing, normally) goes too.
	if err := mountinfo.Unmount(staging); err != nil {
		return nil, statusf(codes.Internal, "volume %s: unstaging %s: %v", id, staging, err)
	}
	klog.V(2).InfoS("volume unstaged", "volume", id, "staging", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	target, err := d.checkPath("target path", req.GetTargetPath())
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
	rel, err := d.lockOrAbort("publish/" + target)
	if err != nil {
		return nil, err
	}
	defer rel()
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if block := capability.GetBlock() != nil; block != dot.Block {
		return nil, invalidf("volume %s is a %s volume; it cannot be published as %s", id, kind(dot.Block), kind(block))
	}
	readOnly := req.GetReadonly() || capability.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if dot.Block {
		return d.publishBlock(ctx, id, target, readOnly, mode(capability))
	}
	mounts, err := mountinfo.ReadFile(selfMountinfo)
	if err != nil {
		return nil, statusf(codes.Internal, "reading mounts: %v", err)
	}
	sm, ok := mountinfo.IsMountPoint(mounts, staging)
	if !ok {
		return nil, statusf(codes.FailedPrecondition, "volume %s is not staged at %s", id, staging)
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
	if err := mountinfo.Bind(staging, target, readOnly); err != nil {
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
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	target, err := d.checkPath("target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	rel, err := d.lockOrAbort("publish/" + target)
	if err != nil {
		return nil, err
	}
	defer rel()
	if err := mountinfo.Unmount(target); err != nil {
		return nil, statusf(codes.Internal, "volume %s: unpublishing %s: %v", id, target, err)
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
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	p := req.GetVolumePath()
	if p == "" {
		return nil, invalidf("volume path is required")
	}
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := os.Stat(p); err != nil {
		return nil, notFoundf("volume %s: path %s: %v", id, p, err)
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
	id := req.GetVolumeId()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	if req.GetVolumePath() == "" {
		return nil, invalidf("volume path is required")
	}
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := os.Stat(req.GetVolumePath()); err != nil {
		return nil, notFoundf("volume %s: path %s: %v", id, req.GetVolumePath(), err)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: dot.Capacity}, nil
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
		mounts, err := mountinfo.ReadFile(selfMountinfo)
		if err != nil {
			return nil, statusf(codes.Internal, "reading mounts: %v", err)
		}
		for _, o := range mounts {
			if o.Root == "/"+filepath.Base(real) && o.FSType == "devtmpfs" && o.MountPoint != filepath.Clean(target) {
				return nil, statusf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", id, o.MountPoint)
			}
		}
	}
	if err := mountinfo.BindFile(dev, target, readOnly); err != nil {
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
