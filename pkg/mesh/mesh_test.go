//go:build zfs

package mesh_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mesh"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/authz"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// node is a zfsd over TCP loopback with mutual TLS serving one pool (or
// several, in PV-per-node mode), and the mesh store its node plugin would use.
type node struct {
	pool  *zfsd.Pool   // its first pool
	pools []*zfsd.Pool // all of them
	addr  string
	store *mesh.Store
	srv   *grpc.Server
	stop  context.CancelFunc
}

type testCluster struct {
	view  *cluster.Memory
	ca    *pki.CA
	nodes []*node
	ctrl  *mesh.Store
}

func identity(t *testing.T, ca *pki.CA, name string) *pki.Identity {
	t.Helper()
	cert, key, err := ca.Issue(name, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newCluster(t *testing.T, n int, grace time.Duration) *testCluster {
	return newClusterWith(t, n, grace, nil)
}

// newClusterWith is newCluster with extra server options for node i's
// zfsd (nil for none), such as an interceptor that breaks its streams.
func newClusterWith(t *testing.T, n int, grace time.Duration, opts func(i int) []grpc.ServerOption) *testCluster {
	perNode := make([]int, n)
	for i := range perNode {
		perNode[i] = 1
	}
	return newClusterOf(t, perNode, grace, opts)
}

// newClusterOf makes len(perNode) nodes, node i serving perNode[i] pools.
func newClusterOf(t *testing.T, perNode []int, grace time.Duration, opts func(i int) []grpc.ServerOption) *testCluster {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{view: cluster.NewMemory(), ca: ca}
	total := 0
	for i, count := range perNode {
		var pools []*zfsd.Pool
		for range count {
			p, _ := zfstest.Pool(t, 512<<20)
			pools = append(pools, p)
		}
		total += count
		pool := pools[0]
		nodeName := "node-" + string(rune('a'+i))
		id := identity(t, ca, "node:"+nodeName)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers := remote.NewDialer(id)
		set := zfsd.NewSet(pools...)
		so := remote.ServerOptions(id, authz.New(authz.Config{View: tc.view, Pools: authz.PoolNames(set)}))
		if opts != nil {
			so = append(so, opts(i)...)
		}
		srv := grpc.NewServer(so...)
		api.RegisterZfsdServer(srv, remote.NewServer(set, peers))
		go func() { _ = srv.Serve(l) }()
		nd := &node{pool: pool, pools: pools, addr: l.Addr().String(), srv: srv}
		nd.store = mesh.New(mesh.Config{View: tc.view, Peers: peers, Local: set, LocalAddress: nd.addr,
			Unreachable: time.Second, FailoverGrace: grace})
		ctx, cancel := context.WithCancel(context.Background())
		nd.stop = cancel
		go nd.store.Heartbeat(ctx, nodeName, 200*time.Millisecond)
		t.Cleanup(func() { cancel(); srv.Stop(); peers.Close() })
		tc.nodes = append(tc.nodes, nd)
	}
	tc.ctrl = mesh.New(mesh.Config{View: tc.view, Peers: remote.NewDialer(identity(t, ca, "controller")),
		Unreachable: time.Second, FailoverGrace: grace})
	t.Cleanup(tc.ctrl.Wait)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pools, _ := tc.ctrl.Pools(context.Background())
		if len(pools) == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pools alive", len(pools), total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return tc
}

func ctxT(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func writeRandom(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return sum(t, path)
}

func sum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (tc *testCluster) createDot(t *testing.T, on *node, replicas int) zfsd.Dot {
	t.Helper()
	d, err := tc.ctrl.CreateDot(ctxT(t), zfsd.DotSpec{Pool: on.pool.Name(), ID: uuid.NewString(), Name: "dot-" + uuid.NewString()[:8],
		Capacity: 256 << 20, Params: zfsd.Params{Replicas: replicas}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mount stages a dot on n through the mesh (a handoff when n is not its
// master) and returns where it is mounted.
func (n *node) mount(t *testing.T, id string) string {
	t.Helper()
	dir, err := n.store.MountDot(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func (tc *testCluster) commit(t *testing.T, dot, name string) {
	t.Helper()
	if _, err := tc.ctrl.CreateCommit(ctxT(t), dot, name); err != nil {
		t.Fatal(err)
	}
	tc.ctrl.Wait()
}

func TestReplicationIsIncremental(t *testing.T) {
	tc := newCluster(t, 3, time.Minute)
	a := tc.nodes[0]
	d := tc.createDot(t, a, 2)
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if len(rec.Replicas) != 1 || rec.Master != a.pool.Name() {
		t.Fatalf("record %+v: want master %s and one replica", rec, a.pool.Name())
	}
	dir := a.mount(t, d.ID)
	writeRandom(t, filepath.Join(dir, "data"), 8<<20)
	tc.commit(t, d.ID, "c1")
	writeRandom(t, filepath.Join(dir, "data"), 1<<20)
	tc.commit(t, d.ID, "c2")

	rec, _ = tc.view.GetDot(ctxT(t), d.ID)
	r := rec.Replicas[0]
	if r.Seq != 2 || r.Commit != rec.NewestCommit {
		t.Fatalf("replica %+v lags master (seq %d, newest %s)", r, rec.Seq, rec.NewestCommit)
	}
	// The second stream carries the 1 MiB written since c1, not the dot.
	if r.LastBytes < 1<<20 || r.LastBytes > 2<<20 {
		t.Fatalf("incremental stream was %d bytes for 1 MiB of new data", r.LastBytes)
	}
	var holder *node
	for _, n := range tc.nodes {
		if n.pool.Name() == r.Pool {
			holder = n
		}
	}
	snaps, err := holder.pool.Snapshots(ctxT(t), d.ID)
	if err != nil || len(snaps) != 2 {
		t.Fatalf("replica holds %v, %v; want both commits", snaps, err)
	}
}

func TestHandoffMovesOnlyTheDiff(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 2)
	dir := a.mount(t, d.ID)
	writeRandom(t, filepath.Join(dir, "data"), 16<<20)
	tc.commit(t, d.ID, "c1")
	want := writeRandom(t, filepath.Join(dir, "new"), 2<<20) // not committed

	// Staged on the master (a bind of its mount, as NodeStage makes): refused.
	staging := filepath.Join(t.TempDir(), "staging")
	if err := mountinfo.Bind(dir, staging, false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.MountDot(ctxT(t), d.ID); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("handoff while staged on the master: %v, want FailedPrecondition", err)
	}
	if err := mountinfo.Unmount(staging); err != nil {
		t.Fatal(err)
	}
	bdir := b.mount(t, d.ID)
	if got := sum(t, filepath.Join(bdir, "new")); got != want {
		t.Fatal("uncommitted data did not follow the dot")
	}
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if rec.Master != b.pool.Name() || rec.Moving != "" {
		t.Fatalf("after handoff: master %s moving %q", rec.Master, rec.Moving)
	}
	// The pools agree: a view rebuilt now names the new master.
	if err := tc.view.DeleteDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ctrl.Rebuild(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, _ := tc.view.GetDot(ctxT(t), d.ID); got.Master != b.pool.Name() {
		t.Fatalf("view rebuilt after a handoff names %s as master, not %s", got.Master, b.pool.Name())
	}
	rec, _ = tc.view.GetDot(ctxT(t), d.ID)
	if old, ok := rec.Replica(a.pool.Name()); !ok || old.Seq != rec.Seq {
		t.Fatalf("old master is not an up-to-date replica: %+v", rec.Replicas)
	}
}

func TestExactlyOneNodeWinsARace(t *testing.T) {
	tc := newCluster(t, 3, time.Minute)
	d := tc.createDot(t, tc.nodes[0], 1)
	dir, err := tc.nodes[0].store.MountDot(ctxT(t), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(dir, "data"), 4<<20)
	tc.commit(t, d.ID, "c1")
	if err := tc.nodes[0].store.UnmountDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range tc.nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = n.store.MountDot(ctxT(t), d.ID)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case status.Code(err) == codes.Aborted:
		default:
			t.Errorf("loser got %v, want Aborted", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d nodes became master (errors %v)", won, errs)
	}
}

func TestFailoverAfterGraceReportsLoss(t *testing.T) {
	grace := 3 * time.Second
	tc := newCluster(t, 2, grace)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 2)
	dir := a.mount(t, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 4<<20)
	tc.commit(t, d.ID, "replicated")
	writeRandom(t, filepath.Join(dir, "data"), 1<<20)
	// A commit the replica never gets: the master dies right after.
	a.stop()
	a.srv.Stop()
	if _, err := a.pool.CreateCommit(ctxT(t), d.ID, "lost"); err != nil {
		t.Fatal(err)
	}
	rec, _ := tc.view.GetDot(ctxT(t), d.ID) // what CreateCommit records
	rec.Seq++
	if _, err := tc.view.UpdateDot(ctxT(t), rec); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past Unreachable
	// Fast means not waiting on the dead master: a call that did would end
	// with the deadline's code, not Unavailable.
	fast, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := b.store.MountDot(fast, d.ID)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "node-a") {
		t.Fatalf("staging while the master is gone: %v; want Unavailable naming the master's node node-a", err)
	}
	time.Sleep(grace)
	bdir, err := b.store.MountDot(ctxT(t), d.ID)
	if err != nil {
		t.Fatalf("after the grace period: %v", err)
	}
	if got := sum(t, filepath.Join(bdir, "data")); got != want {
		t.Fatal("promoted replica does not hold the last replicated commit's data")
	}
	rec, _ = tc.view.GetDot(ctxT(t), d.ID)
	if rec.Master != b.pool.Name() || rec.Loss == nil || rec.Loss.CommitsLost != 1 || rec.Loss.FromPool != a.pool.Name() {
		t.Fatalf("record after failover: master %s loss %+v", rec.Master, rec.Loss)
	}
	if len(tc.view.Events) != 1 {
		t.Fatalf("events %q, want one failover event", tc.view.Events)
	}
}

func TestZfsdRefusesPeersWithoutAClusterCertificate(t *testing.T) {
	tc := newCluster(t, 1, time.Minute)
	addr := tc.nodes[0].addr
	other, _ := pki.NewCA("someone else's CA")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(tc.ca.CertPEM)
	for name, creds := range map[string]credentials.TransportCredentials{
		"no client certificate":     credentials.NewTLS(&tls.Config{RootCAs: roots}),
		"certificate of another CA": credentials.NewTLS(identity(t, other, "intruder").ClientTLS()),
	} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		_, err = api.NewZfsdClient(conn).Info(ctxT(t), &api.InfoRequest{})
		conn.Close()
		if err == nil {
			t.Errorf("%s: zfsd answered", name)
		}
	}
	if _, err := remote.NewDialer(nil).Client(addr, ""); err == nil {
		t.Error("a dialer without an identity dialed TCP")
	}
	c, _ := remote.NewDialer(identity(t, tc.ca, "node:friend")).Client(addr, "")
	if _, err := c.Info(ctxT(t)); err != nil {
		t.Fatalf("a peer with a cluster certificate was refused: %v", err)
	}
}

func TestViewIsRebuiltFromThePools(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a := tc.nodes[0]
	// An interval that never comes due here (nothing runs AutoCommit), but
	// that the pool stores and the rebuilt record must have again.
	d, err := tc.ctrl.CreateDot(ctxT(t), zfsd.DotSpec{Pool: a.pool.Name(), ID: uuid.NewString(), Name: "rebuilt",
		Capacity: 64 << 20, Params: zfsd.Params{Replicas: 2, CommitInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	dir := a.mount(t, d.ID)
	writeRandom(t, filepath.Join(dir, "data"), 1<<20)
	tc.commit(t, d.ID, "c1")
	tc.commit(t, d.ID, "c2")
	// Both copies hold the same commits: only the pools' own record of
	// which copy is master can tell them apart.
	before, _ := tc.view.GetDot(ctxT(t), d.ID)
	if err := tc.view.DeleteDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}
	n, err := tc.ctrl.Rebuild(ctxT(t))
	if err != nil || n != 1 {
		t.Fatalf("rebuild restored %d, %v", n, err)
	}
	after, err := tc.view.GetDot(ctxT(t), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Master != before.Master || after.Name != before.Name || after.Capacity != before.Capacity ||
		after.CommitInterval != time.Hour || after.Seq != 2 || len(after.Replicas) != 1 || after.Replicas[0].Seq != 2 {
		t.Fatalf("rebuilt %+v\nfrom     %+v", after, before)
	}
	if n, _ := tc.ctrl.Rebuild(ctxT(t)); n != 0 {
		t.Fatalf("a second rebuild restored %d records", n)
	}
}

func TestCommitIntervalCommitsAndReplicates(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	// The shortest interval a StorageClass may ask for: the node the dot
	// is made on refuses less. The first commit is due at once.
	d, err := tc.ctrl.CreateDot(ctxT(t), zfsd.DotSpec{Pool: tc.nodes[0].pool.Name(), ID: uuid.NewString(), Name: "auto",
		Capacity: 64 << 20, Params: zfsd.Params{Replicas: 2, CommitInterval: zfsd.MinCommitInterval}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go tc.ctrl.AutoCommit(ctx, 100*time.Millisecond)
	deadline := time.Now().Add(zfsd.MinCommitInterval + 30*time.Second)
	for {
		rec, _ := tc.view.GetDot(ctxT(t), d.ID)
		if rec.Seq >= 2 && len(rec.Replicas) == 1 && rec.Replicas[0].Seq >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no automatic commits replicated: %+v", rec)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	// Automatic commits are not CSI snapshots.
	cs, err := tc.ctrl.ListCommits(ctxT(t))
	if err != nil || len(cs) != 0 {
		t.Fatalf("automatic commits listed as snapshots: %+v, %v", cs, err)
	}
}

func TestBranchOfACommitOnAnotherPool(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 1)
	dir := a.mount(t, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 2<<20)
	c, err := tc.ctrl.CreateCommit(ctxT(t), d.ID, "c1")
	if err != nil {
		t.Fatal(err)
	}
	br, err := tc.ctrl.CreateDot(ctxT(t), zfsd.DotSpec{Pool: b.pool.Name(), ID: uuid.NewString(), Name: "branch",
		Capacity: 64 << 20, Source: zfsd.Source{Kind: zfsd.SourceCommit, ID: c.ID}, Params: zfsd.Params{Replicas: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if br.Pool != b.pool.Name() {
		t.Fatalf("branch on %s, asked for %s", br.Pool, b.pool.Name())
	}
	bdir, err := b.store.MountDot(ctxT(t), br.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum(t, filepath.Join(bdir, "data")); got != want {
		t.Fatal("branch on the other pool does not hold the commit's data")
	}
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if _, ok := rec.Replica(b.pool.Name()); !ok {
		t.Fatalf("the pool that received the source is not recorded as a replica: %+v", rec.Replicas)
	}
}

func TestDivergedReplicaIsReseeded(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 2)
	dir := a.mount(t, d.ID)
	writeRandom(t, filepath.Join(dir, "data"), 1<<20)
	tc.commit(t, d.ID, "c1")
	// The replica takes a commit of its own: it has diverged.
	if _, err := b.pool.CreateCommit(ctxT(t), d.ID, "rogue"); err != nil {
		t.Fatal(err)
	}
	want := writeRandom(t, filepath.Join(dir, "data"), 1<<20)
	tc.commit(t, d.ID, "c2")
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if rec.Replicas[0].Seq != rec.Seq {
		t.Fatalf("replica not caught up: %+v", rec.Replicas)
	}
	snaps, _ := b.pool.Snapshots(ctxT(t), d.ID)
	for _, s := range snaps {
		c, _ := b.pool.GetCommit(ctxT(t), d.ID+"@"+s.Name)
		if c.Name == "rogue" {
			t.Fatal("the diverged commit survived: the replica was merged, not re-seeded")
		}
	}
	if len(snaps) != 2 {
		t.Fatalf("re-seeded replica holds %d commits, want 2", len(snaps))
	}
	// And it holds the master's data.
	if err := a.store.UnmountDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}
	bdir := b.mount(t, d.ID)
	if got := sum(t, filepath.Join(bdir, "data")); got != want {
		t.Fatal("re-seeded replica does not hold the master's data")
	}
}

func TestDeletedDotIsNotRebuiltFromAnUnreachableReplica(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 2)
	tc.commit(t, d.ID, "c1")
	// b stops reporting: its copy cannot be dropped now.
	b.stop()
	time.Sleep(1500 * time.Millisecond)
	if err := tc.ctrl.DeleteDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ctrl.GetDot(ctxT(t), d.ID); !errors.Is(err, zfsd.ErrNotFound) {
		t.Fatalf("deleted dot still visible: %v", err)
	}
	rec, err := tc.view.GetDot(ctxT(t), d.ID)
	if err != nil || !rec.Deleted || len(rec.Replicas) != 1 {
		t.Fatalf("tombstone %+v, %v", rec, err)
	}
	// b comes back; a rebuild must not resurrect the dot from its copy.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.store.Heartbeat(ctx, "node-b", 200*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	if n, err := tc.ctrl.Rebuild(ctxT(t)); err != nil || n != 0 {
		t.Fatalf("rebuild restored %d records (%v) from a deleted dot's copy", n, err)
	}
	// The next reconcile pass drops the copy. The master still holds the
	// commit c1 (a snapshot outliving its claim), so the tombstone stays and
	// keeps naming the master for it...
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	tc.ctrl.Reconcile(rctx, time.Hour)
	rcancel()
	rec, err = tc.view.GetDot(ctxT(t), d.ID)
	if err != nil || !rec.Deleted || rec.Master != a.pool.Name() || len(rec.Replicas) != 0 {
		t.Fatalf("tombstone after the copy was dropped: %+v, %v; want deleted, master %s, no replicas", rec, err, a.pool.Name())
	}
	commits, err := tc.ctrl.ListCommits(ctxT(t))
	if err != nil || len(commits) != 1 {
		t.Fatalf("commits of the deleted dot: %+v, %v; want c1", commits, err)
	}
	// ...until that commit goes, taking the dot and the tombstone with it.
	if err := tc.ctrl.DeleteCommit(ctxT(t), commits[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.view.GetDot(ctxT(t), d.ID); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("tombstone left after the last commit went: %v", err)
	}
	if dots, _ := a.pool.ListDots(ctxT(t)); len(dots) != 0 {
		t.Fatalf("deleted dot left on its master after its last commit went: %+v", dots)
	}
	if dots, _ := b.pool.ListDots(ctxT(t)); len(dots) != 0 {
		t.Fatalf("copy left on the returned pool: %+v", dots)
	}
}

// A commit of a staged dot carries the staging path as the dot's
// mountpoint (send -p); the replica must not keep it, or an import would
// mount the copy at another node's kubelet path.
func TestReplicaDoesNotKeepTheStagingPath(t *testing.T) {
	tc := newCluster(t, 2, time.Minute)
	a := tc.nodes[0]
	d := tc.createDot(t, a, 2)
	staging := filepath.Join(t.TempDir(), "globalmount")
	if err := a.store.StageDot(ctxT(t), d.ID, staging); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.store.UnstageDot(context.Background(), d.ID, staging) })
	writeRandom(t, filepath.Join(staging, "data"), 1<<20)
	tc.commit(t, d.ID, "c1")
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if len(rec.Replicas) != 1 || rec.Replicas[0].Seq != 1 {
		t.Fatalf("record %+v: want one replica at seq 1", rec)
	}
	ds := rec.Replicas[0].Pool + "/dots/" + d.ID
	out, err := exec.Command("zfs", "get", "-H", "-o", "value,source", "mountpoint", ds).Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), staging) || strings.Contains(string(out), "local") {
		t.Fatalf("replica %s mountpoint %q: it kept the master's staging path", ds, strings.TrimSpace(string(out)))
	}
}
