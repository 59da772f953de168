package driver_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

const mib = 1 << 20

// rig is a driver over a fake store and a fake mount table, with one
// allowed folder for staging and target paths. Nothing it does needs root
// or ZFS.
type rig struct {
	d       *driver.Driver
	store   *fakeStore
	mounts  *fakeMounter
	allowed string
}

// tank is the default pool: 1 GiB, half of it free, no zvols (zfs-fuse).
var tank = zfsd.PoolInfo{Name: "tank", Node: "node0", Size: 1024 * mib, Available: 512 * mib}

func newRig(t *testing.T, cfg driver.Config, pools ...zfsd.PoolInfo) *rig {
	t.Helper()
	if len(pools) == 0 {
		pools = []zfsd.PoolInfo{tank}
	}
	devDir := t.TempDir()
	mounts := newFakeMounter(devDir)
	store := newFakeStore(mounts, devDir, pools...)
	allowed := t.TempDir()
	if cfg.NodeID == "" {
		cfg.NodeID = "node0"
	}
	cfg.AllowedTargetDirs = []string{allowed}
	if cfg.DefaultCapacity == 0 {
		cfg.DefaultCapacity = 64 * mib
	}
	cfg.Mounter = mounts
	return &rig{d: driver.New(cfg, store), store: store, mounts: mounts, allowed: allowed}
}

func volCap(block bool, mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
	if block {
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
	}
	return c
}

var (
	fsCap    = volCap(false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	blockCap = volCap(true, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
)

// mustCreate makes a volume through CreateVolume and returns its ID.
func (r *rig) mustCreate(t *testing.T, name string, size int64, c *csi.VolumeCapability) string {
	t.Helper()
	resp, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: name,
		VolumeCapabilities: []*csi.VolumeCapability{c}, CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return resp.GetVolume().GetVolumeId()
}

func (r *rig) mustSnapshot(t *testing.T, name, volume string) *csi.Snapshot {
	t.Helper()
	resp, err := r.d.CreateSnapshot(t.Context(), &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: volume})
	if err != nil {
		t.Fatalf("CreateSnapshot %s of %s: %v", name, volume, err)
	}
	return resp.GetSnapshot()
}

func (r *rig) dotCount() int {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	return len(r.store.dots)
}

func (r *rig) dot(t *testing.T, id string) zfsd.Dot {
	t.Helper()
	d, err := r.store.GetDot(context.Background(), id)
	if err != nil {
		t.Fatalf("the store has no dot %s: %v", id, err)
	}
	return d
}

// table is a copy of the whole fake mount table, to compare before and
// after a refused call.
func (r *rig) table() []mountinfo.Mount {
	ms, _ := r.mounts.Mounts()
	return ms
}

func (r *rig) path(parts ...string) string {
	return filepath.Join(append([]string{r.allowed}, parts...)...)
}

// staged is a filesystem volume staged and published through the driver.
type staged struct{ id, staging, target string }

func (r *rig) stageAndPublish(t *testing.T, name string) staged {
	t.Helper()
	v := staged{id: r.mustCreate(t, name, 16*mib, fsCap), staging: r.path("staging", name), target: r.path("pods", name, "mount")}
	ctx := t.Context()
	if _, err := r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: fsCap}); err != nil {
		t.Fatalf("stage %s: %v", name, err)
	}
	if _, err := r.d.NodePublishVolume(ctx, publishReq(v.id, v.staging, v.target, fsCap)); err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	return v
}

func publishReq(id, staging, target string, c *csi.VolumeCapability) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}
}

// wantCode fails the test unless err has code want and its message names
// every one of parts.
func wantCode(t *testing.T, call string, err error, want codes.Code, parts ...string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: %v, want %s", call, err, want)
		return
	}
	for _, p := range parts {
		if msg := status.Convert(err).Message(); !strings.Contains(msg, p) {
			t.Errorf("%s: message %q does not name %q", call, msg, p)
		}
	}
}

// sameTable fails the test when a call changed the mount table.
func sameTable(t *testing.T, call string, before, after []mountinfo.Mount) {
	t.Helper()
	if !slices.EqualFunc(before, after, func(a, b mountinfo.Mount) bool { return a.ID == b.ID && a.Options == b.Options }) {
		t.Errorf("%s changed the mount table:\nbefore %+v\nafter  %+v", call, before, after)
	}
}
