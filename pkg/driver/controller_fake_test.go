package driver_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// pool1 is a second node's pool: bigger, but with less free.
var pool1 = zfsd.PoolInfo{Name: "pool1", Node: "node1", Size: 2048 * mib, Available: 256 * mib}

func withZvols(p zfsd.PoolInfo) zfsd.PoolInfo { p.Zvols = true; return p }

func TestCreateVolumeRefusesBadRequestsAndMakesNothing(t *testing.T) {
	r := newRig(t, driver.Config{}, withZvols(tank))
	caps := []*csi.VolumeCapability{fsCap}
	snapSource := func(id string) *csi.VolumeContentSource {
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
	}
	for _, c := range []struct {
		name string
		req  *csi.CreateVolumeRequest
		want codes.Code
		says string
	}{
		{"no name", &csi.CreateVolumeRequest{VolumeCapabilities: caps}, codes.InvalidArgument, "name is required"},
		{"a space in the name", &csi.CreateVolumeRequest{Name: "a b", VolumeCapabilities: caps}, codes.InvalidArgument, "not allowed"},
		{"a name too long", &csi.CreateVolumeRequest{Name: strings.Repeat("a", 129), VolumeCapabilities: caps}, codes.InvalidArgument, "129 bytes"},
		{"unknown parameter", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, Parameters: map[string]string{"speed": "fast"}}, codes.InvalidArgument, "speed"},
		{"bad cloneMode", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, Parameters: map[string]string{"cloneMode": "copy"}}, codes.InvalidArgument, "cloneMode"},
		{"bad compression", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, Parameters: map[string]string{"compression": "snappy"}}, codes.InvalidArgument, "compression"},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "v"}, codes.InvalidArgument, "capabilities are required"},
		{"a nil capability", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{nil}}, codes.InvalidArgument, "empty"},
		{"no access type", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{{AccessMode: fsCap.AccessMode}}}, codes.InvalidArgument, "no access type"},
		{"fsType ext4", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}}, AccessMode: fsCap.AccessMode}}}, codes.InvalidArgument, "ext4"},
		{"no access mode", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{{AccessType: fsCap.AccessType}}}, codes.InvalidArgument, "no access mode"},
		{"unknown access mode", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{volCap(false, csi.VolumeCapability_AccessMode_UNKNOWN)}}, codes.InvalidArgument, "unknown"},
		{"multi-node", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{volCap(false, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}}, codes.InvalidArgument, "one node"},
		{"block and mount", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{fsCap, blockCap}}, codes.InvalidArgument, "not both"},
		{"source without a snapshot ID", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, VolumeContentSource: snapSource("")}, codes.InvalidArgument, "source snapshot ID"},
		{"source of neither kind", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, VolumeContentSource: &csi.VolumeContentSource{}}, codes.InvalidArgument, "neither"},
		{"source volume ID empty", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, VolumeContentSource: &csi.VolumeContentSource{
			Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{}}}}, codes.InvalidArgument, "source volume ID"},
		{"source snapshot not a commit ID", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, VolumeContentSource: snapSource("../x")}, codes.NotFound, "not a commit ID"},
		{"source snapshot unknown", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, VolumeContentSource: snapSource(uuid.NewString() + "@" + uuid.NewString())}, codes.NotFound, ""},
		{"negative size", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, CapacityRange: &csi.CapacityRange{RequiredBytes: -1}}, codes.InvalidArgument, "negative"},
		{"required above limit", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, CapacityRange: &csi.CapacityRange{RequiredBytes: 5 * mib, LimitBytes: 4 * mib}}, codes.OutOfRange, "above the limit"},
		{"limit below the minimum", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, CapacityRange: &csi.CapacityRange{LimitBytes: 100}}, codes.OutOfRange, "minimum"},
		{"more than any pool holds", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, CapacityRange: &csi.CapacityRange{RequiredBytes: 4096 * mib}}, codes.OutOfRange, "ever hold"},
		{"more than is free", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, CapacityRange: &csi.CapacityRange{RequiredBytes: 600 * mib}}, codes.ResourceExhausted, "bytes free"},
		{"more replicas than nodes", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, Parameters: map[string]string{"replicas": "2"}}, codes.ResourceExhausted, "replicas=2"},
		{"a block size no MiB fits", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{blockCap},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 5*mib + 1, LimitBytes: 5*mib + 2}}, codes.OutOfRange, "whole number of MiB"},
		{"requisite topology without a pool", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: caps, AccessibilityRequirements: &csi.TopologyRequirement{
			Requisite: []*csi.Topology{{Segments: map[string]string{driver.TopologyKey: "node9"}}}}}, codes.ResourceExhausted, "requisite"},
	} {
		_, err := r.d.CreateVolume(t.Context(), c.req)
		wantCode(t, c.name, err, c.want, c.says)
	}
	if n := r.dotCount(); n != 0 {
		t.Errorf("%d dots made by refused requests", n)
	}
}

