//go:build zfs

package multinode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
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
	// A dot in a cluster roams: no topology pins it, and the volume
	// context names the pool it was made in.
	if top := r.GetVolume().GetAccessibleTopology(); len(top) != 0 {
		t.Fatalf("cluster dot reports topology %v; it would pin the PV to those nodes", top)
	}
	if got, want := r.GetVolume().GetVolumeContext()["pool"], "pool-"+n.Name; got != want {
		t.Fatalf("placed on pool %s, preferred node %s (pool %s)", got, n.Name, want)
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

func TestMigrationMovesOnlyTheLatestDiff(t *testing.T) {
	h, ctrl := up(t, 2)
	n0, n1 := h.Nodes[0], h.Nodes[1]
	c0, c1 := h.Dial(n0.Socket()), h.Dial(n1.Socket())
	id := createOn(t, ctrl, n0, "migrating", map[string]string{"replicas": "2"})
	dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Write(ctxT(t, 2*time.Minute), filepath.Join(dir, "committed"), 256); err != nil {
		t.Fatal(err)
	}
	c := snapshot(t, ctrl, id, "base")
	h.WaitDot(id, 2*time.Minute, func(d cluster.Dot) bool { return d.Replicas[0].Commit == c })
	if err := n0.Write(ctxT(t, time.Minute), filepath.Join(dir, "new"), 8); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, f := range []string{"committed", "new"} {
		if want[f], err = n0.Sum(ctxT(t, time.Minute), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	// The pod moves: unpublished here, staged there.
	if _, err := n1.Stage(ctxT(t, time.Minute), c1, id); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("staging elsewhere while staged on the master: %v, want FailedPrecondition", err)
	}
	if err := n0.Unstage(ctxT(t, time.Minute), c0, id); err != nil {
		t.Fatal(err)
	}
	before, err := n0.TxBytes(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dir1, err := n1.Stage(ctxT(t, 2*time.Minute), c1, id)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	after, err := n0.TxBytes(ctxT(t, time.Minute))
	if err != nil || after <= before {
		t.Fatalf("tx bytes after the migration: %d (before %d), %v", after, before, err)
	}
	for f, sum := range want {
		got, err := n1.Sum(ctxT(t, time.Minute), filepath.Join(dir1, f))
		if err != nil || got != sum {
			t.Fatalf("%s on the new node: %s, %v; want %s", f, got, err, sum)
		}
	}
	sent := after - before
	t.Logf("migration of 256 MiB committed + 8 MiB new took %s; node0 sent %d bytes", took, sent)
	if sent >= 16<<20 {
		t.Fatalf("%d bytes crossed the network for 8 MiB of new data", sent)
	}
	rec := h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Master == "pool-"+n1.Name })
	if _, ok := rec.Replica("pool-" + n0.Name); !ok {
		t.Fatalf("old master is not a replica: %+v", rec.Replicas)
	}
}

func TestSplitBrainIsRefused(t *testing.T) {
	h, ctrl := up(t, 3)
	n0 := h.Nodes[0]
	id := createOn(t, ctrl, n0, "contested", map[string]string{"replicas": "1"})
	c0 := h.Dial(n0.Socket())
	dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Write(ctxT(t, time.Minute), filepath.Join(dir, "data"), 64); err != nil {
		t.Fatal(err)
	}
	if err := n0.Unstage(ctxT(t, time.Minute), c0, id); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, n := range h.Nodes[1:] {
		go func() {
			_, err := n.Stage(ctxT(t, 2*time.Minute), h.Dial(n.Socket()), id)
			errs <- err
		}()
	}
	won := 0
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			won++
		case status.Code(err) == codes.Aborted:
			t.Logf("loser: %v", err)
		default:
			t.Errorf("loser got %v, want Aborted", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d nodes became master of one dot", won)
	}
	rec := h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Moving == "" })
	if rec.Master == "pool-"+n0.Name {
		t.Fatalf("master did not move: %+v", rec)
	}
}

