package driver_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func TestNodeInfoAndCapabilities(t *testing.T) {
	r := newRig(t, driver.Config{NodeID: "node7"})
	info, err := r.d.NodeGetInfo(t.Context(), &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node7" || info.GetAccessibleTopology().GetSegments()[driver.TopologyKey] != "node7" {
		t.Errorf("NodeGetInfo: %v, %v", info, err)
	}
	caps, err := r.d.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	has := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range caps.GetCapabilities() {
		has[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.NodeServiceCapability_RPC_Type{csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS, csi.NodeServiceCapability_RPC_EXPAND_VOLUME} {
		if !has[want] {
			t.Errorf("node capability %s missing", want)
		}
	}
}

func TestNodeStageRefusesBadRequestsAndMountsNothing(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	id := r.mustCreate(t, "v", 16*mib, fsCap)
	staging := r.path("staging", "v")
	file := r.path("file")
	if err := os.WriteFile(file, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := r.table()
	for _, c := range []struct {
		name string
		req  *csi.NodeStageVolumeRequest
		want codes.Code
		says string
	}{
		{"no volume ID", &csi.NodeStageVolumeRequest{StagingTargetPath: staging, VolumeCapability: fsCap}, codes.InvalidArgument, "volume ID"},
		{"no staging path", &csi.NodeStageVolumeRequest{VolumeId: id, VolumeCapability: fsCap}, codes.InvalidArgument, "staging target path"},
		{"a relative staging path", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: "staging/v", VolumeCapability: fsCap}, codes.InvalidArgument, "absolute"},
		{"a staging path outside the allowed folders", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: "/etc/v", VolumeCapability: fsCap}, codes.InvalidArgument, "outside the allowed"},
		{"the allowed folder itself", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: r.allowed, VolumeCapability: fsCap}, codes.InvalidArgument, "outside the allowed"},
		{"a way out of the allowed folder", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: r.allowed + "/../v", VolumeCapability: fsCap}, codes.InvalidArgument, "outside the allowed"},
		{"no capability", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging}, codes.InvalidArgument, "capability is required"},
		{"block without zvols", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap}, codes.InvalidArgument, "zvols"},
		{"a file as staging path", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: file, VolumeCapability: fsCap}, codes.InvalidArgument, "regular file"},
		{"a staging path below a file", &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: file + "/below", VolumeCapability: fsCap}, codes.InvalidArgument, "below something"},
		{"not a dot ID", &csi.NodeStageVolumeRequest{VolumeId: "tank/dots/" + id, StagingTargetPath: staging, VolumeCapability: fsCap}, codes.NotFound, "not a dot ID"},
		{"an unknown volume", &csi.NodeStageVolumeRequest{VolumeId: uuid.NewString(), StagingTargetPath: staging, VolumeCapability: fsCap}, codes.NotFound, ""},
	} {
		_, err := r.d.NodeStageVolume(ctx, c.req)
		wantCode(t, "NodeStageVolume with "+c.name, err, c.want, c.says)
		sameTable(t, "NodeStageVolume with "+c.name, before, r.table())
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "not a folder" {
		t.Errorf("the file reads %q, %v after the refused calls", b, err)
	}
	r.store.failOn("Pools", zfsd.ErrUnavailable)
	_, err := r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: fsCap})
	wantCode(t, "NodeStageVolume with the pool unavailable", err, codes.Unavailable)
}

func TestNodeStageMountsTheVolumeOnceAndHealsADeadMount(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	id := r.mustCreate(t, "a", 16*mib, fsCap)
	staging := r.path("staging", "a")
	stage := &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: fsCap}
	for range 2 {
		if _, err := r.d.NodeStageVolume(ctx, stage); err != nil {
			t.Fatal(err)
		}
	}
	s := r.mounts.at(staging)
	if len(s) != 1 || s[0].Source != "tank/dots/"+id {
		t.Fatalf("after two stages %s holds %+v, want one mount of tank/dots/%s", staging, s, id)
	}
	// A dead mount of the volume (zfs-fuse restarted under it) is replaced
	// by a live one.
	r.mounts.kill(s[0].ID)
	if _, err := r.d.NodeStageVolume(ctx, stage); err != nil {
		t.Fatalf("stage over a dead mount: %v", err)
	}
	if s := r.mounts.at(staging); len(s) != 1 || r.mounts.CheckAlive(staging) != nil {
		t.Fatalf("after staging over a dead mount %s holds %+v", staging, s)
	}

	// Another volume's staging path is not taken over.
	b := r.mustCreate(t, "b", 16*mib, fsCap)
	before := r.table()
	_, err := r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: b, StagingTargetPath: staging, VolumeCapability: fsCap})
	wantCode(t, "NodeStageVolume b at a's staging path", err, codes.AlreadyExists, staging)
	sameTable(t, "NodeStageVolume b at a's staging path", before, r.table())

	// A volume of the other kind is refused.
	_, err = r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap})
	wantCode(t, "NodeStageVolume of a mount volume as block", err, codes.InvalidArgument)
	r.store.failOn("StageDot", fmt.Errorf("zfs mount: %w", zfsd.ErrUnavailable))
	_, err = r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: b, StagingTargetPath: r.path("staging", "b"), VolumeCapability: fsCap})
	wantCode(t, "NodeStageVolume with the pool gone", err, codes.Unavailable)
}