func TestCreateVolumeNeedsZvolsForBlock(t *testing.T) {
	r := newRig(t, driver.Config{})
	_, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{blockCap}})
	wantCode(t, "block volume on zfs-fuse", err, codes.InvalidArgument, "zvols")
	if n := r.dotCount(); n != 0 {
		t.Errorf("%d dots made", n)
	}
}

func TestCreateVolumeIsIdempotentAndRefusesOtherArguments(t *testing.T) {
	r := newRig(t, driver.Config{}, withZvols(tank))
	ctx := t.Context()
	params := map[string]string{"compression": "lz4", "csi.storage.k8s.io/pvc/name": "claim"}
	req := &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{fsCap}, Parameters: params,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 16 * mib}}
	first, err := r.d.CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	id := first.GetVolume().GetVolumeId()
	if d := r.dot(t, id); d.Name != "v" || d.Capacity != 16*mib || d.Params.Compression != "lz4" || d.Block || d.Pool != "tank" {
		t.Errorf("dot made: %+v", d)
	}
	again, err := r.d.CreateVolume(ctx, req)
	if err != nil || again.GetVolume().GetVolumeId() != id {
		t.Fatalf("second identical CreateVolume: %v, %v; want volume %s", again, err, id)
	}
	// A range the existing size satisfies is the same request.
	if resp, err := r.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: req.VolumeCapabilities, Parameters: params,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 8 * mib, LimitBytes: 16 * mib}}); err != nil || resp.GetVolume().GetVolumeId() != id {
		t.Errorf("CreateVolume with a range 16 MiB fits: %v, %v", resp, err)
	}

	other := func(change func(*csi.CreateVolumeRequest)) *csi.CreateVolumeRequest {
		c := &csi.CreateVolumeRequest{Name: req.Name, VolumeCapabilities: req.VolumeCapabilities, Parameters: params, CapacityRange: req.CapacityRange}
		change(c)
		return c
	}
	for name, c := range map[string]*csi.CreateVolumeRequest{
		"a larger size":   other(func(c *csi.CreateVolumeRequest) { c.CapacityRange = &csi.CapacityRange{RequiredBytes: 32 * mib} }),
		"a lower limit":   other(func(c *csi.CreateVolumeRequest) { c.CapacityRange = &csi.CapacityRange{LimitBytes: 8 * mib} }),
		"other params":    other(func(c *csi.CreateVolumeRequest) { c.Parameters = map[string]string{"compression": "off"} }),
		"no params":       other(func(c *csi.CreateVolumeRequest) { c.Parameters = nil }),
		"block":           other(func(c *csi.CreateVolumeRequest) { c.VolumeCapabilities = []*csi.VolumeCapability{blockCap} }),
		"a source volume": other(func(c *csi.CreateVolumeRequest) { c.VolumeContentSource = volumeSource(id) }),
	} {
		_, err := r.d.CreateVolume(ctx, c)
		wantCode(t, "CreateVolume v with "+name, err, codes.AlreadyExists, id)
	}
	if n := r.dotCount(); n != 1 {
		t.Errorf("%d dots, want 1", n)
	}
}

func volumeSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

func snapshotSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

