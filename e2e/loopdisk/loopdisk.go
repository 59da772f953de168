// Package loopdisk is a test-only CSI driver that plays a cloud disk
// service for the PV-per-node tests: a volume is an ext4 filesystem in a
// file in a folder every node sees, attached (ControllerPublish) to one
// node at a time, loop-mounted there (NodeStage) and re-attachable
// elsewhere once detached. Like a cloud disk it refuses a second
// attachment instead of trusting the caller, so a test that forgets a
// detach fails loudly.
package loopdisk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

// Name is the driver's CSI name.
const Name = "loopdisk.e2e.dotmesh.io"

// Driver serves Identity, Controller and Node over one shared folder.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	Dir    string // the shared folder holding <id>.img, <id>.name and <id>.attached
	NodeID string
	// Nodes are the node IDs ControllerPublish accepts; empty means only
	// NodeID, unless AnyNode (a cluster whose nodes come and go).
	Nodes   []string
	AnyNode bool
	mu      sync.Mutex // one call at a time: this is a test double, not a fast one
}

func (d *Driver) knownNode(node string) bool {
	if d.AnyNode {
		return true
	}
	if len(d.Nodes) == 0 {
		return node == d.NodeID
	}
	for _, n := range d.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

func (d *Driver) path(id, ext string) string { return filepath.Join(d.Dir, id+ext) }

func volumeID(name string) string {
	h := sha256.Sum256([]byte(name))
	return "ld-" + hex.EncodeToString(h[:8])
}

func validID(id string) error {
	if !strings.HasPrefix(id, "ld-") || len(id) != 19 || strings.ContainsAny(id, "/.") {
		return status.Errorf(codes.NotFound, "volume %q is not a loop disk", id)
	}
	return nil
}

// goneAlready checks the volume ID of a call that removes something: an ID
// this driver could never have made names nothing, so there is nothing left
// to remove and the call succeeds, as CSI wants of a repeated delete.
func goneAlready(id string) (bool, error) {
	if id == "" {
		return false, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	return validID(id) != nil, nil
}

func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: Name, VendorVersion: "test"}, nil
}

func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}}}}, nil
}

func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func rpcCap(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
	return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
}

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		rpcCap(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME),
		rpcCap(csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME),
	}}, nil
}

func checkCaps(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	for _, c := range caps {
		if c.GetMount() == nil {
			return status.Error(codes.InvalidArgument, "only the mount access type")
		}
		if m := c.GetAccessMode().GetMode(); m != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER &&
			m != csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER && m != csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER {
			return status.Errorf(codes.InvalidArgument, "access mode %s: a loop disk is attached to one node", m)
		}
	}
	return nil
}

func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if err := checkCaps(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	size := req.GetCapacityRange().GetRequiredBytes()
	if size == 0 {
		size = 64 << 20
	}
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && size > limit {
		return nil, status.Errorf(codes.OutOfRange, "%d bytes rounded to whole MiB exceed the limit %d", size, limit)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	id := volumeID(req.GetName())
	img := d.path(id, ".img")
	if st, err := os.Stat(img); err == nil {
		if st.Size() != size {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with %d bytes, not %d", req.GetName(), st.Size(), size)
		}
		return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, CapacityBytes: size}}, nil
	}
	tmp := img + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	err = errors.Join(f.Truncate(size), f.Close())
	if err == nil {
		err = run(ctx, "mkfs.ext4", "-q", "-F", tmp)
	}
	if err == nil {
		err = errors.Join(os.WriteFile(d.path(id, ".name"), []byte(req.GetName()), 0o644), os.Rename(tmp, img))
	}
	if err != nil {
		os.Remove(tmp)
		return nil, status.Errorf(codes.Internal, "making loop disk %s: %v", id, err)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, CapacityBytes: size}}, nil
}

func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if gone, err := goneAlready(id); gone || err != nil {
		return &csi.DeleteVolumeResponse{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if node, err := os.ReadFile(d.path(id, ".attached")); err == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is attached to %s", id, node)
	}
	for _, ext := range []string{".img", ".name"} {
		if err := os.Remove(d.path(id, ext)); err != nil && !os.IsNotExist(err) {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	if err := validID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if _, err := os.Stat(d.path(req.GetVolumeId(), ".img")); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", req.GetVolumeId(), err)
	}
	if err := checkCaps(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities()}}, nil
}

