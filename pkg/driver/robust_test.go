//go:build zfs

package driver_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
)

// poolAvailable is what ZFS says is free on the pool, in bytes.
func (e *env) poolAvailable(t *testing.T) int64 {
	t.Helper()
	out, err := exec.Command("zfs", "get", "-H", "-o", "value", "-p", "available", e.cfg.Name).Output()
	if err != nil {
		// zfs-fuse's get has no -p; its sizes are then human-readable.
		out, err = exec.Command("zfs", "list", "-H", "-o", "avail", e.cfg.Name).Output()
		if err != nil {
			t.Fatal(err)
		}
		return humanBytes(t, strings.TrimSpace(string(out)))
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func humanBytes(t *testing.T, s string) int64 {
	t.Helper()
	mult := map[byte]float64{'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
	if m, ok := mult[s[len(s)-1]]; ok {
		f, err := strconv.ParseFloat(s[:len(s)-1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return int64(f * m)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fill writes random data into dir until the pool refuses more.
func fill(t *testing.T, dir string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(dir, "fill"+strconv.Itoa(i)))
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
				return
			}
			t.Fatal(err)
		}
		for {
			if _, err := f.Write(buf); err != nil {
				_ = f.Close()
				if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
					return
				}
				t.Fatal(err)
			}
			buf[0]++ // no two blocks alike, so compression cannot help
		}
	}
}

// A volume with a snapshot fills its pool to the last byte; unpublishing,
// unstaging and deleting the volume and its snapshot, through CSI alone,
// must work, and the space must come back. Unstaging and a deferred delete
// write properties, which a full zfs-fuse pool refuses: the pool's delete
// reserve pays for them.
func TestFullPoolIsFreedThroughCSI(t *testing.T) {
	pool, cfg := zfstest.Pool(t, 128<<20)
	allowed := t.TempDir()
	e := &env{d: driver.New(driver.Config{NodeID: cfg.Node, AllowedTargetDirs: []string{allowed}}, pool), pool: pool, cfg: cfg, allowed: allowed}
	ctx := context.Background()
	// As large as the pool allows, so the pool fills before the volume's
	// quota does (OpenZFS keeps more of a small pool back than zfs-fuse).
	free, err := e.d.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	avail := free.GetAvailableCapacity()
	r, err := e.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "full", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: avail}})
	if err != nil {
		t.Fatal(err)
	}
	id := r.GetVolume().GetVolumeId()
	staging, target := filepath.Join(allowed, "staging"), filepath.Join(allowed, "target")
	stage := &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap()[0]}
	if _, err := e.d.NodeStageVolume(ctx, stage); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.NodePublishVolume(ctx, e.publishReq(id, staging, target)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "kept"), make([]byte, avail/4), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := e.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "full-snap", SourceVolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot keeps "kept"; the rest of the pool goes to new data.
	if err := os.Remove(filepath.Join(target, "kept")); err != nil {
		t.Fatal(err)
	}
	fill(t, target)
	if avail := e.poolAvailable(t); avail > 1<<20 {
		t.Fatalf("pool not full after filling: %d bytes free", avail)
	}

	if _, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume on a full pool: %v", err)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume on a full pool: %v", err)
	}
	// A CO deletes the claim first; the snapshot keeps the dot, so its
	// deletion is recorded (a property write) and completed by the next.
	if _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatalf("DeleteVolume on a full pool: %v", err)
	}
	if _, err := e.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()}); err != nil {
		t.Fatalf("DeleteSnapshot on a full pool: %v", err)
	}
	if ds := e.datasets(t); len(ds) != 0 {
		t.Fatalf("datasets left after deleting everything: %v", ds)
	}
	// The space comes back after the destroys: on zfs-fuse up to one sync
	// interval (30 s) later, on OpenZFS once its background frees are done
	// (until then a create fails for space even where "available" has
	// grown). Back means a new volume can be made.
	start := time.Now()
	for {
		_, err := e.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "after", VolumeCapabilities: mountCap(),
			CapacityRange: &csi.CapacityRange{RequiredBytes: avail / 2}})
		if err == nil {
			break
		}
		if code(err) != codes.ResourceExhausted || time.Since(start) > 2*time.Minute {
			t.Fatalf("a new volume %s after every delete: %v (pool has %d bytes free)", time.Since(start).Round(time.Second), err, e.poolAvailable(t))
		}
		time.Sleep(time.Second)
	}
	t.Logf("space back %s after the last delete: %d bytes free", time.Since(start).Round(time.Second), e.poolAvailable(t))
}