func TestCreateVolumeSizeAndPlacement(t *testing.T) {
	near := func(node string) []*csi.Topology {
		return []*csi.Topology{{Segments: map[string]string{driver.TopologyKey: node}}}
	}
	for _, c := range []struct {
		name     string
		r        *csi.CapacityRange
		block    bool
		topology *csi.TopologyRequirement
		size     int64
		pool     string
	}{
		{"no size: the default, on the pool with most free", nil, false, nil, 64 * mib, "tank"},
		{"below the minimum", &csi.CapacityRange{RequiredBytes: 100}, false, nil, 1 * mib, "tank"},
		{"only a limit", &csi.CapacityRange{LimitBytes: 10 * mib}, false, nil, 10 * mib, "tank"},
		{"what only tank has free", &csi.CapacityRange{RequiredBytes: 300 * mib}, false, nil, 300 * mib, "tank"},
		{"requisite node1", nil, false, &csi.TopologyRequirement{Requisite: near("node1")}, 64 * mib, "pool1"},
		{"preferred node1", nil, false, &csi.TopologyRequirement{Requisite: append(near("node0"), near("node1")...), Preferred: near("node1")}, 64 * mib, "pool1"},
		{"preferred node1, where it does not fit", &csi.CapacityRange{RequiredBytes: 300 * mib}, false, &csi.TopologyRequirement{Preferred: near("node1")}, 300 * mib, "tank"},
		{"block, rounded up to whole MiB", &csi.CapacityRange{RequiredBytes: 5*mib + 1}, true, nil, 6 * mib, "tank"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, driver.Config{}, withZvols(tank), withZvols(pool1))
			vc := fsCap
			if c.block {
				vc = blockCap
			}
			resp, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{vc},
				CapacityRange: c.r, AccessibilityRequirements: c.topology})
			if err != nil {
				t.Fatal(err)
			}
			v := resp.GetVolume()
			d := r.dot(t, v.GetVolumeId())
			if v.GetCapacityBytes() != c.size || d.Capacity != c.size || d.Pool != c.pool || d.Block != c.block {
				t.Errorf("volume of %d bytes, dot %+v; want %d bytes on %s", v.GetCapacityBytes(), d, c.size, c.pool)
			}
			wantNode := map[string]string{"tank": "node0", "pool1": "node1"}[c.pool]
			if top := v.GetAccessibleTopology(); len(top) != 1 || top[0].GetSegments()[driver.TopologyKey] != wantNode {
				t.Errorf("topology %v, want %s", top, wantNode)
			}
			if v.GetVolumeContext()["pool"] != c.pool {
				t.Errorf("volume context %v, want pool %s", v.GetVolumeContext(), c.pool)
			}
		})
	}
}

func TestRoamingVolumeReportsNoTopology(t *testing.T) {
	r := newRig(t, driver.Config{Roaming: true}, tank, pool1)
	resp, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{fsCap},
		Parameters: map[string]string{"replicas": "2", "commitInterval": "1m"}})
	if err != nil {
		t.Fatal(err)
	}
	if top := resp.GetVolume().GetAccessibleTopology(); len(top) != 0 {
		t.Errorf("a roaming volume reports topology %v", top)
	}
	if resp.GetVolume().GetVolumeContext()["pool"] != "tank" {
		t.Errorf("volume context %v", resp.GetVolume().GetVolumeContext())
	}
}

func TestCreateVolumeFromASnapshotOrVolume(t *testing.T) {
	r := newRig(t, driver.Config{}, tank, pool1)
	ctx := t.Context()
	// The source lives on pool1, which has less free: a branch goes there
	// all the same, since an instant clone needs its origin.
	src, err := r.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "src", VolumeCapabilities: []*csi.VolumeCapability{fsCap},
		CapacityRange:             &csi.CapacityRange{RequiredBytes: 24 * mib},
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{driver.TopologyKey: "node1"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	srcID := src.GetVolume().GetVolumeId()
	snap := r.mustSnapshot(t, "snap", srcID)

	for _, c := range []struct {
		name   string
		source *csi.VolumeContentSource
		want   string
	}{
		{"from-snapshot", snapshotSource(snap.GetSnapshotId()), "snapshot:" + snap.GetSnapshotId()},
		{"from-volume", volumeSource(srcID), "volume:" + srcID},
	} {
		resp, err := r.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: c.name, VolumeCapabilities: []*csi.VolumeCapability{fsCap},
			VolumeContentSource: c.source, Parameters: map[string]string{"cloneMode": "detached"}})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		d := r.dot(t, resp.GetVolume().GetVolumeId())
		if d.Source.String() != c.want || d.Pool != "pool1" || d.Capacity != 24*mib {
			t.Errorf("%s: dot %+v; want source %s on pool1 with the source's 24 MiB", c.name, d, c.want)
		}
		if !proto.Equal(resp.GetVolume().GetContentSource(), c.source) {
			t.Errorf("%s: content source not echoed: %v", c.name, resp.GetVolume().GetContentSource())
		}
		// The same name with another source is another volume.
		_, err = r.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: c.name, VolumeCapabilities: []*csi.VolumeCapability{fsCap}})
		wantCode(t, c.name+" again without a source", err, codes.AlreadyExists)
	}
	for name, id := range map[string]string{"not a dot ID": "vol-1", "unknown": uuid.NewString()} {
		_, err := r.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "x", VolumeCapabilities: []*csi.VolumeCapability{fsCap}, VolumeContentSource: volumeSource(id)})
		wantCode(t, "branch of a volume "+name, err, codes.NotFound)
	}

	// The store refuses a branch too small for its commit's data.
	r.store.mu.Lock()
	c := r.store.commits[snap.GetSnapshotId()]
	c.Used = 20 * mib
	r.store.commits[c.ID] = c
	r.store.mu.Unlock()
	_, err = r.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "small", VolumeCapabilities: []*csi.VolumeCapability{fsCap},
		VolumeContentSource: snapshotSource(snap.GetSnapshotId()), CapacityRange: &csi.CapacityRange{RequiredBytes: 8 * mib}})
	wantCode(t, "branch smaller than its commit's data", err, codes.OutOfRange)
	if _, err := r.store.GetDotByName(ctx, "small"); err == nil {
		t.Error("a dot was made for the refused branch")
	}
}

