//go:build zfs

package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

// published is a dot staged and published by the real Node calls, with a
// file written through its target.
type published struct {
	id, staging, target, content string
}

func (e *env) stageAndPublish(t *testing.T, name string) published {
	t.Helper()
	ctx := context.Background()
	v := published{id: e.create(t, name).GetVolumeId(),
		staging: filepath.Join(e.allowed, "staging", name),
		target:  filepath.Join(e.allowed, "pods", name, "mount"),
		content: "the files of " + name}
	// Cleanups run last registered first: the target before the staging.
	t.Cleanup(func() { _ = mountinfo.Unmount(v.staging) })
	if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: mountCap()[0]}); err != nil {
		t.Fatalf("stage %s: %v", name, err)
	}
	t.Cleanup(func() { _ = mountinfo.Unmount(v.target) })
	if _, err := e.d.NodePublishVolume(ctx, e.publishReq(v.id, v.staging, v.target)); err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(v.target, "f"), []byte(v.content), 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *env) publishReq(id, staging, target string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: mountCap()[0]}
}

func (e *env) dataset(id string) string { return e.cfg.Name + "/dots/" + id }

// intact fails the test unless the volume's file reads back, unchanged,
// through both its staging mount and its target.
func (v published) intact(t *testing.T, after string) {
	t.Helper()
	for _, p := range []string{v.staging, v.target} {
		b, err := os.ReadFile(filepath.Join(p, "f"))
		if err != nil || string(b) != v.content {
			t.Errorf("after %s: %s/f reads %q, %v; want %q", after, p, b, err, v.content)
		}
	}
}

