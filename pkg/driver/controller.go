package driver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := wrapEach(func(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
		return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
	}, csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME)
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if err := validateName("volume", name); err != nil {
		return nil, err
	}
	params, err := volumeParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	pools, err := d.pools(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkCapabilities(req.GetVolumeCapabilities(), anyZvols(pools)); err != nil {
		return nil, err
	}
	src, err := contentSource(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	if _, err := wantsBlock(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	rel, err := d.lockOrAbort("volume-name/" + name)
	if err != nil {
		return nil, err
	}
	defer rel()
	resp, err := d.createVolume(ctx, req, pools, params, src)
	return resp, toStatus(err)
}

// contentSource checks a volume content source and says what to branch.
func contentSource(cs *csi.VolumeContentSource) (zfsd.Source, error) {
	var src zfsd.Source
	switch {
	case cs == nil:
		return src, nil
	case cs.GetSnapshot() != nil:
		src = zfsd.Source{Kind: zfsd.SourceCommit, ID: cs.GetSnapshot().GetSnapshotId()}
	case cs.GetVolume() != nil:
		src = zfsd.Source{Kind: zfsd.SourceDot, ID: cs.GetVolume().GetVolumeId()}
	default:
		return src, invalidf("volume content source has neither a snapshot nor a volume")
	}
	return src, checkID("source "+string(src.Kind), src.ID)
}

func (d *Driver) createVolume(ctx context.Context, req *csi.CreateVolumeRequest, pools []zfsd.PoolInfo, params zfsd.Params, src zfsd.Source) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	block, _ := wantsBlock(req.GetVolumeCapabilities())
	if existing, err := d.store.GetDotByName(ctx, name); err == nil {
		if !fits(existing.Capacity, req.GetCapacityRange()) || existing.Source != src || existing.Block != block ||
			!existing.Params.Equal(params) {
			return nil, statusf(codes.AlreadyExists, "volume %q exists as %s with other arguments (capacity %d, source %q)", name, existing.ID, existing.Capacity, existing.Source)
		}
		return d.volumeResponse(existing, pools, req.GetVolumeContentSource()), nil
	} else if !errors.Is(err, zfsd.ErrNotFound) {
		return nil, err
	}

	// A branch defaults to its source's size; asking for less than the
	// source's data is refused by ZFS and reported as OutOfRange.
	def, near := d.cfg.DefaultCapacity, ""
	switch src.Kind {
	case zfsd.SourceCommit:
		c, err := d.lookupCommit(ctx, src.ID)
		if err != nil {
			return nil, err
		}
		def = c.Size
		if v, err := d.store.GetDot(ctx, c.DotID); err == nil {
			near = v.Pool
		}
	case zfsd.SourceDot:
		v, err := d.lookupDot(ctx, src.ID)
		if err != nil {
			return nil, err
		}
		def, near = v.Capacity, v.Pool
	}
	size, err := capacity(req.GetCapacityRange(), def)
	if err != nil {
		return nil, err
	}
	if block {
		size = blockSize(size)
		if lim := req.GetCapacityRange().GetLimitBytes(); lim > 0 && size > lim {
			return nil, statusf(codes.OutOfRange, "a block volume is a whole number of MiB; none fits between %d and %d bytes", req.GetCapacityRange().GetRequiredBytes(), lim)
		}
	}
	if n := params.Replicas; n > nodeCount(pools) {
		return nil, statusf(codes.ResourceExhausted, "replicas=%d needs pools on %d nodes; %d are available", n, n, nodeCount(pools))
	}
	target, err := place(pools, req.GetAccessibilityRequirements(), size, near)
	if err != nil {
		return nil, err
	}
	spec := zfsd.DotSpec{Pool: target.Name, ID: uuid.NewString(), Name: name, Capacity: size, Params: params, Source: src, Block: block}
	dot, err := d.store.CreateDot(ctx, spec)
	if err != nil {
		return nil, err
	}
	return d.volumeResponse(dot, pools, req.GetVolumeContentSource()), nil
}

// checkSpace refuses a size the pool can never hold (OutOfRange) or cannot
// hold now (ResourceExhausted). grow is what an existing dot already has.
func checkSpace(size, have int64, info zfsd.PoolInfo) error {
	if size > info.Size {
		return statusf(codes.OutOfRange, "%d bytes is more than pool %s can ever hold (%d bytes)", size, info.Name, info.Size)
	}
	if size-have > info.Available {
		return statusf(codes.ResourceExhausted, "pool %s has %d bytes free; %d more are needed", info.Name, info.Available, size-have)
	}
	return nil
}

func (d *Driver) lookupDot(ctx context.Context, id string) (zfsd.Dot, error) {
	if !isDotID(id) {
		return zfsd.Dot{}, notFoundf("volume %q does not exist (not a dot ID)", id)
	}
	return d.store.GetDot(ctx, id)
}

func (d *Driver) lookupCommit(ctx context.Context, id string) (zfsd.Commit, error) {
	if !isCommitID(id) {
		return zfsd.Commit{}, notFoundf("snapshot %q does not exist (not a commit ID)", id)
	}
	return d.store.GetCommit(ctx, id)
}

// volumeResponse describes a dot. On one node its topology is that node;
// a roaming dot has none (see Config.Roaming), and the volume context names
// the pool it was made in.
func (d *Driver) volumeResponse(dot zfsd.Dot, pools []zfsd.PoolInfo, cs *csi.VolumeContentSource) *csi.CreateVolumeResponse {
	v := &csi.Volume{
		VolumeId:      dot.ID,
		CapacityBytes: dot.Capacity,
		ContentSource: cs,
		VolumeContext: map[string]string{"pool": dot.Pool},
	}
	if !d.cfg.Roaming {
		v.AccessibleTopology = []*csi.Topology{{Segments: map[string]string{TopologyKey: nodeOf(pools, dot.Pool)}}}
	}
	return &csi.CreateVolumeResponse{Volume: v}
}

func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := d.deleteByID(ctx, "volume", req.GetVolumeId(), isDotID, d.store.DeleteDot); err != nil {
		return nil, err
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// deleteByID is DeleteVolume and DeleteSnapshot. An ID that was never
// ours (not of the shape ours has) is already gone.
func (d *Driver) deleteByID(ctx context.Context, kind, id string, ours func(string) bool, del func(context.Context, string) error) error {
	if err := checkID(kind, id); err != nil {
		return err
	}
	if !ours(id) {
		return nil
	}
	rel, err := d.lockOrAbort(kind + "/" + id)
	if err != nil {
		return err
	}
	defer rel()
	return toStatus(del(ctx, id))
}

func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalidf("volume capabilities are required")
	}
	dot, err := d.lookupDot(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	pools, err := d.pools(ctx)
	if err != nil {
		return nil, err
	}
	p, _ := poolNamed(pools, dot.Pool)
	if block, err := wantsBlock(req.GetVolumeCapabilities()); err != nil || block != dot.Block {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume %s is a %s volume", id, kind(dot.Block))}, nil
	}
	if err := checkCapabilities(req.GetVolumeCapabilities(), p.Zvols); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if _, err := volumeParams(req.GetParameters()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// page slices a sorted list by a numeric starting token. A token the
// driver never issued is Aborted, as the CSI spec asks.
func page(n int, token string, max int32) (start, end int, next string, err error) {
	if token != "" {
		i, perr := strconv.Atoi(token)
		if perr != nil || i < 0 || i > n {
			return 0, 0, "", abortedf("starting token %q is not valid", token)
		}
		start = i
	}
	if max < 0 {
		return 0, 0, "", invalidf("max_entries %d is negative", max)
	}
	end = n
	if max > 0 && start+int(max) < n {
		end = start + int(max)
		next = strconv.Itoa(end)
	}
	return start, end, next, nil
}

func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	dots, err := d.store.ListDots(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	pools, err := d.pools(ctx)
	if err != nil {
		return nil, err
	}
	start, end, next, err := page(len(dots), req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, dot := range dots[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: d.volumeResponse(dot, pools, nil).Volume})
	}
	return resp, nil
}

func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if _, err := volumeParams(req.GetParameters()); err != nil {
		return nil, err
	}
	pools, err := d.pools(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) > 0 {
		if err := checkCapabilities(req.GetVolumeCapabilities(), anyZvols(pools)); err != nil {
			return &csi.GetCapacityResponse{}, nil
		}
	}
	// KEP-1472: per topology segment, the largest single volume that fits,
	// which is the free space of the emptiest pool there.
	var best int64
	for _, p := range pools {
		if inTopology(p, []*csi.Topology{req.GetAccessibleTopology()}) {
			best = max(best, p.Available)
		}
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: best,
		MaximumVolumeSize: wrapInt64(best),
		MinimumVolumeSize: wrapInt64(minCapacity),
	}, nil
}

func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume", id); err != nil {
		return nil, err
	}
	if req.GetCapacityRange() == nil {
		return nil, invalidf("capacity range is required")
	}
	if cap := req.GetVolumeCapability(); cap != nil {
		if err := checkCapability(cap, true); err != nil {
			return nil, err
		}
	}
	dot, rel, err := d.lockDot(ctx, lockKey(lockVolume, id, ""), id, req.GetVolumeCapability(), "expanded")
	if err != nil {
		return nil, err
	}
	defer rel()
	// Volumes never shrink, so a limit below the current size cannot be met.
	if lim := req.GetCapacityRange().GetLimitBytes(); lim > 0 && dot.Capacity > lim {
		return nil, statusf(outOfRange, "volume %s already has %d bytes, more than the limit of %d; volumes do not shrink", id, dot.Capacity, lim)
	}
	size, err := capacity(req.GetCapacityRange(), dot.Capacity)
	if err != nil {
		return nil, err
	}
	if size > dot.Capacity {
		pools, err := d.pools(ctx)
		if err != nil {
			return nil, err
		}
		info, _ := poolNamed(pools, dot.Pool)
		if err := checkSpace(size, dot.Capacity, info); err != nil {
			return nil, err
		}
		if dot, err = d.store.ResizeDot(ctx, id, size); err != nil {
			return nil, toStatus(err)
		}
	}
	// refquota applies online: the node has nothing to do.
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: dot.Capacity, NodeExpansionRequired: false}, nil
}

