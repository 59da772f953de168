//go:build zfs

// Package crash injects crashes into the standalone driver on a real pool:
// each round a random concurrent mix of CSI calls runs, the driver is killed
// with SIGKILL at a random moment and restarted on the same pool, and then
// every interrupted call is retried and everything checked (issue 12).
package crash

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

var (
	roundsFlag = flag.Int("rounds", 0, "crash rounds (default: $ROUNDS, else 30)")
	seedFlag   = flag.Uint64("seed", 0, "random seed, to replay a run (default: $SEED, else from the clock)")
)

// cleanupEvery rounds, and after the last, everything is deleted through
// CSI and the pool and mount table must be empty of it.
const cleanupEvery = 10

// report counts inconsistencies; each is a test error naming the round,
// the seed, the call, and what was expected against what came.
type report struct {
	t     *testing.T
	seed  uint64
	mu    sync.Mutex
	round int
	n     int
}

func (p *report) bad(call, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.t.Errorf("inconsistency in round %d (seed %d): %s: %s", p.round, p.seed, call, fmt.Sprintf(format, args...))
}

func (p *report) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

type stats struct {
	calls, answered, interrupted, idleKills, dataChecks, cleanups int
	byKind                                                        map[opKind]int // interrupted calls by kind
}

// TestCrashInjection: ROUNDS (default 30) rounds, each a concurrent mix of
// CreateVolume (empty, from a snapshot, from a volume; instant branches,
// and detached ones with DETACHED=1), ControllerExpandVolume, CreateSnapshot (after a write and
// fsync when published), NodeStage/Publish/Unpublish/UnstageVolume,
// DeleteSnapshot and DeleteVolume on 4 to 8 goroutines, with the driver
// SIGKILLed 50 to 1500 ms in and restarted on the same pool. Then:
//   - every call the kill cut off, retried with the same request, succeeds
//     as an uninterrupted call would, and a second retry gives the same
//     answer (the same volume or snapshot ID);
//   - ListVolumes and ListSnapshots match the managed datasets and commits
//     on the pool and the volumes and snapshots answered for; no half-made,
//     unmanaged or uncollected dataset is left; refquota is the capacity;
//   - exactly what is staged and published is mounted;
//   - every file written and fsynced before a CreateSnapshot succeeded is in
//     each branch of it (and of a volume) with the same sha256.
//
// Every 10 rounds and at the end, everything is deleted through CSI and no
// dataset but the pool's own, no snapshot and no mount may be left.
func TestCrashInjection(t *testing.T) {
	zfstest.Require(t)
	rounds := *roundsFlag
	if rounds == 0 {
		rounds = envInt(t, "ROUNDS", 30)
	}
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(envInt(t, "SEED", int(time.Now().UnixNano()&0x7fffffffffff)))
	}
	fmt.Printf("crash injection: %d rounds, seed %d, detached branches %v; replay with SEED=%d ROUNDS=%d\n", rounds, seed, detached, seed, rounds)
	rep := &report{t: t, seed: seed}
	r := newRig(t, seed, rep)
	start := time.Now()
	r.start()
	m := newModel()
	s := &stats{byKind: map[opKind]int{}}
	done := 0
	for round := 1; round <= rounds; round++ {
		r.round, rep.round = round, round
		before := rep.count()
		r.runRound(m, s)
		if round%cleanupEvery == 0 || round == rounds {
			r.deleteAll(m)
			s.cleanups++
		}
		done = round
		if rep.count() > before {
			t.Logf("stopping after round %d: its inconsistencies would confuse later rounds\n%s", round, r.logTail(30))
			break
		}
	}
	rep.round = done
	if done == rounds {
		// Everything was deleted: on SIGTERM the driver exports its pool
		// and leaves no mount behind.
		if err := r.stop(time.Minute); err != nil {
			rep.bad("SIGTERM", "%v", err)
		}
		if exec.Command("zpool", "list", r.pool).Run() == nil {
			rep.bad("SIGTERM", "pool %s is still imported after the driver stopped", r.pool)
		}
		if ms, err := mountinfo.ReadFile("/proc/self/mountinfo"); err == nil {
			for _, mt := range ms {
				if strings.HasPrefix(mt.MountPoint, r.work+"/") || strings.HasPrefix(mt.Source, r.pool+"/") {
					rep.bad("SIGTERM", "mount left after the driver stopped: %s at %s", mountinfo.Describe(mt), mt.MountPoint)
				}
			}
		}
	}
	kinds := make([]string, 0, len(s.byKind))
	for k, n := range s.byKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	summary := fmt.Sprintf("crash injection: %d rounds (seed %d), %d inconsistencies, %d calls (%d answered before a kill, %d interrupted and retried: %s), %d kills with no call in flight, %d files checked by sha256, %d full deletions; %s",
		done, seed, rep.count(), s.calls, s.answered, s.interrupted, strings.Join(kinds, ", "), s.idleKills, s.dataChecks, s.cleanups, time.Since(start).Round(time.Millisecond))
	fmt.Println(summary)
	t.Log(summary)
	if done < rounds && !t.Failed() {
		t.Errorf("only %d of %d rounds ran", done, rounds)
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("$%s=%q: want a positive whole number", name, v)
	}
	return n
}