func TestNodePublishRefusesWhatIsNotTheVolumes(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	a := r.stageAndPublish(t, "a")
	b := r.stageAndPublish(t, "b")
	c := r.mustCreate(t, "c", 16*mib, fsCap)
	file := r.path("file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	target := r.path("pods", "new", "mount")
	ro := volCap(false, csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)
	before := r.table()
	for _, x := range []struct {
		name string
		req  *csi.NodePublishVolumeRequest
		want codes.Code
		says []string
	}{
		{"no volume ID", publishReq("", a.staging, target, fsCap), codes.InvalidArgument, nil},
		{"no target", publishReq(a.id, a.staging, "", fsCap), codes.InvalidArgument, []string{"target path"}},
		{"a target outside", publishReq(a.id, a.staging, "/var/tmp/x", fsCap), codes.InvalidArgument, []string{"outside"}},
		{"no staging path", publishReq(a.id, "", target, fsCap), codes.InvalidArgument, []string{"staging target path"}},
		{"no capability", publishReq(a.id, a.staging, target, nil), codes.InvalidArgument, []string{"capability"}},
		{"a bad capability", publishReq(a.id, a.staging, target, volCap(false, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)), codes.InvalidArgument, nil},
		{"a file as target", publishReq(a.id, a.staging, file, fsCap), codes.InvalidArgument, []string{file}},
		{"a folder as a block target", publishReq(a.id, a.staging, r.allowed+"/pods", blockCap), codes.InvalidArgument, []string{"folder"}},
		{"block for a mount volume", publishReq(a.id, a.staging, r.path("pods", "dev"), blockCap), codes.InvalidArgument, []string{"mount volume"}},
		{"an unknown volume", publishReq(uuid.NewString(), a.staging, target, fsCap), codes.NotFound, nil},
		{"a volume not staged", publishReq(c, r.path("staging", "c"), target, fsCap), codes.FailedPrecondition, []string{"not staged"}},
		{"another volume's staging", publishReq(c, b.staging, target, fsCap), codes.FailedPrecondition, []string{c, b.staging, "tank/dots/" + b.id}},
		{"a target holding another volume", publishReq(a.id, a.staging, b.target, fsCap), codes.AlreadyExists, []string{b.target}},
		{"a target holding another volume, read-only", publishReq(a.id, a.staging, b.target, ro), codes.AlreadyExists, []string{b.target}},
	} {
		_, err := r.d.NodePublishVolume(ctx, x.req)
		wantCode(t, "NodePublishVolume with "+x.name, err, x.want, x.says...)
		sameTable(t, "NodePublishVolume with "+x.name, before, r.table())
	}
	if s := r.mounts.at(b.target); len(s) != 1 || s[0].Source != "tank/dots/"+b.id || s[0].Options != "rw" {
		t.Errorf("b's target holds %+v", s)
	}
}

func TestNodePublishBindsTheStagedVolume(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	a := r.stageAndPublish(t, "a")
	staged := r.mounts.at(a.staging)[0]
	check := func(when, target, opts string) {
		t.Helper()
		s := r.mounts.at(target)
		if len(s) != 1 || s[0].Source != staged.Source || s[0].Minor != staged.Minor || s[0].Root != "/" || s[0].Options != opts {
			t.Errorf("%s: %s holds %+v, want one %s bind of %s", when, target, s, opts, staged.Source)
		}
	}
	check("publish", a.target, "rw")
	if _, err := r.d.NodePublishVolume(ctx, publishReq(a.id, a.staging, a.target, fsCap)); err != nil {
		t.Fatal(err)
	}
	check("publish again", a.target, "rw")

	ro := r.path("pods", "ro", "mount")
	req := publishReq(a.id, a.staging, ro, fsCap)
	req.Readonly = true
	if _, err := r.d.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	check("read-only publish", ro, "ro")
	reader := r.path("pods", "reader", "mount")
	if _, err := r.d.NodePublishVolume(ctx, publishReq(a.id, a.staging, reader, volCap(false, csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY))); err != nil {
		t.Fatal(err)
	}
	check("reader-only publish", reader, "ro")

	// A dead bind of the volume at the target passes for published; it
	// is replaced.
	r.mounts.kill(r.mounts.at(a.target)[0].ID)
	if _, err := r.d.NodePublishVolume(ctx, publishReq(a.id, a.staging, a.target, fsCap)); err != nil {
		t.Fatalf("publish over a dead bind: %v", err)
	}
	check("publish over a dead bind", a.target, "rw")
	if err := r.mounts.CheckAlive(a.target); err != nil {
		t.Errorf("the target's bind after the publish: %v", err)
	}

	// A single writer is published once.
	single := volCap(false, csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)
	_, err := r.d.NodePublishVolume(ctx, publishReq(a.id, a.staging, r.path("pods", "single", "mount"), single))
	wantCode(t, "single-writer publish of a published volume", err, codes.FailedPrecondition, "single-writer")
	if s := r.mounts.at(r.path("pods", "single", "mount")); len(s) != 0 {
		t.Errorf("refused single-writer target holds %+v", s)
	}
	b := r.stageAndPublish(t, "b")
	if _, err := r.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: b.id, TargetPath: b.target}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.d.NodePublishVolume(ctx, publishReq(b.id, b.staging, b.target, single)); err != nil {
			t.Fatalf("single-writer publish of a volume published nowhere: %v", err)
		}
	}

	// A dead staging mount would publish a mount nobody can use.
	r.mounts.kill(staged.ID)
	_, err = r.d.NodePublishVolume(ctx, publishReq(a.id, a.staging, r.path("pods", "late", "mount"), fsCap))
	wantCode(t, "publish from a dead staging mount", err, codes.FailedPrecondition, "dead", a.staging)
}