// DeleteVolume of a staged and published volume must be refused, naming
// where it is staged, with the pod's files untouched; once unstaged, it goes.
func TestDeleteVolumeRefusedWhileStaged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v := e.stageAndPublish(t, "inuse")
	_, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id})
	wantRefused(t, "DeleteVolume of a published volume", err, v.staging)
	v.intact(t, "DeleteVolume")
	if _, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id}); err != nil {
		t.Fatalf("DeleteVolume after unstage: %v", err)
	}
	if ds := e.datasets(t); len(ds) != 0 {
		t.Fatalf("datasets left: %v", ds)
	}
}

func TestControllerExpandVolumeRefusesWhatItCannotDo(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vol := e.create(t, "grow") // 16 MiB
	id := vol.GetVolumeId()
	_, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20, LimitBytes: 12 << 20}})
	if code(err) != codes.OutOfRange {
		t.Errorf("limit below the current size: %v, want OutOfRange", err)
	}
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	_, err = e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}, VolumeCapability: block})
	if code(err) != codes.InvalidArgument {
		t.Errorf("block capability for a mount volume: %v, want InvalidArgument", err)
	}
	r, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}, VolumeCapability: mountCap()[0]})
	if err != nil || r.GetCapacityBytes() != 32<<20 {
		t.Fatalf("a real expansion: %v, %v", r, err)
	}
}

// race runs a and b at once, as a CO may send two calls together.
func race(a, b func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, f := range []func(){a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f()
		}()
	}
	close(start)
	wg.Wait()
}

// A CreateSnapshot that answers OK must name a snapshot that exists, even
// when a DeleteVolume of its source runs at the same time.
func TestCreateSnapshotRacingDeleteOfItsVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 20 {
		id := e.create(t, "racy-"+strconv.Itoa(i)).GetVolumeId()
		var snap *csi.CreateSnapshotResponse
		var snapErr, delErr error
		race(func() {
			snap, snapErr = e.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "racy-snap-" + strconv.Itoa(i), SourceVolumeId: id})
		}, func() {
			_, delErr = e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
		})
		if delErr != nil {
			t.Fatalf("round %d: DeleteVolume: %v", i, delErr)
		}
		if snapErr != nil {
			if code(snapErr) != codes.NotFound {
				t.Fatalf("round %d: CreateSnapshot: %v, want OK or NotFound", i, snapErr)
			}
			continue
		}
		sid := snap.GetSnapshot().GetSnapshotId()
		if _, err := e.d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: sid}); err != nil {
			t.Fatalf("round %d: CreateSnapshot answered %s, which then does not exist: %v", i, sid, err)
		}
		if !exists(e.cfg.Name + "/dots/" + sid) {
			t.Fatalf("round %d: snapshot %s answered for is not on the pool", i, sid)
		}
		if _, err := e.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: sid}); err != nil {
			t.Fatal(err)
		}
	}
	if ds := e.datasets(t); len(ds) != 0 {
		t.Fatalf("datasets left: %v", ds)
	}
}

