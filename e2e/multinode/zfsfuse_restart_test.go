//go:build zfs

package multinode

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStandaloneSurvivesZfsFuseRestart: the zfs-fuse daemon under a running
// standalone driver dies (SIGKILL) or is stopped (SIGTERM) and comes back,
// as systemd would bring it back, while a volume is staged and published.
// While it is down the driver must say so (Unavailable), not answer with
// errors a CO treats as final; within 30 s of its return the Probe must be
// ready; and the CO's retried stage and publish must serve the committed
// data again.
func TestStandaloneSurvivesZfsFuseRestart(t *testing.T) {
	h := New(t, Options{Nodes: 1})
	n := h.Nodes[0]
	n.StartStandalone("512Mi")
	c := h.Dial(n.Socket())

	cv, err := c.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{Name: "survivor",
		VolumeCapabilities: []*csi.VolumeCapability{MountCap()}, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := cv.GetVolume().GetVolumeId()
	staging, target := n.StagePaths(id)
	stage := &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: MountCap()}
	publish := &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: MountCap()}
	if _, err := c.NodeStageVolume(ctxT(t, time.Minute), stage); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	if _, err := c.NodePublishVolume(ctxT(t, time.Minute), publish); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	data := filepath.Join(target, "data")

	var commits []string
	for _, stop := range []struct {
		name string
		sig  syscall.Signal
	}{{"killed", syscall.SIGKILL}, {"stopped", syscall.SIGTERM}} {
		// Each round adds data of its own, so a round cannot pass on what
		// the round before already committed.
		if err := n.Write(ctxT(t, time.Minute), data, 4); err != nil {
			t.Fatalf("%s: writing through the published path: %v", stop.name, err)
		}
		want, err := n.Sum(ctxT(t, time.Minute), data)
		if err != nil {
			t.Fatal(err)
		}
		// zfs-fuse commits a transaction group only every 30 s; a kill
		// before that loses what was written, which is not what this test
		// is about. A commit (a snapshot) forces the group to disk.
		if _, err := n.Exec(ctxT(t, time.Minute), "sync"); err != nil {
			t.Fatal(err)
		}
		snap, err := c.CreateSnapshot(ctxT(t, time.Minute), &csi.CreateSnapshotRequest{Name: "before-" + stop.name, SourceVolumeId: id})
		if err != nil {
			t.Fatalf("%s: CreateSnapshot: %v", stop.name, err)
		}
		commits = append(commits, snap.GetSnapshot().GetSnapshotId())

		if err := n.StopZfsFuse(stop.sig, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("zfs-fuse %s (signal %d)", stop.name, int(stop.sig))
		checkUnavailable(t, c, stop.name)

		// Only what an operator or systemd does: start the daemon again.
		// The dead FUSE mounts it left are the driver's to deal with.
		if err := n.StartZfsFuse(); err != nil {
			t.Fatalf("%s: %v", stop.name, err)
		}
		waitReady(t, n, c, stop.name, 30*time.Second)

		// The kubelet retries stage and publish with the same arguments
		// until they succeed; once the Probe is ready, one retry must.
		if _, err := c.NodeStageVolume(ctxT(t, time.Minute), stage); err != nil {
			t.Fatalf("%s: retried NodeStageVolume answered %s: %v", stop.name, status.Code(err), err)
		}
		if _, err := c.NodePublishVolume(ctxT(t, time.Minute), publish); err != nil {
			t.Fatalf("%s: retried NodePublishVolume answered %s: %v", stop.name, status.Code(err), err)
		}
		got, err := n.Sum(ctxT(t, time.Minute), data)
		if err != nil || got != want {
			t.Fatalf("%s: data through the published path after the restart: %q, %v; want sha256 %s", stop.name, got, err, want)
		}
		fresh, err := c.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{Name: "after-" + stop.name,
			VolumeCapabilities: []*csi.VolumeCapability{MountCap()}, CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}})
		if err != nil {
			t.Fatalf("%s: CreateVolume after the restart answered %s: %v", stop.name, status.Code(err), err)
		}
		if _, err := c.DeleteVolume(ctxT(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: fresh.GetVolume().GetVolumeId()}); err != nil {
			t.Fatalf("%s: DeleteVolume of the new volume: %v", stop.name, err)
		}
	}

	if err := n.Unstage(ctxT(t, time.Minute), c, id); err != nil {
		t.Fatalf("unpublish and unstage: %v", err)
	}
	for _, s := range commits {
		if _, err := c.DeleteSnapshot(ctxT(t, time.Minute), &csi.DeleteSnapshotRequest{SnapshotId: s}); err != nil {
			t.Fatalf("DeleteSnapshot %s: %v", s, err)
		}
	}
	if _, err := c.DeleteVolume(ctxT(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
}

// checkUnavailable asserts what the driver answers while its pool's
// daemon is gone. A CO retries Unavailable; NotFound or Internal would
// make it give up on, or forget, volumes that still exist.
func checkUnavailable(t *testing.T, c *CSI, round string) {
	t.Helper()
	// The plugin itself must still answer, or every Unavailable below
	// would be gRPC's own, for a socket nobody serves.
	if _, err := c.GetPluginInfo(ctxT(t, 10*time.Second), &csi.GetPluginInfoRequest{}); err != nil {
		t.Fatalf("%s: the plugin stopped answering without zfs-fuse: GetPluginInfo: %v", round, err)
	}
	p, err := c.Probe(ctxT(t, 10*time.Second), &csi.ProbeRequest{})
	switch {
	case err == nil && p.GetReady() != nil && !p.GetReady().GetValue():
	case status.Code(err) == codes.Unavailable:
	default:
		t.Errorf("%s: Probe without zfs-fuse answered %s (ready %v): %v; want not ready or Unavailable", round, status.Code(err), p.GetReady(), err)
	}
	_, err = c.CreateVolume(ctxT(t, 10*time.Second), &csi.CreateVolumeRequest{Name: "while-" + round,
		VolumeCapabilities: []*csi.VolumeCapability{MountCap()}, CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("%s: CreateVolume without zfs-fuse answered %s: %v; want Unavailable", round, status.Code(err), err)
	}
	_, err = c.ListVolumes(ctxT(t, 10*time.Second), &csi.ListVolumesRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("%s: ListVolumes without zfs-fuse answered %s: %v; want Unavailable", round, status.Code(err), err)
	}
}

// waitReady polls the Probe, as a liveness probe does, until it is ready;
// it fails the test with the last answer when limit passes first, and with
// what the restarted daemon itself says, which tells a driver that did not
// look again from one that could not bring its pool back.
func waitReady(t *testing.T, n *Node, c *CSI, round string, limit time.Duration) {
	t.Helper()
	ctx := ctxT(t, limit)
	start := time.Now()
	var last string
	for {
		p, err := c.Probe(ctx, &csi.ProbeRequest{})
		if err == nil && p.GetReady().GetValue() {
			t.Logf("%s: Probe ready %s after zfs-fuse answered", round, time.Since(start).Round(time.Millisecond))
			return
		}
		if err == nil {
			last = fmt.Sprintf("ready %v", p.GetReady())
		} else if ctx.Err() == nil || last == "" {
			last = fmt.Sprintf("%s: %v", status.Code(err), err)
		}
		select {
		case <-ctx.Done():
			pools, err := n.Exec(ctxT(t, 10*time.Second), "zpool", "list", "-o", "name,health")
			t.Fatalf("%s: Probe not ready %s after zfs-fuse was restarted; last answer %s\n`zpool list` in %s answers %q (%v)",
				round, limit, last, n.Name, strings.TrimSpace(pools), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