// stack lists the mounts exactly at path, bottom first.
func stack(t *testing.T, path string) []mountinfo.Mount {
	t.Helper()
	ms, err := mountinfo.StackAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// wantRefused checks a FailedPrecondition whose message names every one
// of parts (the path, what is mounted there, the volume named).
func wantRefused(t *testing.T, call string, err error, parts ...string) {
	t.Helper()
	if code(err) != codes.FailedPrecondition {
		t.Errorf("%s: %v, want FailedPrecondition", call, err)
		return
	}
	for _, p := range parts {
		if !strings.Contains(status.Convert(err).Message(), p) {
			t.Errorf("%s: message %q does not name %q", call, status.Convert(err).Message(), p)
		}
	}
}

func TestNodeUnpublishAndUnstageActOnlyOnTheNamedVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.stageAndPublish(t, "a")
	b := e.stageAndPublish(t, "b")
	unknown := uuid.NewString()

	unpublish := func(id, path string) error {
		_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: path})
		return err
	}
	unstage := func(id, path string) error {
		_, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: path})
		return err
	}
	for _, c := range []struct {
		call, id, path, holds string
		run                   func(id, path string) error
	}{
		{"NodeUnpublishVolume unknown volume, a's target", unknown, a.target, e.dataset(a.id), unpublish},
		{"NodeUnpublishVolume b, a's target", b.id, a.target, e.dataset(a.id), unpublish},
		{"NodeUnpublishVolume malformed volume, a's target", "not-a-uuid", a.target, e.dataset(a.id), unpublish},
		{"NodeUnpublishVolume a, b's staging path", a.id, b.staging, e.dataset(b.id), unpublish},
		{"NodeUnstageVolume a, b's staging path", a.id, b.staging, e.dataset(b.id), unstage},
		{"NodeUnstageVolume unknown volume, b's staging path", unknown, b.staging, e.dataset(b.id), unstage},
		{"NodeUnstageVolume malformed volume, b's staging path", "not-a-uuid", b.staging, e.dataset(b.id), unstage},
		{"NodeUnstageVolume b, a's target", b.id, a.target, e.dataset(a.id), unstage},
	} {
		wantRefused(t, c.call, c.run(c.id, c.path), c.path, c.holds, c.id)
		a.intact(t, c.call)
		b.intact(t, c.call)
	}

	// Nothing mounted at a path: success, whatever the ID, and the empty
	// folder the CO made goes.
	empty := filepath.Join(e.allowed, "pods", "empty", "mount")
	if err := os.MkdirAll(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{unknown, "not-a-uuid", a.id} {
		if err := unpublish(id, empty); err != nil {
			t.Errorf("unpublish %q from a path holding nothing: %v", id, err)
		}
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("empty target folder kept: %v", err)
	}

	// The named volume's own binds go, stacked ones included.
	if err := unix.Mount(a.staging, a.target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if n := len(stack(t, a.target)); n != 2 {
		t.Fatalf("%d mounts at a's target, want 2 stacked binds", n)
	}
	for range 2 {
		if err := unpublish(a.id, a.target); err != nil {
			t.Fatalf("unpublish a from its target: %v", err)
		}
	}
	if m := stack(t, a.target); len(m) != 0 {
		t.Fatalf("mounts left at a's target: %+v", m)
	}
	for range 2 {
		if err := unstage(a.id, a.staging); err != nil {
			t.Fatalf("unstage a: %v", err)
		}
	}
	if m := stack(t, a.staging); len(m) != 0 {
		t.Fatalf("mounts left at a's staging path: %+v", m)
	}
	b.intact(t, "a's unpublish and unstage")
}

func TestPublishRefusesAnotherVolumesStaging(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.stageAndPublish(t, "b")
	a := e.create(t, "a").GetVolumeId()
	target := filepath.Join(e.allowed, "pods", "a", "mount")
	t.Cleanup(func() { _ = mountinfo.Unmount(target) })

	_, err := e.d.NodePublishVolume(ctx, e.publishReq(a, b.staging, target))
	wantRefused(t, "NodePublishVolume a from b's staging path", err, a, b.staging, e.dataset(b.id))
	if m := stack(t, target); len(m) != 0 {
		t.Fatalf("a's target holds %+v after a refused publish", m)
	}
	if _, err := os.Stat(filepath.Join(target, "f")); !os.IsNotExist(err) {
		t.Fatalf("b's file shows at a's target: %v", err)
	}
	b.intact(t, "the refused publish")
}

func TestVolumeStatsOnlyForTheVolumesOwnPaths(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.stageAndPublish(t, "a")
	b := e.stageAndPublish(t, "b")
	folder := filepath.Join(e.allowed, "pods", "a", "plain")
	if err := os.MkdirAll(folder, 0o750); err != nil {
		t.Fatal(err)
	}
	stats := func(p string) error {
		_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: a.id, VolumePath: p})
		return err
	}
	expand := func(p string) error {
		_, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: a.id, VolumePath: p})
		return err
	}
	for name, call := range map[string]func(string) error{"NodeGetVolumeStats": stats, "NodeExpandVolume": expand} {
		for _, p := range []string{a.target, a.staging} {
			if err := call(p); err != nil {
				t.Errorf("%s of a at its own %s: %v", name, p, err)
			}
		}
		for _, p := range []string{"/etc", "/", "some/path", b.target, b.staging, folder, e.allowed} {
			if err := call(p); code(err) != codes.NotFound {
				t.Errorf("%s of a at %s: %v, want NotFound", name, p, err)
			}
		}
	}
	a.intact(t, "the stats calls")
}

func TestFileAtStagingOrTargetIsInvalid(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create(t, "a").GetVolumeId()
	file := filepath.Join(e.allowed, "file")
	if err := os.WriteFile(file, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(e.allowed, "staging")
	t.Cleanup(func() { _ = mountinfo.Unmount(staging) })
	for _, p := range []string{file, filepath.Join(file, "below")} {
		_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: p, VolumeCapability: mountCap()[0]})
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), p) {
			t.Errorf("NodeStageVolume at %s: %v, want InvalidArgument naming the path", p, err)
		}
	}
	if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap()[0]}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, filepath.Join(file, "below")} {
		t.Cleanup(func() { _ = mountinfo.Unmount(p) })
		_, err := e.d.NodePublishVolume(ctx, e.publishReq(id, staging, p))
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), p) {
			t.Errorf("NodePublishVolume at %s: %v, want InvalidArgument naming the path", p, err)
		}
	}
	if m := e.mountsUnder(t, e.allowed); len(m) != 1 || m[0] != staging {
		t.Errorf("mounts under the allowed folder: %q, want the staging mount alone", m)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "not a folder" {
		t.Errorf("the file reads %q, %v after the refused calls", b, err)
	}
}