// runRound runs one round: the mix, the kill, the restart, the retries and
// the checks.
func (r *rig) runRound(m *model, s *stats) {
	rng := rand.New(rand.NewPCG(r.seed, uint64(r.round)))
	workers := deal(rng, m, r.seed, r.round)
	delay := time.Duration(50+rng.IntN(1451)) * time.Millisecond

	var killed atomic.Bool
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(r, &killed) }()
	}
	time.Sleep(delay)
	killed.Store(true)
	r.kill()
	wg.Wait()
	restart := time.Now()
	r.start()
	back := time.Since(restart)

	var cut []string
	for _, w := range workers {
		for _, st := range w.steps {
			if !st.started {
				continue
			}
			s.calls++
			if st.interrupted {
				s.interrupted++
				s.byKind[st.kind]++
				cut = append(cut, st.String())
			} else {
				s.answered++
			}
		}
		r.settle(w)
	}
	if len(cut) == 0 {
		s.idleKills++
	}
	// Each worker held its objects alone: their union is the new model.
	m.vols, m.snaps = map[string]*volume{}, map[string]*snapshot{}
	for _, w := range workers {
		for name, v := range w.vols {
			m.vols[name] = v
		}
		for name, sn := range w.snaps {
			m.snaps[name] = sn
		}
	}
	s.dataChecks += r.checkData(m)
	r.checkState(m)
	r.t.Logf("round %d: %d goroutines, SIGKILL after %s, restarted in %s; interrupted: %s; now %d volumes, %d snapshots",
		r.round, len(workers), delay, back.Round(time.Millisecond), orNone(cut), len(m.vols), len(m.snaps))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "; ")
}

// settle deals with a worker's last call after the restart. One the kill
// cut off is retried with the same request: it must succeed, as it would
// have uninterrupted, and a second retry must answer the same. One that
// was answered is asked again too (a CO whose answer was lost in the crash
// retries it): the answer must not change. A call that failed before the
// kill is an inconsistency: every planned call is valid.
func (r *rig) settle(w *worker) {
	for _, st := range w.steps {
		if st.problem != "" {
			r.rep.bad(st.String(), "answered %s", st.problem)
		}
	}
	st := w.lastStarted()
	switch {
	case st == nil:
		return
	case st.err == nil:
		again, err := r.call(st.req)
		r.same(st, "asked again after the restart", st.resp, again, err)
	case st.interrupted && st.req != nil:
		resp, err := r.call(st.req)
		if err != nil {
			r.rep.bad(st.String(), "retried after the kill, answered %s; uninterrupted, it succeeds (interrupted with %s)", describe(nil, err), describe(nil, st.err))
			return
		}
		if p := w.apply(st, resp); p != "" {
			r.rep.bad(st.String(), "retried after the kill, answered %s", p)
		}
		again, err := r.call(st.req)
		r.same(st, "retried a second time", resp, again, err)
	default:
		r.rep.bad(st.String(), "failed before the kill: %s; the call is valid and succeeds uninterrupted", describe(nil, st.err))
	}
}

// same reports a second answer that differs from the first.
func (r *rig) same(st *step, how string, first, second proto.Message, err error) {
	if err != nil {
		r.rep.bad(st.String(), "%s, answered %s; first it answered %s", how, describe(nil, err), describe(first, nil))
		return
	}
	if !proto.Equal(first, second) {
		r.rep.bad(st.String(), "%s, answered %s; first it answered %s", how, describe(second, nil), describe(first, nil))
	}
}