func TestFailoverAfterTheGracePeriod(t *testing.T) {
	const grace = 12 * time.Second
	h, ctrl := up(t, 2, "--unreachable-after=3s", "--failover-grace="+grace.String())
	n0, n1 := h.Nodes[0], h.Nodes[1]
	c0, c1 := h.Dial(n0.Socket()), h.Dial(n1.Socket())
	id := createOn(t, ctrl, n0, "failing", map[string]string{"replicas": "2"})
	dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Write(ctxT(t, time.Minute), filepath.Join(dir, "data"), 16); err != nil {
		t.Fatal(err)
	}
	want, err := n0.Sum(ctxT(t, time.Minute), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	c := snapshot(t, ctrl, id, "replicated")
	h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Replicas[0].Commit == c })

	// Mid-write, the master's node dies.
	n0.Start("writer", "dd", "if=/dev/urandom", "of="+filepath.Join(dir, "data"), "bs=1M", "count=4096", "oflag=append", "conv=notrunc")
	time.Sleep(500 * time.Millisecond)
	n0.Kill()
	killed := time.Now()

	var firstErr error
	for {
		start := time.Now()
		_, err := n1.Stage(ctxT(t, time.Minute), c1, id)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("staging while the master is gone: %v, want Unavailable", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("staging took %s to fail; it must fail fast", took)
		}
		if firstErr == nil {
			firstErr = err
			if !strings.Contains(err.Error(), n0.Name) {
				t.Fatalf("the error does not name the master's node %s: %v", n0.Name, err)
			}
		}
		if time.Since(killed) > grace+time.Minute {
			t.Fatalf("no failover a minute after the grace period: %v", err)
		}
		time.Sleep(time.Second)
	}
	if firstErr == nil {
		t.Fatal("staging succeeded at once, before the grace period")
	}
	// The grace period runs from the master's last heartbeat, which came up
	// to one heartbeat interval (2 s) before the kill.
	if since := time.Since(killed); since < grace-2*time.Second {
		t.Fatalf("failed over %s after the kill, before the %s grace period", since, grace)
	}
	t.Logf("first refusal: %v", firstErr)
	got, err := n1.Sum(ctxT(t, time.Minute), filepath.Join(n1.KubeletDir(), "pods", id, "mount", "data"))
	if err != nil || got != want {
		t.Fatalf("data after failover %s, %v; want the last replicated commit's %s", got, err, want)
	}
	rec := h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Master == "pool-"+n1.Name })
	if rec.Loss == nil || rec.Loss.FromPool != "pool-"+n0.Name || rec.Loss.LastReplicatedCommit != c || rec.Loss.LastReplicatedCommitAt.IsZero() {
		t.Fatalf("loss not recorded: %+v", rec.Loss)
	}
	events, err := h.Events(ctxT(t, time.Minute))
	if err != nil || len(events) == 0 || !strings.Contains(strings.Join(events, "\n"), "FailedOver") {
		t.Fatalf("no FailedOver event: %q, %v", events, err)
	}
	t.Logf("event: %s", events[0])
}