// ControllerPublishVolume attaches: it records the node in <id>.attached,
// created exclusively, so a second node is refused until a detach.
func (d *Driver) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, node := req.GetVolumeId(), req.GetNodeId()
	if id == "" || node == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume ID, node ID and capability are required")
	}
	if err := validID(id); err != nil {
		return nil, err
	}
	if !d.knownNode(node) {
		return nil, status.Errorf(codes.NotFound, "node %q unknown", node)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := os.Stat(d.path(id, ".img")); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", id, err)
	}
	f, err := os.OpenFile(d.path(id, ".attached"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, os.ErrExist) {
		cur, _ := os.ReadFile(d.path(id, ".attached"))
		if string(cur) == node {
			return &csi.ControllerPublishVolumeResponse{}, nil
		}
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is attached to %s; detach it first", id, cur)
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	_, werr := f.WriteString(node)
	if err := errors.Join(werr, f.Close()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.ControllerPublishVolumeResponse{}, nil
}

func (d *Driver) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if gone, err := goneAlready(id); gone || err != nil {
		return &csi.ControllerUnpublishVolumeResponse{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, err := os.ReadFile(d.path(id, ".attached"))
	if os.IsNotExist(err) {
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	if req.GetNodeId() != "" && string(cur) != req.GetNodeId() {
		return &csi.ControllerUnpublishVolumeResponse{}, nil // attached elsewhere: not ours to undo
	}
	if err := os.Remove(d.path(id, ".attached")); err != nil && !os.IsNotExist(err) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.NodeID}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{Type: &csi.NodeServiceCapability_Rpc{
		Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}}}}, nil
}

// NodeStageVolume loop-mounts the disk, but only on the node it is
// attached to: the file is on a shared folder, so nothing else would stop
// two nodes mounting one ext4 at once.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" || staging == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume ID, staging path and capability are required")
	}
	if err := validID(id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, err := os.ReadFile(d.path(id, ".attached")); err != nil || string(cur) != d.NodeID {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not attached to %s (attached: %q)", id, d.NodeID, cur)
	}
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if _, ok := mountinfo.IsMountPoint(mounts, staging); ok {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// Like a cloud disk's device node, one loop device per disk and node:
	// a disk still held open here (by a bind of an earlier mount) is
	// mounted again from the same device, so the kernel shares the one
	// ext4 instead of mounting it twice through two devices.
	dev, err := d.loopDevice(ctx, id)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "attaching %s: %v", id, err)
	}
	if err := unix.Mount(dev, staging, "ext4", 0, ""); err != nil {
		_ = run(ctx, "losetup", "-d", dev)
		return nil, status.Errorf(codes.Internal, "mounting %s (%s) at %s: %v", id, dev, staging, err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// loopDevice is the loop device of the disk's file, set up if there is none.
func (d *Driver) loopDevice(ctx context.Context, id string) (string, error) {
	if out, err := output(ctx, "losetup", "-j", d.path(id, ".img")); err == nil {
		if dev, _, ok := strings.Cut(out, ":"); ok {
			return dev, nil
		}
	}
	return output(ctx, "losetup", "-f", "--show", d.path(id, ".img"))
}

func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and staging path are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := mountinfo.Unmount(staging); err != nil {
		return nil, status.Errorf(codes.Internal, "unmounting %s: %v", staging, err)
	}
	if validID(id) == nil {
		// Unmounting the last mount does not free the loop device by itself.
		if out, err := output(ctx, "losetup", "-j", d.path(id, ".img")); err == nil {
			for _, line := range strings.Split(out, "\n") {
				if dev, _, ok := strings.Cut(line, ":"); ok {
					_ = run(ctx, "losetup", "-d", dev)
				}
			}
		}
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" || req.GetTargetPath() == "" || req.GetStagingTargetPath() == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume ID, staging and target paths and capability are required")
	}
	if err := validID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := mountinfo.Bind(req.GetStagingTargetPath(), req.GetTargetPath(), req.GetReadonly()); err != nil {
		return nil, status.Errorf(codes.Internal, "publishing %s: %v", req.GetVolumeId(), err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" || req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and target path are required")
	}
	if err := mountinfo.Unmount(req.GetTargetPath()); err != nil {
		return nil, status.Errorf(codes.Internal, "unpublishing %s: %v", req.GetVolumeId(), err)
	}
	// The CO made the target's parent; the target itself is ours to remove.
	if err := os.Remove(req.GetTargetPath()); err != nil && !os.IsNotExist(err) {
		return nil, status.Errorf(codes.Internal, "unpublishing %s: %v", req.GetVolumeId(), err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}