// checkData stages and publishes every new branch that should hold files
// and reads back every file of every published volume. It returns how many
// files it checked.
func (r *rig) checkData(m *model) int {
	n := 0
	for _, name := range sortedKeys(m.vols) {
		v := m.vols[name]
		if v.fresh {
			v.fresh = false
			if !v.staged {
				if _, err := r.call(&csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: r.stagingPath(name), VolumeCapability: mountCap()}); err != nil {
					r.rep.bad("NodeStageVolume "+name, "to read a new branch: %s", describe(nil, err))
					continue
				}
				v.staged = true
			}
			if !v.published {
				if _, err := r.call(&csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: r.stagingPath(name),
					TargetPath: r.targetPath(name), VolumeCapability: mountCap()}); err != nil {
					r.rep.bad("NodePublishVolume "+name, "to read a new branch: %s", describe(nil, err))
					continue
				}
				v.published = true
			}
		}
		if !v.published {
			continue
		}
		for _, f := range sortedKeys(v.files) {
			n++
			got, err := fileSum(filepath.Join(r.targetPath(name), f))
			if err != nil || got != v.files[f] {
				r.rep.bad("data", "volume %s (%s): file %s: sha256 %s, %v; want %s, written and fsynced before a snapshot it came from (or into the volume itself)",
					name, v.id, f, got, err, v.files[f])
			}
		}
	}
	return n
}

// deleteAll deletes everything through CSI, as a CO would: unpublish,
// unstage, delete the snapshots, delete the volumes. Then the driver lists
// nothing, the pool holds only its own datasets and no snapshot, and
// nothing of the pool's or under the test's folder is mounted but the
// driver's mount root.
func (r *rig) deleteAll(m *model) {
	for _, name := range sortedKeys(m.vols) {
		v := m.vols[name]
		if v.published {
			if _, err := r.call(&csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: r.targetPath(name)}); err != nil {
				r.rep.bad("NodeUnpublishVolume "+name, "deleting everything: %s", describe(nil, err))
			}
		}
		if v.staged {
			if _, err := r.call(&csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: r.stagingPath(name)}); err != nil {
				r.rep.bad("NodeUnstageVolume "+name, "deleting everything: %s", describe(nil, err))
			}
		}
	}
	for _, name := range sortedKeys(m.snaps) {
		if _, err := r.call(&csi.DeleteSnapshotRequest{SnapshotId: m.snaps[name].id}); err != nil {
			r.rep.bad("DeleteSnapshot "+name, "deleting everything: %s", describe(nil, err))
		}
	}
	for _, name := range sortedKeys(m.vols) {
		if _, err := r.call(&csi.DeleteVolumeRequest{VolumeId: m.vols[name].id}); err != nil {
			r.rep.bad("DeleteVolume "+name, "deleting everything: %s", describe(nil, err))
		}
	}
	nv, ns := len(m.vols), len(m.snaps)
	m.vols, m.snaps = map[string]*volume{}, map[string]*snapshot{}

	if vols, err := r.listVolumes(); err != nil || len(vols) > 0 {
		r.rep.bad("ListVolumes", "after deleting everything: %d volumes, %s", len(vols), describe(nil, err))
	}
	if snaps, err := r.listSnapshots(); err != nil || len(snaps) > 0 {
		r.rep.bad("ListSnapshots", "after deleting everything: %d snapshots, %s", len(snaps), describe(nil, err))
	}
	// Every dataset, volume and snapshot of the pool.
	if _, names, err := zfsGet(r.pool, []string{"type"}); err != nil {
		r.rep.bad("zfs get", "%v", err)
	} else {
		for _, ds := range names {
			if ds != r.pool && ds != r.pool+"/dots" && ds != r.pool+"/reserve" {
				r.rep.bad("pool", "after deleting everything through CSI, %s is left", ds)
			}
		}
	}
	ms, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		r.rep.bad("mountinfo", "%v", err)
		return
	}
	roots := 0
	for _, mt := range ms {
		ours := strings.HasPrefix(mt.MountPoint, r.work+"/")
		pools := mt.Source == r.pool || strings.HasPrefix(mt.Source, r.pool+"/")
		switch {
		case mt.MountPoint == r.mountRoot && !pools:
			roots++
		case ours || pools:
			r.rep.bad("mounts", "after deleting everything through CSI, %s is mounted at %s", mountinfo.Describe(mt), mt.MountPoint)
		}
	}
	if roots > 1 {
		r.rep.bad("mounts", "the driver's mount root %s is mounted %d times over", r.mountRoot, roots)
	}
	r.t.Logf("round %d: deleted %d volumes and %d snapshots through CSI; nothing left", r.round, nv, ns)
}