// The store's errors reach the CO as the codes errcode gives them.
func TestCreateVolumeStoreErrors(t *testing.T) {
	for _, c := range []struct {
		method string
		err    error
		want   codes.Code
	}{
		{"Pools", zfsd.ErrUnavailable, codes.Unavailable},
		{"Pools", errors.New("connection refused"), codes.Internal},
		{"GetDotByName", fmt.Errorf("pool tank: %w", zfsd.ErrUnavailable), codes.Unavailable},
		{"GetDotByName", status.Error(codes.DeadlineExceeded, "slow"), codes.DeadlineExceeded},
		{"CreateDot", fmt.Errorf("pool tank: %w", zfsd.ErrBusy), codes.FailedPrecondition},
		{"CreateDot", fmt.Errorf("dot: %w", zfsd.ErrAlreadyExists), codes.AlreadyExists},
	} {
		r := newRig(t, driver.Config{})
		r.store.failOn(c.method, c.err)
		_, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{fsCap}})
		wantCode(t, fmt.Sprintf("CreateVolume with %s failing with %v", c.method, c.err), err, c.want)
	}
	r := newRig(t, driver.Config{})
	r.store.pools = nil
	_, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{fsCap}})
	wantCode(t, "CreateVolume with no pool", err, codes.Unavailable, "no pool")
}

func TestConcurrentCallOnOneNameIsAborted(t *testing.T) {
	r := newRig(t, driver.Config{})
	release := r.store.hold("CreateDot")
	done := make(chan error, 1)
	req := &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{fsCap}}
	go func() {
		_, err := r.d.CreateVolume(t.Context(), req)
		done <- err
	}()
	<-r.store.entered
	_, err := r.d.CreateVolume(t.Context(), req)
	wantCode(t, "CreateVolume while one of the same name runs", err, codes.Aborted)
	// Another name goes ahead meanwhile.
	if _, err := r.d.CreateVolume(t.Context(), &csi.CreateVolumeRequest{Name: "w", VolumeCapabilities: []*csi.VolumeCapability{fsCap}}); err != nil {
		t.Errorf("CreateVolume of another name: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := r.dotCount(); n != 2 {
		t.Errorf("%d dots, want 2", n)
	}
}

func TestDeleteVolume(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	id := r.mustCreate(t, "v", 16*mib, fsCap)
	keep := r.mustCreate(t, "keep", 16*mib, fsCap)
	for _, c := range []struct {
		name, id string
		want     codes.Code
	}{
		{"no ID", "", codes.InvalidArgument},
		{"an ID with a control byte", "a\x00b", codes.InvalidArgument},
		{"never a dot ID", "vol-1", codes.OK},
		{"an unknown dot", uuid.NewString(), codes.OK},
		{"the dot", id, codes.OK},
		{"the dot again", id, codes.OK},
	} {
		_, err := r.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: c.id})
		wantCode(t, "DeleteVolume "+c.name, err, c.want)
	}
	if _, err := r.store.GetDot(ctx, id); !errors.Is(err, zfsd.ErrNotFound) {
		t.Errorf("deleted dot still there: %v", err)
	}
	r.dot(t, keep)

	// A staged dot stays, and so does a dot the store cannot reach.
	v := r.stageAndPublish(t, "staged")
	_, err := r.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id})
	wantCode(t, "DeleteVolume of a staged volume", err, codes.FailedPrecondition, "staged")
	r.dot(t, v.id)
	r.store.failOn("DeleteDot", fmt.Errorf("pool tank: %w", zfsd.ErrUnavailable))
	_, err = r.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: keep})
	wantCode(t, "DeleteVolume with the pool unavailable", err, codes.Unavailable)
	r.dot(t, keep)
}