func TestCrashMidMigrationConverges(t *testing.T) {
	for _, victim := range []string{"receiver", "sender"} {
		t.Run(victim, func(t *testing.T) {
			h, ctrl := up(t, 2)
			n0, n1 := h.Nodes[0], h.Nodes[1]
			c0 := h.Dial(n0.Socket())
			id := createOn(t, ctrl, n0, "crashing", map[string]string{"replicas": "2"})
			dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
			if err != nil {
				t.Fatal(err)
			}
			if err := n0.Write(ctxT(t, time.Minute), filepath.Join(dir, "data"), 64); err != nil {
				t.Fatal(err)
			}
			c := snapshot(t, ctrl, id, "base")
			h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Replicas[0].Commit == c })
			if err := n0.Write(ctxT(t, 2*time.Minute), filepath.Join(dir, "data"), 384); err != nil {
				t.Fatal(err)
			}
			want, _ := n0.Sum(ctxT(t, time.Minute), filepath.Join(dir, "data"))
			if err := n0.Unstage(ctxT(t, time.Minute), c0, id); err != nil {
				t.Fatal(err)
			}
			kill := map[string]*Node{"receiver": n1, "sender": n0}[victim]
			errc := make(chan error, 1)
			go func() {
				_, err := n1.Stage(ctxT(t, 2*time.Minute), h.Dial(n1.Socket()), id)
				errc <- err
			}()
			time.Sleep(700 * time.Millisecond)
			signal(kill.Plugin.Cmd.Process.Pid, 9)
			if err := <-errc; err == nil {
				t.Fatal("the migration finished before the crash; the test did not interrupt it")
			}
			kill.StartPlugin()
			h.WaitPools(2)
			// A retry converges.
			var dir1 string
			waitFor(t, 2*time.Minute, func() bool {
				dir1, err = n1.Stage(ctxT(t, 2*time.Minute), h.Dial(n1.Socket()), id)
				if err != nil {
					t.Logf("retry: %v", err)
					time.Sleep(time.Second)
				}
				return err == nil
			})
			got, err := n1.Sum(ctxT(t, time.Minute), filepath.Join(dir1, "data"))
			if err != nil || got != want {
				t.Fatalf("data after the retried migration %s, %v; want %s", got, err, want)
			}
			rec := h.WaitDot(id, time.Minute, func(d cluster.Dot) bool { return d.Master == "pool-"+n1.Name && d.Moving == "" })
			// No leaked datasets: each pool holds the one dot and nothing else.
			for _, n := range []*Node{n0, n1} {
				out, err := n.Exec(ctxT(t, time.Minute), "zfs", "list", "-H", "-o", "name", "-r", "-t", "filesystem", "pool-"+n.Name+"/dots")
				if err != nil || len(strings.Fields(out)) != 2 {
					t.Fatalf("%s datasets after the retry: %q, %v", n.Name, out, err)
				}
			}
			// No lost commits: the new master holds the committed base.
			snaps, err := n1.Exec(ctxT(t, time.Minute), "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", "pool-"+n1.Name+"/dots/"+id)
			if err != nil || !strings.Contains(snaps, strings.Split(c, "@")[1]) {
				t.Fatalf("commit %s lost: %q, %v (record %+v)", c, snaps, err, rec)
			}
		})
	}
}

func TestZfsdRefusesPeersWithoutAClusterCertificate(t *testing.T) {
	h, _ := up(t, 1)
	addr := h.Nodes[0].IP + ":7455"
	secret, err := h.Client.CoreV1().Secrets(Namespace).Get(ctxT(t, time.Minute), "dotmesh-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the cluster CA Secret was not created: %v", err)
	}
	clusterCA, err := pki.ParseCA(secret.Data["ca.crt"], secret.Data["ca.key"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(clusterCA.CertPEM)
	stranger, _ := pki.NewCA("not the cluster's CA")
	leaf := func(ca *pki.CA) *tls.Config {
		cert, key, err := ca.Issue("node:e2e-peer")
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity(clusterCA.CertPEM, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return id.ClientTLS()
	}
	info := func(cfg *tls.Config) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dialIn(h.CPNetns)(ctx, "tcp", a) }))
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = api.NewZfsdClient(conn).Info(ctxT(t, 30*time.Second), &api.InfoRequest{})
		return err
	}
	if err := info(&tls.Config{RootCAs: roots}); err == nil {
		t.Error("zfsd answered a peer with no client certificate")
	}
	if err := info(leaf(stranger)); err == nil {
		t.Error("zfsd answered a peer whose certificate another CA signed")
	}
	if err := info(leaf(clusterCA)); err != nil {
		t.Errorf("zfsd refused a peer with a cluster certificate: %v", err)
	}
}
