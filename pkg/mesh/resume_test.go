//go:build zfs

package mesh_test

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// cutter counts the stream bytes into its node's zfsd and, once armed,
// breaks the next stream after limit bytes of data: the receiving end of a
// stream going away half-way, as when its node or the network between the
// two fails.
type cutter struct {
	mu    sync.Mutex
	limit int64 // 0: not armed
	fired int64 // bytes the last cut stream had carried
	total int64 // bytes of every stream received
}

func (c *cutter) arm(limit int64) {
	c.mu.Lock()
	c.limit, c.fired = limit, 0
	c.mu.Unlock()
}

func (c *cutter) cutAt() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired
}

func (c *cutter) received() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *cutter) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasSuffix(info.FullMethod, "/Receive") {
		return handler(srv, ss)
	}
	c.mu.Lock()
	limit := c.limit
	c.limit = 0
	c.mu.Unlock()
	return handler(srv, &cutStream{ServerStream: ss, c: c, limit: limit})
}

type cutStream struct {
	grpc.ServerStream
	c           *cutter
	limit, seen int64
}

func (s *cutStream) RecvMsg(m any) error {
	if s.limit > 0 && s.seen >= s.limit {
		s.c.mu.Lock()
		s.c.fired = s.seen
		s.c.mu.Unlock()
		return status.Error(codes.Unavailable, "test: stream cut")
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if ch, ok := m.(*api.ReceiveChunk); ok {
		n := int64(len(ch.GetData()))
		s.seen += n
		s.c.mu.Lock()
		s.c.total += n
		s.c.mu.Unlock()
	}
	return nil
}

// cutNodeB is a 2-node cluster whose second node's zfsd streams go
// through a cutter.
func cutNodeB(t *testing.T) (*testCluster, *cutter) {
	cut := &cutter{}
	tc := newClusterWith(t, 2, time.Minute, func(i int) []grpc.ServerOption {
		if i == 1 {
			return []grpc.ServerOption{grpc.StreamInterceptor(cut.intercept)}
		}
		return nil
	})
	return tc, cut
}

// resumable says whether a retry can resume on these pools, and logs why
// not when it cannot.
func resumable(t *testing.T, from, to *node) bool {
	t.Helper()
	if from.pool.ResumableReceive() && to.pool.ResumableReceive() {
		return true
	}
	t.Logf("not checking that the retry resumed: this ZFS keeps no partial receive (no zfs recv -s / zfs send -t, as on zfs-fuse), so a retry sends the whole stream again")
	return false
}

// TestInterruptedReplicationResumes cuts the first replication stream of a
// 64 MiB commit of random data half-way, and checks the retry finishes it
// from where it broke: fewer bytes than the whole stream, and the replica
// then holds exactly the committed data. On a ZFS without resumable
// receives (zfs-fuse) the retry starts over; only the byte count is then
// not asserted.
func TestInterruptedReplicationResumes(t *testing.T) {
	tc, cut := cutNodeB(t)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 2)
	dir := a.mount(t, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 64<<20)
	if err := a.store.UnmountDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}

	cut.arm(32 << 20)
	tc.commit(t, d.ID, "c1") // replicates in the background, into the cut
	if cut.cutAt() == 0 {
		t.Fatal("the replication stream was never cut")
	}
	rec, err := tc.view.GetDot(ctxT(t), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := rec.Replicas[0]; r.Pool != b.pool.Name() || r.Commit != "" {
		t.Fatalf("after the cut stream the replica is %+v; want %s holding nothing yet", r, b.pool.Name())
	}
	_, commit, _ := strings.Cut(rec.NewestCommit, "@")
	full, err := a.pool.Send(ctxT(t), d.ID, "", commit, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	token, err := b.pool.ResumeToken(ctxT(t), d.ID)
	if err != nil {
		t.Fatal(err)
	}

	before := cut.received()
	tc.ctrl.ReplicateNow(ctxT(t), d.ID)
	rec, _ = tc.view.GetDot(ctxT(t), d.ID)
	r := rec.Replicas[0]
	if r.Commit != rec.NewestCommit {
		t.Fatalf("retry did not bring the replica up to %s: %+v", rec.NewestCommit, r)
	}
	if got := cut.received() - before; got != r.LastBytes {
		t.Errorf("the replica received %d bytes on the retry; the master reports sending %d", got, r.LastBytes)
	}
	t.Logf("replication of a 64 MiB commit: full stream %d bytes, cut after %d, retry sent %d (%.0f%%)",
		full, cut.cutAt(), r.LastBytes, 100*float64(r.LastBytes)/float64(full))
	if resumable(t, a, b) {
		if token == "" {
			t.Error("the cut stream left no resume token on the replica")
		}
		if r.LastBytes >= full {
			t.Errorf("the retry sent %d bytes, not less than the full stream of %d: it did not resume", r.LastBytes, full)
		}
	} else if token != "" {
		t.Errorf("a ZFS without resumable receives reported a resume token %q", token)
	}
	if left, err := b.pool.ResumeToken(ctxT(t), d.ID); err != nil || left != "" {
		t.Errorf("resume token left on the replica after the retry: %q, %v", left, err)
	}
	bdir, err := b.pool.MountDot(ctxT(t), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.pool.UnmountDot(ctxT(t), d.ID) })
	if got := sum(t, filepath.Join(bdir, "data")); got != want {
		t.Fatalf("replica's data sha256 %s, the master committed %s", got, want)
	}
}