func TestValidateVolumeCapabilities(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	id := r.mustCreate(t, "v", 16*mib, fsCap)
	ok := &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{fsCap},
		VolumeContext: map[string]string{"pool": "tank"}, Parameters: map[string]string{"compression": "on"}}
	resp, err := r.d.ValidateVolumeCapabilities(ctx, ok)
	if err != nil || resp.GetConfirmed() == nil || resp.GetConfirmed().GetVolumeContext()["pool"] != "tank" ||
		resp.GetConfirmed().GetParameters()["compression"] != "on" {
		t.Fatalf("valid capabilities: %v, %v", resp, err)
	}
	for name, req := range map[string]*csi.ValidateVolumeCapabilitiesRequest{
		"block for a mount volume": {VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{blockCap}},
		"multi-node":               {VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{volCap(false, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}},
		"an unknown parameter":     {VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{fsCap}, Parameters: map[string]string{"x": "y"}},
	} {
		resp, err := r.d.ValidateVolumeCapabilities(ctx, req)
		if err != nil || resp.GetConfirmed() != nil || resp.GetMessage() == "" {
			t.Errorf("%s: %v, %v; want unconfirmed with a message", name, resp, err)
		}
	}
	for name, c := range map[string]struct {
		req  *csi.ValidateVolumeCapabilitiesRequest
		want codes.Code
	}{
		"no ID":           {&csi.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: ok.VolumeCapabilities}, codes.InvalidArgument},
		"no capabilities": {&csi.ValidateVolumeCapabilitiesRequest{VolumeId: id}, codes.InvalidArgument},
		"unknown volume":  {&csi.ValidateVolumeCapabilitiesRequest{VolumeId: uuid.NewString(), VolumeCapabilities: ok.VolumeCapabilities}, codes.NotFound},
		"not a dot ID":    {&csi.ValidateVolumeCapabilitiesRequest{VolumeId: "tank/dots/" + id, VolumeCapabilities: ok.VolumeCapabilities}, codes.NotFound},
	} {
		_, err := r.d.ValidateVolumeCapabilities(ctx, c.req)
		wantCode(t, "ValidateVolumeCapabilities "+name, err, c.want)
	}
	r.store.failOn("Pools", zfsd.ErrUnavailable)
	_, err = r.d.ValidateVolumeCapabilities(ctx, ok)
	wantCode(t, "ValidateVolumeCapabilities with the pool unavailable", err, codes.Unavailable)
}

func TestListVolumesPages(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	want := map[string]bool{}
	for i := range 5 {
		want[r.mustCreate(t, fmt.Sprintf("v%d", i), 16*mib, fsCap)] = true
	}
	var got []string
	token, pages := "", 0
	for {
		resp, err := r.d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(resp.GetEntries()) > 2 {
			t.Fatalf("page of %d entries, max 2", len(resp.GetEntries()))
		}
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetVolume().GetVolumeId())
			if e.GetVolume().GetCapacityBytes() != 16*mib {
				t.Errorf("entry %v", e)
			}
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if pages != 3 || len(got) != 5 {
		t.Fatalf("%d pages with %d entries, want 3 pages with 5", pages, len(got))
	}
	for i, id := range got {
		if !want[id] || (i > 0 && got[i-1] >= id) {
			t.Fatalf("entries %v: not each volume once, in order", got)
		}
	}
	all, err := r.d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(all.GetEntries()) != 5 || all.GetNextToken() != "" {
		t.Errorf("all at once: %v, %v", all, err)
	}
	for name, c := range map[string]struct {
		req  *csi.ListVolumesRequest
		want codes.Code
	}{
		"a token never issued": {&csi.ListVolumesRequest{StartingToken: "x"}, codes.Aborted},
		"a token past the end": {&csi.ListVolumesRequest{StartingToken: "6"}, codes.Aborted},
		"a negative token":     {&csi.ListVolumesRequest{StartingToken: "-1"}, codes.Aborted},
		"negative max entries": {&csi.ListVolumesRequest{MaxEntries: -1}, codes.InvalidArgument},
	} {
		_, err := r.d.ListVolumes(ctx, c.req)
		wantCode(t, "ListVolumes with "+name, err, c.want)
	}
	r.store.failOn("ListDots", zfsd.ErrUnavailable)
	_, err = r.d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	wantCode(t, "ListVolumes with the pool unavailable", err, codes.Unavailable)
}

