//go:build zfs

package mesh_test

import (
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// A node serving two pools (PV-per-node, after an adoption): each call
// reaches the pool it names, and a dot staged there moves onto the local
// pool that already holds its replica, so only the diff travels.
func TestOneNodeServesTwoPools(t *testing.T) {
	tc := newClusterOf(t, []int{1, 2}, time.Minute, nil)
	a, b := tc.nodes[0], tc.nodes[1]

	dialer := remote.NewDialer(identity(t, tc.ca, "node:probe"))
	t.Cleanup(dialer.Close)
	for _, p := range b.pools {
		c, err := dialer.Client(b.addr, p.Name())
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctxT(t))
		if err != nil || info.Name != p.Name() {
			t.Fatalf("call naming pool %s answered for %q (%v)", p.Name(), info.Name, err)
		}
	}
	for pool, want := range map[string]codes.Code{"": codes.FailedPrecondition, "no-such-pool": codes.Unavailable} {
		c, _ := dialer.Client(b.addr, pool)
		_, err := c.Info(ctxT(t))
		if got := status.Code(errcode.ToStatus(err)); got != want {
			t.Fatalf("call naming pool %q of a two-pool zfsd: code %v (%v), want %v", pool, got, err, want)
		}
	}

	d := tc.createDot(t, a, 2)
	dir := a.mount(t, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 8<<20)
	tc.commit(t, d.ID, "c1")
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if len(rec.Replicas) != 1 || rec.Replicas[0].Commit == "" {
		t.Fatalf("record %+v: want one caught-up replica", rec)
	}
	replicaPool := rec.Replicas[0].Pool
	if err := a.store.UnmountDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}

	dir = b.mount(t, d.ID)
	if got := sum(t, filepath.Join(dir, "data")); got != want {
		t.Fatalf("data on the new master: sha256 %s, want %s", got, want)
	}
	rec, _ = tc.view.GetDot(ctxT(t), d.ID)
	if rec.Master != replicaPool {
		t.Fatalf("dot moved to pool %s; want %s, the local pool that held its replica", rec.Master, replicaPool)
	}
	old, ok := rec.Replica(a.pool.Name())
	if !ok {
		t.Fatalf("old master %s is not a replica: %+v", a.pool.Name(), rec.Replicas)
	}
	if old.Seq != rec.Seq {
		t.Fatalf("old master replica at seq %d, master at %d", old.Seq, rec.Seq)
	}
}