func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name := req.GetName()
	if err := validateName("snapshot", name); err != nil {
		return nil, err
	}
	src := req.GetSourceVolumeId()
	if err := checkID("source volume", src); err != nil {
		return nil, err
	}
	if err := snapshotParams(req.GetParameters()); err != nil {
		return nil, err
	}
	rel, err := d.lockOrAbort("snapshot-name/" + name)
	if err != nil {
		return nil, err
	}
	defer rel()
	if c, err := d.store.GetCommitByName(ctx, name); err == nil {
		if c.DotID != src {
			return nil, statusf(codes.AlreadyExists, "snapshot %q exists as %s of volume %s, not of %s", name, c.ID, c.DotID, src)
		}
		return &csi.CreateSnapshotResponse{Snapshot: snapshotOf(c)}, nil
	} else if !errors.Is(err, zfsd.ErrNotFound) {
		return nil, toStatus(err)
	}
	if _, err := d.lookupDot(ctx, src); err != nil {
		return nil, toStatus(err)
	}
	c, err := d.store.CreateCommit(ctx, src, name)
	if err != nil {
		return nil, toStatus(err)
	}
	klog.V(2).InfoS("snapshot created", "snapshot", c.ID, "name", name)
	return &csi.CreateSnapshotResponse{Snapshot: snapshotOf(c)}, nil
}