// deadFUSE mounts at dir what a zfs-fuse mount of dataset ds looks like
// once the daemon behind it is gone: a FUSE mount (fuse.zfs, source ds)
// whose connection is aborted, by closing its descriptor right after the
// mount. Every access through it fails with ENOTCONN, as after a zfs-fuse
// restart. The shared zfs-fuse daemon is not touched.
func deadFUSE(t *testing.T, ds, dir string) {
	t.Helper()
	// A dead mount already there cannot be looked at, so MkdirAll would
	// fail on it; its folder exists all the same.
	if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/fuse: %v", err)
	}
	err = unix.Mount(ds, dir, "fuse.zfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd))
	_ = unix.Close(fd)
	if err != nil {
		t.Fatalf("dead FUSE mount at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := mountinfo.CheckAlive(dir); err == nil {
		t.Fatalf("the stand-in dead mount at %s answers", dir)
	}
}

func TestHealthyStageIsIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.stageAndPublish(t, "a")
	for range 2 {
		if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: a.id, StagingTargetPath: a.staging, VolumeCapability: mountCap()[0]}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.d.NodePublishVolume(ctx, e.publishReq(a.id, a.staging, a.target)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{a.staging, a.target} {
		if n := len(stack(t, p)); n != 1 {
			t.Errorf("%d mounts at %s after repeated stage and publish, want 1", n, p)
		}
	}
	a.intact(t, "repeated stage and publish")
}

func TestStageReplacesADeadMountOfTheVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.stageAndPublish(t, "a")
	stage := &csi.NodeStageVolumeRequest{VolumeId: a.id, StagingTargetPath: a.staging, VolumeCapability: mountCap()[0]}
	// Dead mounts of the volume stacked on its live staging mount, and
	// then alone at the staging path: each time the stage must end with a
	// mount there that answers, holding the volume's file.
	deadFUSE(t, e.dataset(a.id), a.staging)
	deadFUSE(t, e.dataset(a.id), a.staging)
	if _, err := e.d.NodeStageVolume(ctx, stage); err != nil {
		t.Fatalf("stage over dead mounts: %v", err)
	}
	if n := len(stack(t, a.staging)); n != 1 {
		t.Fatalf("%d mounts at the staging path, want the live one alone", n)
	}
	a.intact(t, "stage over stacked dead mounts")

	if _, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: a.id, TargetPath: a.target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: a.id, StagingTargetPath: a.staging}); err != nil {
		t.Fatal(err)
	}
	deadFUSE(t, e.dataset(a.id), a.staging)
	if _, err := e.d.NodeStageVolume(ctx, stage); err != nil {
		t.Fatalf("stage over a lone dead mount: %v", err)
	}
	if err := mountinfo.CheckAlive(a.staging); err != nil {
		t.Fatalf("staging mount after the stage: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(a.staging, "f"))
	if err != nil || string(b) != a.content {
		t.Fatalf("file through the restaged mount: %q, %v", b, err)
	}
}

func TestPublishReplacesADeadBindAndRefusesADeadStaging(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.stageAndPublish(t, "a")

	// A dead mount of the volume on the staging path: publishing would
	// bind a mount that cannot be used.
	other := filepath.Join(e.allowed, "pods", "other", "mount")
	t.Cleanup(func() { _ = mountinfo.Unmount(other) })
	deadFUSE(t, e.dataset(a.id), a.staging)
	_, err := e.d.NodePublishVolume(ctx, e.publishReq(a.id, a.staging, other))
	wantRefused(t, "NodePublishVolume from a dead staging mount", err, a.id, a.staging, "dead")
	if m := stack(t, other); len(m) != 0 {
		t.Fatalf("target holds %+v after a refused publish", m)
	}
	if err := mountinfo.UnmountLazy(a.staging); err != nil {
		t.Fatal(err)
	}

	// A dead bind of the volume at its target (left by a zfs-fuse restart)
	// is replaced by a live one.
	if _, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: a.id, TargetPath: a.target}); err != nil {
		t.Fatal(err)
	}
	deadFUSE(t, e.dataset(a.id), a.target)
	if _, err := e.d.NodePublishVolume(ctx, e.publishReq(a.id, a.staging, a.target)); err != nil {
		t.Fatalf("publish over a dead bind: %v", err)
	}
	if n := len(stack(t, a.target)); n != 1 {
		t.Fatalf("%d mounts at the target, want the live bind alone", n)
	}
	a.intact(t, "publish over a dead bind")
}
