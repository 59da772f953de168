package multinode

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
)

// up starts a harness with n nodes, their plugins and the controller.
func up(t *testing.T, n int, pluginArgs ...string) (*Harness, *CSI) {
	h := New(t, Options{Nodes: n})
	for _, nd := range h.Nodes {
		nd.StartPlugin(pluginArgs...)
	}
	_, sock := h.StartController("--unreachable-after=3s", "--replication-resync=2s")
	h.WaitPools(n)
	return h, h.Dial(sock)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func createOn(t *testing.T, ctrl *CSI, n *Node, name string, params map[string]string) string {
	t.Helper()
	r, err := ctrl.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{Name: name, Parameters: params,
		VolumeCapabilities: []*csi.VolumeCapability{MountCap()}, CapacityRange: &csi.CapacityRange{RequiredBytes: 512 << 20},
		AccessibilityRequirements: &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{"dotmesh.io/node": n.Name}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetVolume().GetAccessibleTopology()[0].GetSegments()["dotmesh.io/node"]; got != n.Name {
		t.Fatalf("placed on %s, preferred %s", got, n.Name)
	}
	return r.GetVolume().GetVolumeId()
}

func snapshot(t *testing.T, ctrl *CSI, id, name string) string {
	t.Helper()
	r, err := ctrl.CreateSnapshot(ctxT(t, time.Minute), &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetSnapshot().GetSnapshotId()
}

func node(h *Harness, pool string) *Node {
	for _, n := range h.Nodes {
		if "pool-"+n.Name == pool {
			return n
		}
	}
	return nil
}

func TestReplicationSendsOnlyTheIncrement(t *testing.T) {
	h, ctrl := up(t, 3)
	n0 := h.Nodes[0]
	c0 := h.Dial(n0.Socket())
	id := createOn(t, ctrl, n0, "replicated", map[string]string{"replicas": "2"})
	dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Write(ctxT(t, time.Minute), filepath.Join(dir, "data"), 32); err != nil {
		t.Fatal(err)
	}
	first := snapshot(t, ctrl, id, "first")
	rec := h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return len(d.Replicas) == 1 && d.Replicas[0].Commit == first })
	replica := node(h, rec.Replicas[0].Pool)
	if replica == nil || replica == n0 {
		t.Fatalf("replica on %q", rec.Replicas[0].Pool)
	}
	if err := n0.Write(ctxT(t, time.Minute), filepath.Join(dir, "data"), 4); err != nil {
		t.Fatal(err)
	}
	second := snapshot(t, ctrl, id, "second")
	rec = h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Replicas[0].Commit == second })

	// What an incremental stream between the two commits weighs, measured
	// with the bare tools on the master.
	ds := "pool-" + n0.Name + "/dots/" + id
	out, err := n0.Exec(ctxT(t, time.Minute), "sh", "-c", "zfs send -p -I "+ds+"@"+strings.Split(first, "@")[1]+" "+ds+"@"+strings.Split(second, "@")[1]+" | wc -c")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(out)
	if got := rec.Replicas[0].LastBytes; want == "" || strings.TrimSpace(itoa(got)) != want {
		t.Fatalf("replica got a %d-byte stream; the increment is %s bytes", got, want)
	}
	if rec.Replicas[0].LastBytes > 8<<20 {
		t.Fatalf("a 4 MiB change sent %d bytes", rec.Replicas[0].LastBytes)
	}
	snaps, err := replica.Exec(ctxT(t, time.Minute), "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", "pool-"+replica.Name+"/dots/"+id)
	if err != nil || !strings.Contains(snaps, strings.Split(second, "@")[1]) || !strings.Contains(snaps, strings.Split(first, "@")[1]) {
		t.Fatalf("replica %s holds %q (%v)", replica.Name, snaps, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