func TestNodePublishMountTableErrorsAreInternal(t *testing.T) {
	for _, method := range []string{"StackAt", "CheckAlive", "Mounts", "DetachDead", "Bind"} {
		r := newRig(t, driver.Config{})
		a := r.stageAndPublish(t, "a")
		r.mounts.failOn(method, errors.New("mountinfo unreadable"))
		_, err := r.d.NodePublishVolume(t.Context(), publishReq(a.id, a.staging, r.path("pods", "x", "mount"), fsCap))
		wantCode(t, "NodePublishVolume with "+method+" failing", err, codes.Internal, "mountinfo unreadable")
	}
}

func TestNodeUnpublishAndUnstageTouchOnlyTheNamedVolume(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	a := r.stageAndPublish(t, "a")
	b := r.stageAndPublish(t, "b")
	unknown := uuid.NewString()
	unpublish := func(id, path string) error {
		_, err := r.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: path})
		return err
	}
	unstage := func(id, path string) error {
		_, err := r.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: path})
		return err
	}
	before := r.table()
	for _, c := range []struct {
		call, id, path, holds string
		run                   func(id, path string) error
	}{
		{"NodeUnpublishVolume unknown volume, a's target", unknown, a.target, "tank/dots/" + a.id, unpublish},
		{"NodeUnpublishVolume b, a's target", b.id, a.target, "tank/dots/" + a.id, unpublish},
		{"NodeUnpublishVolume malformed volume, a's target", "not-a-uuid", a.target, "tank/dots/" + a.id, unpublish},
		{"NodeUnpublishVolume a, b's staging path", a.id, b.staging, "tank/dots/" + b.id, unpublish},
		{"NodeUnstageVolume a, b's staging path", a.id, b.staging, "tank/dots/" + b.id, unstage},
		{"NodeUnstageVolume unknown volume, b's staging path", unknown, b.staging, "tank/dots/" + b.id, unstage},
		{"NodeUnstageVolume malformed volume, b's staging path", "not-a-uuid", b.staging, "tank/dots/" + b.id, unstage},
		{"NodeUnstageVolume b, a's target", b.id, a.target, "tank/dots/" + a.id, unstage},
	} {
		wantCode(t, c.call, c.run(c.id, c.path), codes.FailedPrecondition, c.path, c.holds, c.id)
		sameTable(t, c.call, before, r.table())
	}
	// A refused unstage never reached the store, which might have
	// changed the dot's mountpoint.
	if n := r.store.called("UnstageDot"); n != 0 {
		t.Errorf("the store was asked to unstage %d times by refused calls", n)
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"NodeUnpublishVolume without an ID", unpublish("", a.target)},
		{"NodeUnpublishVolume outside the allowed folders", unpublish(a.id, "/etc")},
		{"NodeUnstageVolume without an ID", unstage("", a.staging)},
		{"NodeUnstageVolume without a path", unstage(a.id, "")},
	} {
		wantCode(t, c.name, c.err, codes.InvalidArgument)
		sameTable(t, c.name, before, r.table())
	}

	// Nothing mounted at a path: success, whatever the ID, and the empty
	// folder the CO made goes.
	empty := r.path("pods", "empty", "mount")
	for _, id := range []string{unknown, "not-a-uuid", a.id} {
		if err := os.MkdirAll(empty, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := unpublish(id, empty); err != nil {
			t.Errorf("unpublish %q from a path holding nothing: %v", id, err)
		}
		if _, err := os.Stat(empty); !os.IsNotExist(err) {
			t.Errorf("empty target folder kept after unpublishing %q: %v", id, err)
		}
	}

	// The named volume's own binds go, stacked ones included, and the
	// folder with them; retries find the work done.
	r.mounts.mount(r.mounts.at(a.target)[0])
	if n := len(r.mounts.at(a.target)); n != 2 {
		t.Fatalf("%d mounts at a's target, want 2 stacked binds", n)
	}
	for range 2 {
		if err := unpublish(a.id, a.target); err != nil {
			t.Fatalf("unpublish a from its target: %v", err)
		}
	}
	if s := r.mounts.at(a.target); len(s) != 0 {
		t.Fatalf("mounts left at a's target: %+v", s)
	}
	if _, err := os.Stat(a.target); !os.IsNotExist(err) {
		t.Errorf("a's target folder kept: %v", err)
	}
	// A mount of a on another pool, stacked under its staging mount, is
	// not the store's to unstage; the driver takes it away too.
	r.mounts.mount(mountinfo.Mount{MountPoint: a.staging, Root: "/", FSType: "zfs", Source: "pool9/dots/" + a.id, Minor: 99})
	for range 2 {
		if err := unstage(a.id, a.staging); err != nil {
			t.Fatalf("unstage a: %v", err)
		}
	}
	if s := r.mounts.at(a.staging); len(s) != 0 {
		t.Fatalf("mounts left at a's staging path: %+v", s)
	}
	// b is as it was.
	for _, p := range []string{b.staging, b.target} {
		if s := r.mounts.at(p); len(s) != 1 || s[0].Source != "tank/dots/"+b.id {
			t.Errorf("%s holds %+v after a's unpublish and unstage", p, s)
		}
	}
}

func TestNodeUnstageStoreAndMountErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*rig)
		want codes.Code
	}{
		{"a volume the store no longer has", func(r *rig) { r.store.failOn("UnstageDot", fmt.Errorf("dot: %w", zfsd.ErrNotFound)) }, codes.OK},
		{"a store that cannot unmount", func(r *rig) { r.store.failOn("UnstageDot", fmt.Errorf("zfs unmount: %w", zfsd.ErrBusy)) }, codes.FailedPrecondition},
		{"a mount table that cannot be read", func(r *rig) { r.mounts.failOn("StackAt", errors.New("no /proc")) }, codes.Internal},
		{"an unmount that fails", func(r *rig) { r.mounts.failOn("UnmountOnly", errors.New("EBUSY")) }, codes.Internal},
	} {
		r := newRig(t, driver.Config{})
		a := r.stageAndPublish(t, "a")
		if _, err := r.d.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: a.id, TargetPath: a.target}); err != nil {
			t.Fatal(err)
		}
		c.set(r)
		_, err := r.d.NodeUnstageVolume(t.Context(), &csi.NodeUnstageVolumeRequest{VolumeId: a.id, StagingTargetPath: a.staging})
		wantCode(t, "NodeUnstageVolume with "+c.name, err, c.want)
	}
	r := newRig(t, driver.Config{})
	a := r.stageAndPublish(t, "a")
	r.mounts.failOn("UnmountOnly", errors.New("EBUSY"))
	_, err := r.d.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: a.id, TargetPath: a.target})
	wantCode(t, "NodeUnpublishVolume with the unmount failing", err, codes.Internal, "EBUSY")
}