// TestInterruptedHandoffResumes cuts a migration half-way: a dot of
// 64 MiB of random data with no replica moves to another node, whose
// stream breaks. Staging fails, the master stays; staging again finishes
// the stream from where it broke and the dot arrives with its data.
func TestInterruptedHandoffResumes(t *testing.T) {
	tc, cut := cutNodeB(t)
	a, b := tc.nodes[0], tc.nodes[1]
	d := tc.createDot(t, a, 1)
	dir := a.mount(t, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 64<<20)
	if err := a.store.UnmountDot(ctxT(t), d.ID); err != nil {
		t.Fatal(err)
	}

	cut.arm(32 << 20)
	if _, err := b.store.MountDot(ctxT(t), d.ID); err == nil {
		t.Fatal("staging through a cut stream succeeded")
	}
	if cut.cutAt() == 0 {
		t.Fatal("the migration stream was never cut")
	}
	rec, _ := tc.view.GetDot(ctxT(t), d.ID)
	if rec.Master != a.pool.Name() || rec.Moving != "" {
		t.Fatalf("after the cut: master %s, moving %q; want %s and no claim", rec.Master, rec.Moving, a.pool.Name())
	}
	token, err := b.pool.ResumeToken(ctxT(t), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := a.pool.Snapshots(ctxT(t), d.ID)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("master's commits after the cut handoff: %v, %v", snaps, err)
	}
	full, err := a.pool.Send(ctxT(t), d.ID, "", snaps[0].Name, io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	before := cut.received()
	bdir := b.mount(t, d.ID)
	t.Cleanup(func() { _ = b.store.UnmountDot(ctxT(t), d.ID) })
	retry := cut.received() - before
	t.Logf("migration of a 64 MiB dot: full stream %d bytes, cut after %d, retry received %d (%.0f%%)",
		full, cut.cutAt(), retry, 100*float64(retry)/float64(full))
	if got := sum(t, filepath.Join(bdir, "data")); got != want {
		t.Fatalf("data after the handoff sha256 %s, want %s", got, want)
	}
	if rec, _ = tc.view.GetDot(ctxT(t), d.ID); rec.Master != b.pool.Name() {
		t.Fatalf("master after the retry: %s, want %s", rec.Master, b.pool.Name())
	}
	if resumable(t, a, b) {
		if token == "" {
			t.Error("the cut stream left no resume token on the new master's pool")
		}
		// The retry carries the rest of the first handoff commit and the
		// (empty) increment to the second.
		if retry >= full {
			t.Errorf("the retry received %d bytes, not less than the full stream of %d: it did not resume", retry, full)
		}
	} else if token != "" {
		t.Errorf("a ZFS without resumable receives reported a resume token %q", token)
	}
}

// TestCompressionTheTargetCannotDoIsRefusedFirst asks for compression that
// needs pool features through the mesh: where the pool lacks them the dot
// is refused as invalid before it is claimed in the view, and where it has
// them the dot is made with it.
func TestCompressionTheTargetCannotDoIsRefusedFirst(t *testing.T) {
	tc := newCluster(t, 1, time.Minute)
	a := tc.nodes[0]
	info, err := a.pool.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, algo := range []string{"lz4", "zstd"} {
		id := uuid.NewString()
		_, err := tc.ctrl.CreateDot(ctxT(t), zfsd.DotSpec{Pool: a.pool.Name(), ID: id, Name: "c-" + algo, Capacity: 64 << 20,
			Params: zfsd.Params{Compression: algo}})
		if info.Compression[algo] {
			if err != nil {
				t.Errorf("%s on a pool that has it: %v", algo, err)
			}
			continue
		}
		if !errors.Is(err, zfsd.ErrInvalid) || !strings.Contains(err.Error(), "does not support "+algo+" compression") {
			t.Errorf("%s on a pool without it: %v; want invalid, naming why", algo, err)
		}
		if _, verr := tc.view.GetDot(ctxT(t), id); verr == nil {
			t.Errorf("%s: the refused dot was claimed in the view", algo)
		}
	}
}
