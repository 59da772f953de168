//go:build zfs

package multinode

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
)

// BenchmarkMesh measures replication, migration and the first byte after a
// handoff on the harness, each against the bare zfs send | zfs recv pipe
// between the same two nodes over the same link, in one run. It prints a
// table; run it with -benchtime=1x (make bench).
func BenchmarkMesh(b *testing.B) {
	for range b.N {
		benchMesh(b)
	}
}

func benchMesh(b *testing.B) {
	h := New(b, Options{Nodes: 2, DiskSize: 5 << 30})
	for _, n := range h.Nodes {
		n.StartPlugin("--pool-size=4Gi")
	}
	_, sock := h.StartController("--unreachable-after=5s", "--replication-resync=1s")
	h.WaitPools(2)
	ctrl := h.Dial(sock)
	n0, n1 := h.Nodes[0], h.Nodes[1]
	c0, c1 := h.Dial(n0.Socket()), h.Dial(n1.Socket())
	ctx := context.Background()
	must := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}

	r, err := ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "bench", Parameters: map[string]string{"replicas": "2"},
		VolumeCapabilities: []*csi.VolumeCapability{MountCap()}, CapacityRange: &csi.CapacityRange{RequiredBytes: 1200 << 20},
		AccessibilityRequirements: &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{"dotmesh.io/node": n0.Name}}}}})
	must(err)
	id := r.GetVolume().GetVolumeId()
	dir, err := n0.Stage(ctx, c0, id)
	must(err)
	must(n0.Write(ctx, filepath.Join(dir, "data"), 1024))

	// Replication of a 1 GiB commit: from the commit to the replica
	// holding it, as the cluster view records it.
	s, err := ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "gib", SourceVolumeId: id})
	must(err)
	commit := s.GetSnapshot().GetSnapshotId()
	committed := s.GetSnapshot().GetCreationTime().AsTime()
	rec := h.WaitDot(id, 10*time.Minute, func(d cluster.Dot) bool { return len(d.Replicas) == 1 && d.Replicas[0].Commit == commit })
	repl := rec.Replicas[0].Updated.Sub(committed)
	replBytes := rec.Replicas[0].LastBytes
	ds0 := "pool-" + n0.Name + "/dots/" + id
	bareRepl, bareReplBytes := barePipe(b, n0, n1, ds0+"@"+strings.Split(commit, "@")[1], "pool-"+n1.Name+"/bare-replica")

	// Migration of 1 GiB committed + 10 MiB new, and the first byte read on
	// the new node after the handoff. One migration is one sample on a
	// noisy two-core machine, so the dot goes back and forth, 10 MiB new
	// each time, and the median counts.
	must(n0.Write(ctx, filepath.Join(dir, "new"), 10))
	must(n0.Unstage(ctx, c0, id))
	start := time.Now()
	dir1, err := n1.Stage(ctx, c1, id)
	must(err)
	migrations := []time.Duration{time.Since(start)}
	_, err = n1.Exec(ctx, "head", "-c1", filepath.Join(dir1, "new"))
	must(err)
	firstByte := time.Since(start)
	type side struct {
		n *Node
		c *CSI
	}
	from, to := side{n1, c1}, side{n0, c0}
	for len(migrations) < migrationSamples {
		must(from.n.Write(ctx, filepath.Join(dir1, fmt.Sprintf("new%d", len(migrations))), 10))
		must(from.n.Unstage(ctx, from.c, id))
		start := time.Now()
		dir1, err = to.n.Stage(ctx, to.c, id)
		must(err)
		migrations = append(migrations, time.Since(start))
		from, to = to, from
	}
	slices.Sort(migrations)
	migration := migrations[len(migrations)/2]
	// The full copy a driver without history would make: the dot's
	// newest state, all of it, between the same nodes.
	latest, err := n0.Exec(ctx, "sh", "-c", "zfs list -H -o name -t snapshot -r "+ds0+" | tail -1")
	must(err)
	full, fullBytes := barePipe(b, n0, n1, strings.TrimSpace(latest), "pool-"+n1.Name+"/bare-full")

	mibps := func(bytes int64, d time.Duration) float64 { return float64(bytes) / (1 << 20) / d.Seconds() }
	fmt.Printf("\ndotmesh-csi mesh bench: 2 harness nodes (namespaces, zfs-fuse, veth), one run\n\n")
	fmt.Printf("| %-44s | %10s | %12s | %-36s | %10s | %8s |\n", "measure", "driver", "bytes", "baseline", "baseline", "ratio")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|\n", dashes(46), dashes(12), dashes(14), dashes(38), dashes(12), dashes(10))
	fmt.Printf("| %-44s | %7.1f MiB/s | %12d | %-36s | %6.1f MiB/s | %7.0f%% |\n", "replication of a 1 GiB commit (throughput)",
		mibps(replBytes, repl), replBytes, "zfs send | socat | zfs recv", mibps(bareReplBytes, bareRepl), 100*mibps(replBytes, repl)/mibps(bareReplBytes, bareRepl))
	fmt.Printf("| %-44s | %7.0f ms | %12s | %-36s | %7.0f ms | %7.1fx |\n", fmt.Sprintf("migration: 1 GiB + 10 MiB new (p50 of %d)", migrationSamples),
		ms(migration), "", fmt.Sprintf("full copy of the dot (%d MiB)", fullBytes>>20), ms(full), full.Seconds()/migration.Seconds())
	fmt.Printf("| %-44s | %7.0f ms | %12s | %-36s | %10s | %8s |\n", "handoff to first byte read on the new node", ms(firstByte), "", "", "", "")
	b.ReportMetric(float64(full)/float64(migration), "migration-speedup")
	b.ReportMetric(100*mibps(replBytes, repl)/mibps(bareReplBytes, bareRepl), "replication-%-of-pipe")
}

// migrationSamples is how many handoffs the migration row is the median of.
const migrationSamples = 5

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func dashes(n int) string { return strings.Repeat("-", n) }

// barePipe times `zfs send -p -R snap` on from into `zfs recv` on to over
// TCP between the nodes, the bare tools with nothing of the driver, then
// destroys the copy. It returns the time and the stream's size.
func barePipe(b *testing.B, from, to *Node, snap, target string) (time.Duration, int64) {
	b.Helper()
	ctx := context.Background()
	port := "7600"
	recv := to.Start("bare-recv", "sh", "-c", "socat -u TCP-LISTEN:"+port+",reuseaddr - | zfs recv -u "+target)
	waitFor(b, 10*time.Second, func() bool {
		out, _ := to.Exec(ctx, "sh", "-c", "cat /proc/net/tcp | awk '{print $2}' | grep -ci ':1DB0$' || true")
		return strings.TrimSpace(out) != "0"
	})
	start := time.Now()
	out, err := from.Exec(ctx, "bash", "-c", "zfs send -p -R "+snap+" | tee >(wc -c >&2) | socat -u - TCP:"+to.IP+":"+port)
	if err != nil {
		b.Fatal(err)
	}
	if err := recv.Wait(time.Minute); err != nil {
		b.Fatalf("bare receive: %v", err)
	}
	took := time.Since(start)
	var n int64
	if _, err := fmt.Sscan(strings.TrimSpace(out), &n); err != nil {
		b.Fatalf("stream size from wc: %q: %v", out, err)
	}
	if _, err := to.Exec(ctx, "zfs", "destroy", "-r", target); err != nil {
		b.Logf("destroying the bare copy: %v", err)
	}
	return took, n
}