func TestNodeStatsAndExpandOnlyOnTheVolumesOwnPaths(t *testing.T) {
	r := newRig(t, driver.Config{})
	ctx := t.Context()
	a := r.stageAndPublish(t, "a")
	b := r.stageAndPublish(t, "b")
	folder := r.path("pods", "a", "plain")
	if err := os.MkdirAll(folder, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a.target, a.staging} {
		st, err := r.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: a.id, VolumePath: p})
		if err != nil || len(st.GetUsage()) != 2 || st.GetUsage()[0].GetUnit() != csi.VolumeUsage_BYTES || st.GetUsage()[0].GetTotal() <= 0 ||
			st.GetUsage()[1].GetUnit() != csi.VolumeUsage_INODES {
			t.Errorf("NodeGetVolumeStats of a at %s: %v, %v", p, st, err)
		}
		ex, err := r.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: a.id, VolumePath: p})
		if err != nil || ex.GetCapacityBytes() != 16*mib {
			t.Errorf("NodeExpandVolume of a at %s: %v, %v", p, ex, err)
		}
	}
	stats := func(id, p string) error {
		_, err := r.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: p})
		return err
	}
	expand := func(id, p string) error {
		_, err := r.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: p})
		return err
	}
	for name, call := range map[string]func(string, string) error{"NodeGetVolumeStats": stats, "NodeExpandVolume": expand} {
		for _, p := range []string{"/etc", "/", "some/path", b.target, b.staging, folder, r.allowed, r.path("missing")} {
			wantCode(t, fmt.Sprintf("%s of a at %s", name, p), call(a.id, p), codes.NotFound, a.id)
		}
		wantCode(t, name+" without a path", call(a.id, ""), codes.InvalidArgument, "volume path")
		wantCode(t, name+" without an ID", call("", a.target), codes.InvalidArgument)
		wantCode(t, name+" of an unknown volume", call(uuid.NewString(), a.target), codes.NotFound)
	}
	r.mounts.failOn("StackAt", errors.New("no /proc"))
	wantCode(t, "NodeGetVolumeStats without a mount table", stats(a.id, a.target), codes.Internal)
	r.store.failOn("GetDot", zfsd.ErrUnavailable)
	wantCode(t, "NodeGetVolumeStats with the pool gone", stats(a.id, a.target), codes.Unavailable)
}

// Block volumes are zvols: staged without a mount, published by binding
// the device node onto a file.
func TestBlockVolumeStageAndPublish(t *testing.T) {
	r := newRig(t, driver.Config{}, withZvols(tank))
	ctx := t.Context()
	id := r.mustCreate(t, "blk", 16*mib, blockCap)
	staging := r.path("staging", "blk")
	if _, err := r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap}); err != nil {
		t.Fatal(err)
	}
	if s := r.mounts.at(staging); len(s) != 0 {
		t.Errorf("a block volume's staging path holds %+v", s)
	}
	_, err := r.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: fsCap})
	wantCode(t, "NodeStageVolume of a block volume as mount", err, codes.InvalidArgument, "block volume")

	dev, err := r.store.MountDot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	target := r.path("pods", "blk", "dev")
	single := volCap(true, csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)
	for range 2 {
		if _, err := r.d.NodePublishVolume(ctx, publishReq(id, staging, target, single)); err != nil {
			t.Fatal(err)
		}
	}
	s := r.mounts.at(target)
	if len(s) != 1 || s[0].FSType != "devtmpfs" || s[0].Root != "/"+filepath.Base(dev) || s[0].Options != "rw" {
		t.Fatalf("block target holds %+v, want one bind of %s", s, dev)
	}
	if fi, err := os.Stat(target); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("block target is %v, %v; want the file the bind is on", fi, err)
	}
	other := r.path("pods", "blk2", "dev")
	_, err = r.d.NodePublishVolume(ctx, publishReq(id, staging, other, single))
	wantCode(t, "second single-writer publish of a block volume", err, codes.FailedPrecondition, target)
	req := publishReq(id, staging, other, blockCap)
	req.Readonly = true
	if _, err := r.d.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	if s := r.mounts.at(other); len(s) != 1 || s[0].Options != "ro" {
		t.Errorf("read-only block target holds %+v", s)
	}

	for method, want := range map[string]codes.Code{"MountDot": codes.Unavailable, "BindFile": codes.Internal, "Mounts": codes.Internal} {
		r := newRig(t, driver.Config{}, withZvols(tank))
		id := r.mustCreate(t, "blk", 16*mib, blockCap)
		if method == "MountDot" {
			r.store.failOn(method, zfsd.ErrUnavailable)
		} else {
			r.mounts.failOn(method, errors.New("mount table broken"))
		}
		_, err := r.d.NodePublishVolume(ctx, publishReq(id, r.path("staging", "blk"), r.path("pods", "x", "dev"), single))
		wantCode(t, "block publish with "+method+" failing", err, want)
		if s := r.mounts.at(r.path("pods", "x", "dev")); len(s) != 0 {
			t.Errorf("block publish with %s failing left %+v", method, s)
		}
	}
}
