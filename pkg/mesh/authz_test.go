//go:build zfs

package mesh_test

import (
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// Over real pools and mutual TLS, with every zfsd behind pkg/zfsd/authz:
// a node may not delete, drop or push out another node's dot, even one
// it holds a replica of; the dot, its data and the replica are as they
// were, and the controller's replication still runs through the guard.
func TestANodeCannotChangeOrReadOutAnotherNodesDot(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 2)
	dir := a.mount(t, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 4<<20)
	tc.commit(t, d.ID, "c1")
	before, err := b.pool.Snapshots(ctxT(t), d.ID)
	if err != nil || len(before) != 1 {
		t.Fatalf("node b's replica before: %v, %v", before, err)
	}

	// Node b, with its own certificate, on node a's zfsd.
	dialer := remote.NewDialer(identity(t, tc.ca, "node:node-b"))
	t.Cleanup(dialer.Close)
	onA, err := dialer.Client(a.addr, a.pool.Name())
	if err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"DeleteDot": onA.DeleteDot(ctxT(t), d.ID),
		"DropCopy":  onA.DropCopy(ctxT(t), d.ID),
		"Push to node b itself": func() error {
			_, err := onA.Push(ctxT(t), d.ID, b.addr, b.pool.Name())
			return err
		}(),
	} {
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("node b's %s on node a: %v, want PermissionDenied", what, err)
		}
	}

	if _, err := a.pool.GetDot(ctxT(t), d.ID); err != nil {
		t.Fatalf("the dot on node a: %v", err)
	}
	if got := sum(t, filepath.Join(dir, "data")); got != want {
		t.Fatalf("the dot's data: sha256 %s, want %s", got, want)
	}
	after, err := b.pool.Snapshots(ctxT(t), d.ID)
	if err != nil || len(after) != 1 || after[0] != before[0] {
		t.Fatalf("node b's replica after: %v (%v), want %v", after, err, before)
	}

	// The controller's own push still reaches the replica.
	tc.commit(t, d.ID, "c2")
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if r := rec.Replicas[0]; r.Pool != b.pool.Name() || r.Seq != rec.Seq {
		t.Fatalf("replica %+v after the second commit, master at seq %d", r, rec.Seq)
	}
}