func TestGetCapacityPerTopology(t *testing.T) {
	r := newRig(t, driver.Config{}, tank, pool1)
	ctx := t.Context()
	at := func(node string) *csi.Topology {
		return &csi.Topology{Segments: map[string]string{driver.TopologyKey: node}}
	}
	for _, c := range []struct {
		name string
		req  *csi.GetCapacityRequest
		want int64
	}{
		{"anywhere", &csi.GetCapacityRequest{}, 512 * mib},
		{"on node0", &csi.GetCapacityRequest{AccessibleTopology: at("node0")}, 512 * mib},
		{"on node1", &csi.GetCapacityRequest{AccessibleTopology: at("node1")}, 256 * mib},
		{"on a node without a pool", &csi.GetCapacityRequest{AccessibleTopology: at("node9")}, 0},
		{"for a mount volume", &csi.GetCapacityRequest{VolumeCapabilities: []*csi.VolumeCapability{fsCap}}, 512 * mib},
		{"for a block volume, without zvols", &csi.GetCapacityRequest{VolumeCapabilities: []*csi.VolumeCapability{blockCap}}, 0},
	} {
		resp, err := r.d.GetCapacity(ctx, c.req)
		if err != nil || resp.GetAvailableCapacity() != c.want {
			t.Errorf("GetCapacity %s: %v, %v; want %d", c.name, resp, err, c.want)
			continue
		}
		if c.want > 0 && (resp.GetMaximumVolumeSize().GetValue() != c.want || resp.GetMinimumVolumeSize().GetValue() != mib) {
			t.Errorf("GetCapacity %s: volume sizes %v to %v", c.name, resp.GetMinimumVolumeSize(), resp.GetMaximumVolumeSize())
		}
	}
	_, err := r.d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"replicas": "many"}})
	wantCode(t, "GetCapacity with a bad parameter", err, codes.InvalidArgument, "replicas")
	r.store.failOn("Pools", zfsd.ErrUnavailable)
	_, err = r.d.GetCapacity(ctx, &csi.GetCapacityRequest{})
	wantCode(t, "GetCapacity with the pool unavailable", err, codes.Unavailable)
}

func TestControllerExpandVolume(t *testing.T) {
	ctx := t.Context()
	expand := func(r *rig, id string, rg *csi.CapacityRange, c *csi.VolumeCapability) (*csi.ControllerExpandVolumeResponse, error) {
		return r.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: rg, VolumeCapability: c})
	}
	r := newRig(t, driver.Config{})
	id := r.mustCreate(t, "v", 32*mib, fsCap)
	for _, c := range []struct {
		name string
		id   string
		r    *csi.CapacityRange
		cap  *csi.VolumeCapability
		want codes.Code
		says string
	}{
		{"no ID", "", &csi.CapacityRange{RequiredBytes: 64 * mib}, nil, codes.InvalidArgument, "required"},
		{"no range", id, nil, nil, codes.InvalidArgument, "capacity range"},
		{"a bad capability", id, &csi.CapacityRange{RequiredBytes: 64 * mib}, volCap(false, csi.VolumeCapability_AccessMode_UNKNOWN), codes.InvalidArgument, "unknown"},
		{"as block", id, &csi.CapacityRange{RequiredBytes: 64 * mib}, blockCap, codes.InvalidArgument, "mount volume"},
		{"an unknown volume", uuid.NewString(), &csi.CapacityRange{RequiredBytes: 64 * mib}, nil, codes.NotFound, ""},
		{"not a dot ID", "vol-1", &csi.CapacityRange{RequiredBytes: 64 * mib}, nil, codes.NotFound, ""},
		{"a limit below its size", id, &csi.CapacityRange{LimitBytes: 16 * mib}, nil, codes.OutOfRange, "do not shrink"},
		{"more than the pool holds", id, &csi.CapacityRange{RequiredBytes: 2048 * mib}, nil, codes.OutOfRange, "ever hold"},
		{"more than is free", id, &csi.CapacityRange{RequiredBytes: 600 * mib}, nil, codes.ResourceExhausted, "free"},
		{"a negative size", id, &csi.CapacityRange{RequiredBytes: -5}, nil, codes.InvalidArgument, "negative"},
	} {
		_, err := expand(r, c.id, c.r, c.cap)
		wantCode(t, "ControllerExpandVolume "+c.name, err, c.want, c.says)
	}
	if d := r.dot(t, id); d.Capacity != 32*mib {
		t.Fatalf("refused expansions changed the dot to %d bytes", d.Capacity)
	}

	// Asking for less changes nothing; more grows the dot, online.
	for _, c := range []struct{ ask, want int64 }{{16 * mib, 32 * mib}, {32 * mib, 32 * mib}, {96 * mib, 96 * mib}, {544 * mib, 544 * mib}} {
		resp, err := expand(r, id, &csi.CapacityRange{RequiredBytes: c.ask}, fsCap)
		if err != nil || resp.GetCapacityBytes() != c.want || resp.GetNodeExpansionRequired() {
			t.Errorf("expand to %d: %v, %v; want %d bytes, no node expansion", c.ask, resp, err, c.want)
		}
		if d := r.dot(t, id); d.Capacity != c.want {
			t.Errorf("after asking %d the dot has %d bytes, want %d", c.ask, d.Capacity, c.want)
		}
	}

	r.store.failOn("ResizeDot", fmt.Errorf("zfs set: %w", zfsd.ErrUnavailable))
	_, err := expand(r, id, &csi.CapacityRange{RequiredBytes: 600 * mib}, nil)
	wantCode(t, "ControllerExpandVolume with the pool gone", err, codes.Unavailable)
	r.store.failOn("Pools", zfsd.ErrUnavailable)
	_, err = expand(r, id, &csi.CapacityRange{RequiredBytes: 600 * mib}, nil)
	wantCode(t, "ControllerExpandVolume without pools", err, codes.Unavailable)
	r.store.failOn("GetDot", zfsd.ErrUnavailable)
	_, err = expand(r, id, &csi.CapacityRange{RequiredBytes: 600 * mib}, nil)
	wantCode(t, "ControllerExpandVolume without the dot's pool", err, codes.Unavailable)
}