func snapshotOf(c zfsd.Commit) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     c.ID,
		SourceVolumeId: c.DotID,
		SizeBytes:      c.Size,
		CreationTime:   timestamppb.New(c.Created),
		ReadyToUse:     true,
	}
}

func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if err := d.deleteByID(ctx, "snapshot", req.GetSnapshotId(), isCommitID, d.store.DeleteCommit); err != nil {
		return nil, err
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	var commits []zfsd.Commit
	switch {
	case req.GetSnapshotId() != "":
		c, err := d.lookupCommit(ctx, req.GetSnapshotId())
		switch {
		case err == nil:
			if req.GetSourceVolumeId() == "" || c.DotID == req.GetSourceVolumeId() {
				commits = []zfsd.Commit{c}
			}
		case !isNotFound(err):
			return nil, toStatus(err)
		}
	default:
		all, err := d.store.ListCommits(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		for _, c := range all {
			if req.GetSourceVolumeId() == "" || c.DotID == req.GetSourceVolumeId() {
				commits = append(commits, c)
			}
		}
	}
	start, end, next, err := page(len(commits), req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, c := range commits[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snapshotOf(c)})
	}
	return resp, nil
}

func (d *Driver) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if err := checkID("snapshot", id); err != nil {
		return nil, err
	}
	c, err := d.lookupCommit(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetSnapshotResponse{Snapshot: snapshotOf(c)}, nil
}

func kind(block bool) string {
	if block {
		return "block"
	}
	return "mount"
}