// A branch of a volume takes a hidden commit of it; a DeleteSnapshot of
// another commit of that volume, at the same time, must not collect it
// before the branch is made.
func TestBranchOfVolumeRacingDeleteSnapshot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	src := e.create(t, "origin").GetVolumeId()
	for i := range 20 {
		s, err := e.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "doomed-" + strconv.Itoa(i), SourceVolumeId: src})
		if err != nil {
			t.Fatal(err)
		}
		var branch *csi.CreateVolumeResponse
		var branchErr, delErr error
		race(func() {
			branch, branchErr = e.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "branch-" + strconv.Itoa(i), VolumeCapabilities: mountCap(),
				VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src}}}})
		}, func() {
			_, delErr = e.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: s.GetSnapshot().GetSnapshotId()})
		})
		if branchErr != nil || delErr != nil {
			t.Fatalf("round %d: CreateVolume from a volume: %v; DeleteSnapshot of another commit: %v", i, branchErr, delErr)
		}
		if !exists(e.cfg.Name + "/dots/" + branch.GetVolume().GetVolumeId()) {
			t.Fatalf("round %d: branch %s is not on the pool", i, branch.GetVolume().GetVolumeId())
		}
	}
}

func exists(name string) bool {
	return exec.Command("zfs", "list", "-H", "-t", "all", "-o", "name", name).Run() == nil
}

// When the pool is no longer imported (zfs-fuse forgets its pools when it
// restarts), every call answers Unavailable, which a CO retries, never
// NotFound, which it would take as "gone". Once the pool's check has
// imported it again, the calls work and the volume's data is still there.
func TestForgottenPoolAnswersUnavailableUntilBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v := e.stageAndPublish(t, "survivor")
	snap, err := e.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "survivor-snap", SourceVolumeId: v.id})
	if err != nil {
		t.Fatal(err)
	}
	// Behind the driver's back, as a ZFS restart would: the pool is gone,
	// its mounts with it.
	if out, err := exec.Command("zpool", "export", "-f", e.cfg.Name).CombinedOutput(); err != nil {
		t.Fatalf("zpool export -f: %v: %s", err, out)
	}
	if _, err := e.d.Probe(ctx, &csi.ProbeRequest{}); code(err) != codes.Unavailable {
		t.Errorf("Probe with the pool gone: %v, want Unavailable", err)
	}
	if _, err := e.d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "new", VolumeCapabilities: mountCap()}); code(err) != codes.Unavailable {
		t.Errorf("CreateVolume with the pool gone: %v, want Unavailable", err)
	}
	for name, call := range map[string]func() error{
		"ListVolumes": func() error { _, err := e.d.ListVolumes(ctx, &csi.ListVolumesRequest{}); return err },
		"NodeStageVolume": func() error {
			_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: mountCap()[0]})
			return err
		},
		"ControllerExpandVolume": func() error {
			_, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: v.id, CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}})
			return err
		},
		"DeleteSnapshot": func() error {
			_, err := e.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()})
			return err
		},
		"DeleteVolume": func() error { _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id}); return err },
	} {
		if err := call(); code(err) != codes.Unavailable {
			t.Errorf("%s with the pool gone: %v, want Unavailable", name, err)
		}
	}
	if err := e.pool.Check(ctx); err != nil {
		t.Fatalf("bringing the pool back: %v", err)
	}
	if _, err := e.d.Probe(ctx, &csi.ProbeRequest{}); err != nil {
		t.Fatalf("Probe after the pool is back: %v", err)
	}
	// The CO retries stage and publish, and the files are there.
	if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: mountCap()[0]}); err != nil {
		t.Fatalf("NodeStageVolume retried: %v", err)
	}
	if _, err := e.d.NodePublishVolume(ctx, e.publishReq(v.id, v.staging, v.target)); err != nil {
		t.Fatalf("NodePublishVolume retried: %v", err)
	}
	v.intact(t, "the pool came back")
	if _, err := e.d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()}); err != nil {
		t.Fatalf("snapshot after the pool came back: %v", err)
	}
	// The deletes refused while it was gone now complete.
	if _, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id}); err != nil {
		t.Fatalf("DeleteVolume retried: %v", err)
	}
	if _, err := e.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()}); err != nil {
		t.Fatalf("DeleteSnapshot retried: %v", err)
	}
	if ds := e.datasets(t); len(ds) != 0 {
		t.Fatalf("datasets left after the retried deletes: %v", ds)
	}
}