func TestSnapshots(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	a := r.mustCreate(t, "a", 16*mib, fsCap)
	b := r.mustCreate(t, "b", 32*mib, fsCap)

	for _, c := range []struct {
		name string
		req  *csi.CreateSnapshotRequest
		want codes.Code
	}{
		{"no name", &csi.CreateSnapshotRequest{SourceVolumeId: a}, codes.InvalidArgument},
		{"a bad name", &csi.CreateSnapshotRequest{Name: "a/b", SourceVolumeId: a}, codes.InvalidArgument},
		{"no source", &csi.CreateSnapshotRequest{Name: "s"}, codes.InvalidArgument},
		{"an unknown parameter", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: a, Parameters: map[string]string{"x": "y"}}, codes.InvalidArgument},
		{"a source that is not a dot ID", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "vol-1"}, codes.NotFound},
		{"an unknown source", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: uuid.NewString()}, codes.NotFound},
	} {
		_, err := r.d.CreateSnapshot(ctx, c.req)
		wantCode(t, "CreateSnapshot with "+c.name, err, c.want)
	}
	if cs, _ := r.store.ListCommits(ctx); len(cs) != 0 {
		t.Fatalf("refused snapshots made commits %v", cs)
	}

	s1 := r.mustSnapshot(t, "s1", a)
	if s1.GetSourceVolumeId() != a || s1.GetSizeBytes() != 16*mib || !s1.GetReadyToUse() || !strings.HasPrefix(s1.GetSnapshotId(), a+"@") {
		t.Errorf("snapshot %v", s1)
	}
	if again := r.mustSnapshot(t, "s1", a); again.GetSnapshotId() != s1.GetSnapshotId() {
		t.Errorf("second CreateSnapshot s1 made %s, want %s", again.GetSnapshotId(), s1.GetSnapshotId())
	}
	_, err := r.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s1", SourceVolumeId: b})
	wantCode(t, "CreateSnapshot s1 of another volume", err, codes.AlreadyExists, s1.GetSnapshotId())
	s2 := r.mustSnapshot(t, "s2", a)
	s3 := r.mustSnapshot(t, "s3", b)
	if _, err := r.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "meta", SourceVolumeId: b,
		Parameters: map[string]string{"csi.storage.k8s.io/volumesnapshot/name": "x"}}); err != nil {
		t.Errorf("CreateSnapshot with the snapshotter's metadata: %v", err)
	}

	list := func(req *csi.ListSnapshotsRequest) []string {
		t.Helper()
		resp, err := r.d.ListSnapshots(ctx, req)
		if err != nil {
			t.Fatalf("ListSnapshots %v: %v", req, err)
		}
		var ids []string
		for _, e := range resp.GetEntries() {
			ids = append(ids, e.GetSnapshot().GetSnapshotId())
		}
		return ids
	}
	if got := list(&csi.ListSnapshotsRequest{SourceVolumeId: a}); len(got) != 2 || !sameSet(got, s1.GetSnapshotId(), s2.GetSnapshotId()) {
		t.Errorf("snapshots of a: %v", got)
	}
	if got := list(&csi.ListSnapshotsRequest{SnapshotId: s3.GetSnapshotId()}); len(got) != 1 || got[0] != s3.GetSnapshotId() {
		t.Errorf("snapshot s3 by ID: %v", got)
	}
	for name, req := range map[string]*csi.ListSnapshotsRequest{
		"s3 as a snapshot of a": {SnapshotId: s3.GetSnapshotId(), SourceVolumeId: a},
		"an unknown ID":         {SnapshotId: a + "@" + uuid.NewString()},
		"a malformed ID":        {SnapshotId: "../x"},
		"an unknown volume":     {SourceVolumeId: uuid.NewString()},
	} {
		if got := list(req); len(got) != 0 {
			t.Errorf("ListSnapshots of %s: %v, want none", name, got)
		}
	}
	var paged []string
	for token := ""; ; {
		resp, err := r.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 3, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			paged = append(paged, e.GetSnapshot().GetSnapshotId())
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if len(paged) != 4 {
		t.Errorf("paged through %v, want 4 snapshots", paged)
	}
	_, err = r.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{StartingToken: "99"})
	wantCode(t, "ListSnapshots from a token never issued", err, codes.Aborted)

	got, err := r.d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: s2.GetSnapshotId()})
	if err != nil || got.GetSnapshot().GetSourceVolumeId() != a || got.GetSnapshot().GetCreationTime() == nil {
		t.Errorf("GetSnapshot s2: %v, %v", got, err)
	}
	for id, want := range map[string]codes.Code{"": codes.InvalidArgument, a: codes.NotFound, a + "@" + uuid.NewString(): codes.NotFound} {
		_, err := r.d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: id})
		wantCode(t, fmt.Sprintf("GetSnapshot %q", id), err, want)
	}

	for id, want := range map[string]codes.Code{"": codes.InvalidArgument, "x": codes.OK, a + "@" + uuid.NewString(): codes.OK, s1.GetSnapshotId(): codes.OK} {
		_, err := r.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id})
		wantCode(t, fmt.Sprintf("DeleteSnapshot %q", id), err, want)
	}
	if _, err := r.store.GetCommit(ctx, s1.GetSnapshotId()); err == nil {
		t.Error("deleted snapshot s1 is still a commit")
	}
	if got := list(&csi.ListSnapshotsRequest{SourceVolumeId: a}); len(got) != 1 || got[0] != s2.GetSnapshotId() {
		t.Errorf("snapshots of a after deleting s1: %v", got)
	}
}

func TestSnapshotStoreErrors(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	a := r.mustCreate(t, "a", 16*mib, fsCap)
	s := r.mustSnapshot(t, "s", a)
	unavailable := fmt.Errorf("pool tank: %w", zfsd.ErrUnavailable)
	for _, c := range []struct {
		method string
		call   func() error
		want   codes.Code
	}{
		{"GetCommitByName", func() error {
			_, err := r.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "t", SourceVolumeId: a})
			return err
		}, codes.Unavailable},
		{"CreateCommit", func() error {
			_, err := r.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "t", SourceVolumeId: a})
			return err
		}, codes.Unavailable},
		{"DeleteCommit", func() error {
			_, err := r.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: s.GetSnapshotId()})
			return err
		}, codes.Unavailable},
		{"GetCommit", func() error {
			_, err := r.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: s.GetSnapshotId()})
			return err
		}, codes.Unavailable},
		{"ListCommits", func() error {
			_, err := r.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
			return err
		}, codes.Unavailable},
	} {
		r.store.failOn(c.method, unavailable)
		wantCode(t, c.method+" failing", c.call(), c.want)
		r.store.failOn(c.method, nil)
	}
	if _, err := r.store.GetCommit(ctx, s.GetSnapshotId()); err != nil {
		t.Errorf("the snapshot whose delete failed is gone: %v", err)
	}
	if _, err := r.store.GetCommitByName(ctx, "t"); err == nil {
		t.Error("a commit was made by a failed CreateSnapshot")
	}
}

func TestIdentityAndCapabilities(t *testing.T) {
	r := newRig(t, driver.Config{Version: "v1"})
	ctx := t.Context()
	info, err := r.d.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != driver.DefaultName || info.GetVendorVersion() != "v1" {
		t.Errorf("GetPluginInfo: %v, %v", info, err)
	}
	if pc, err := r.d.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{}); err != nil || len(pc.GetCapabilities()) == 0 {
		t.Errorf("GetPluginCapabilities: %v, %v", pc, err)
	}
	cc, err := r.d.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	has := map[csi.ControllerServiceCapability_RPC_Type]bool{}
	for _, c := range cc.GetCapabilities() {
		has[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.ControllerServiceCapability_RPC_Type{csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME} {
		if !has[want] {
			t.Errorf("controller capability %s missing", want)
		}
	}
	if p, err := r.d.Probe(ctx, &csi.ProbeRequest{}); err != nil || !p.GetReady().GetValue() {
		t.Errorf("Probe: %v, %v", p, err)
	}
	r.store.failOn("Pools", zfsd.ErrUnavailable)
	_, err = r.d.Probe(ctx, &csi.ProbeRequest{})
	wantCode(t, "Probe with the pool unavailable", err, codes.Unavailable, "not ready")
}

func sameSet(got []string, want ...string) bool {
	m := map[string]bool{}
	for _, w := range want {
		m[w] = true
	}
	for _, g := range got {
		if !m[g] {
			return false
		}
		delete(m, g)
	}
	return len(m) == 0
}
