//go:build zfs

package crash

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The test's model of what the driver holds: every volume and snapshot it
// answered for and has not deleted, with what was staged, published and
// written. Checks compare the driver's lists and the pool with it.
type model struct {
	vols  map[string]*volume   // by CSI name
	snaps map[string]*snapshot // by CSI name
}

type volume struct {
	name, id          string
	capacity          int64
	staged, published bool
	// files written through the published path and fsynced (name to
	// sha256), its source's included: what the volume must hold.
	files map[string]string
	// fresh: a branch made this round, whose data is checked after it.
	fresh bool
}

type snapshot struct {
	name, id string
	volID    string // the source volume's ID
	size     int64
	files    map[string]string // what the source held when it was taken
}

func newModel() *model {
	return &model{vols: map[string]*volume{}, snaps: map[string]*snapshot{}}
}

type opKind string

const (
	opCreate         opKind = "CreateVolume"
	opBranch         opKind = "CreateVolume from snapshot"
	opClone          opKind = "CreateVolume from volume"
	opExpand         opKind = "ControllerExpandVolume"
	opSnapshot       opKind = "CreateSnapshot"
	opStage          opKind = "NodeStageVolume"
	opPublish        opKind = "NodePublishVolume"
	opUnpublish      opKind = "NodeUnpublishVolume"
	opUnstage        opKind = "NodeUnstageVolume"
	opDeleteSnapshot opKind = "DeleteSnapshot"
	opDeleteVolume   opKind = "DeleteVolume"
)

// step is one planned CSI call: its kind and the names it acts on are
// chosen when the round is planned (so a seed replays them); the request
// is built when it runs, from the IDs earlier steps got.
type step struct {
	kind     opKind
	vol      string // the volume it acts on or makes
	snap     string // the snapshot it acts on or makes
	src      string // a branch's snapshot, or a clone's volume
	detached bool   // cloneMode: detached

	started     bool
	req         proto.Message
	resp        proto.Message
	err         error
	interrupted bool   // it failed because the driver was killed under it
	problem     string // its answer was not what the model expects
}

func (s *step) String() string {
	var b strings.Builder
	b.WriteString(string(s.kind))
	switch s.kind {
	case opBranch, opClone:
		fmt.Fprintf(&b, " %s from %s", s.vol, s.src)
		if s.detached {
			b.WriteString(" (detached)")
		}
	case opSnapshot:
		fmt.Fprintf(&b, " %s of %s", s.snap, s.vol)
	case opDeleteSnapshot:
		fmt.Fprintf(&b, " %s", s.snap)
	default:
		fmt.Fprintf(&b, " %s", s.vol)
	}
	return b.String()
}

// worker runs a chain of steps on volumes and snapshots no other worker of
// the round touches, so every step's right answer follows from the model
// alone, whatever the interleaving.
type worker struct {
	id, round         int
	rng               *rand.Rand
	maxVols, maxSnaps int // what it may make up to; deletes bring it back
	vols              map[string]*volume
	snaps             map[string]*snapshot
	steps             []*step
}

const (
	volumeSize   = 16 << 20
	growBy       = 8 << 20
	fileSize     = 64 << 10
	maxVolumes   = 12 // in all workers' shares together, roughly
	maxSnapshots = 12
)

// detached adds detached branches (cloneMode: detached, zfs send | zfs
// recv) to the mix when $DETACHED is 1. They are left out by default: on
// zfs-fuse 0.7 a send cut off by the driver's death can leave its snapshot
// "busy" to every zfs destroy until the daemon restarts (seen twice here,
// the hold still there 25 minutes later with no driver running), so the
// hidden commit it came from can never be collected and the test could
// never finish clean. No driver can undo a hold the daemon keeps.
var detached = os.Getenv("DETACHED") == "1"

// deal hands the model's volumes and snapshots out to 4 to 8 workers.
func deal(rng *rand.Rand, m *model, seed uint64, round int) []*worker {
	n := 4 + rng.IntN(5)
	ws := make([]*worker, n)
	for i := range ws {
		ws[i] = &worker{id: i, vols: map[string]*volume{}, snaps: map[string]*snapshot{},
			rng: rand.New(rand.NewPCG(seed, uint64(round)<<8|uint64(i))), round: round,
			maxVols: max(2, maxVolumes/n), maxSnaps: max(2, maxSnapshots/n)}
	}
	vnames, snames := sortedKeys(m.vols), sortedKeys(m.snaps)
	rng.Shuffle(len(vnames), func(i, j int) { vnames[i], vnames[j] = vnames[j], vnames[i] })
	rng.Shuffle(len(snames), func(i, j int) { snames[i], snames[j] = snames[j], snames[i] })
	for i, name := range vnames {
		ws[i%n].vols[name] = m.vols[name]
	}
	for i, name := range snames {
		ws[i%n].snaps[name] = m.snaps[name]
	}
	return ws
}

// next picks the worker's next step from what it holds now, which earlier
// steps' answers have brought up to date: a kind by weight among those that
// apply, then one of the worker's objects for it. Only the worker's own
// random source decides, so a seed replays the same choices.
func (w *worker) next() *step {
	var all, unstaged, staged, published []string
	for _, name := range sortedKeys(w.vols) {
		all = append(all, name)
		switch v := w.vols[name]; {
		case v.published:
			published = append(published, name)
		case v.staged:
			staged = append(staged, name)
		default:
			unstaged = append(unstaged, name)
		}
	}
	snaps := sortedKeys(w.snaps)
	room := len(w.vols) < w.maxVols
	choices := []struct {
		kind    opKind
		weight  int
		objects []string
	}{
		{opCreate, 2, when(room, []string{""})},
		{opBranch, 2, when(room, snaps)},
		{opClone, 1, when(room, all)},
		{opExpand, 1, all},
		{opSnapshot, 3, when(len(w.snaps) < w.maxSnaps, all)},
		{opStage, 2, unstaged},
		{opPublish, 2, staged},
		{opUnpublish, 1, published},
		{opUnstage, 1, staged},
		{opDeleteSnapshot, 1, snaps},
		{opDeleteVolume, 1, unstaged},
	}
	total := 0
	for _, c := range choices {
		if len(c.objects) > 0 {
			total += c.weight
		}
	}
	if total == 0 {
		return nil
	}
	pick := w.rng.IntN(total)
	for _, c := range choices {
		if len(c.objects) == 0 {
			continue
		}
		if pick >= c.weight {
			pick -= c.weight
			continue
		}
		obj := c.objects[w.rng.IntN(len(c.objects))]
		i := len(w.steps)
		newVol := fmt.Sprintf("v%02d-%d-%d", w.round, w.id, i)
		st := &step{kind: c.kind}
		switch c.kind {
		case opCreate:
			st.vol = newVol
		case opBranch, opClone:
			st.vol, st.src = newVol, obj
			st.detached = w.rng.IntN(3) == 0 && detached
		case opSnapshot:
			st.vol, st.snap = obj, fmt.Sprintf("s%02d-%d-%d", w.round, w.id, i)
		case opDeleteSnapshot:
			st.snap = obj
		default:
			st.vol = obj
		}
		return st
	}
	return nil
}

func when(ok bool, objects []string) []string {
	if !ok {
		return nil
	}
	return objects
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// maxSteps bounds a worker's chain in a round.
const maxSteps = 60

// run performs steps one after the other until one fails or the driver is
// killed. A step that fails once the kill has begun is interrupted and is
// retried after the restart; nothing after it runs.
func (w *worker) run(r *rig, killed *atomic.Bool) {
	for range maxSteps {
		if killed.Load() {
			return
		}
		st := w.next()
		if st == nil {
			return
		}
		w.steps = append(w.steps, st)
		st.started = true
		var err error
		if st.req, err = w.request(r, st); err != nil {
			st.err = err
			return
		}
		st.resp, st.err = r.call(st.req)
		if st.err != nil {
			st.interrupted = killed.Load()
			return
		}
		st.problem = w.apply(st, st.resp)
	}
}

// lastStarted is the step the kill may have cut off: the last one begun.
func (w *worker) lastStarted() *step {
	var last *step
	for _, st := range w.steps {
		if st.started {
			last = st
		}
	}
	return last
}

// request builds a step's CSI request from what the worker knows. A
// snapshot of a published volume first writes a file there and fsyncs it:
// the snapshot must then hold it.
func (w *worker) request(r *rig, st *step) (proto.Message, error) {
	v := w.vols[st.vol]
	switch st.kind {
	case opCreate:
		return &csi.CreateVolumeRequest{Name: st.vol, VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
			CapacityRange: &csi.CapacityRange{RequiredBytes: volumeSize}}, nil
	case opBranch, opClone:
		req := &csi.CreateVolumeRequest{Name: st.vol, VolumeCapabilities: []*csi.VolumeCapability{mountCap()}}
		if st.kind == opBranch {
			req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: w.snaps[st.src].id}}}
		} else {
			req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: w.vols[st.src].id}}}
		}
		if st.detached {
			req.Parameters = map[string]string{"cloneMode": "detached"}
		}
		return req, nil
	case opExpand:
		return &csi.ControllerExpandVolumeRequest{VolumeId: v.id, VolumeCapability: mountCap(),
			CapacityRange: &csi.CapacityRange{RequiredBytes: v.capacity + growBy}}, nil
	case opSnapshot:
		if v.published {
			name := "f-" + st.snap
			sum, err := writeFile(filepath.Join(r.targetPath(v.name), name), r.seed, name)
			if err != nil {
				return nil, fmt.Errorf("writing %s into %s: %w", name, v.name, err)
			}
			v.files[name] = sum
		}
		return &csi.CreateSnapshotRequest{Name: st.snap, SourceVolumeId: v.id}, nil
	case opStage:
		return &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: r.stagingPath(v.name), VolumeCapability: mountCap()}, nil
	case opPublish:
		return &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: r.stagingPath(v.name),
			TargetPath: r.targetPath(v.name), VolumeCapability: mountCap()}, nil
	case opUnpublish:
		return &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: r.targetPath(v.name)}, nil
	case opUnstage:
		return &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: r.stagingPath(v.name)}, nil
	case opDeleteSnapshot:
		return &csi.DeleteSnapshotRequest{SnapshotId: w.snaps[st.snap].id}, nil
	case opDeleteVolume:
		return &csi.DeleteVolumeRequest{VolumeId: v.id}, nil
	}
	return nil, fmt.Errorf("unknown step %s", st.kind)
}

// apply records a successful answer in the worker's part of the model, and
// returns what in it differs from what an uninterrupted call answers.
func (w *worker) apply(st *step, resp proto.Message) string {
	switch st.kind {
	case opCreate, opBranch, opClone:
		vol := resp.(*csi.CreateVolumeResponse).GetVolume()
		nv := &volume{name: st.vol, id: vol.GetVolumeId(), capacity: vol.GetCapacityBytes(), files: map[string]string{}}
		want := int64(volumeSize)
		switch st.kind {
		case opBranch:
			s := w.snaps[st.src]
			want, nv.files = s.size, copyFiles(s.files)
		case opClone:
			src := w.vols[st.src]
			want, nv.files = src.capacity, copyFiles(src.files)
		}
		nv.fresh = len(nv.files) > 0
		w.vols[st.vol] = nv
		switch {
		case vol.GetVolumeId() == "":
			return "no volume ID"
		case vol.GetCapacityBytes() != want:
			return fmt.Sprintf("capacity %d bytes, want %d", vol.GetCapacityBytes(), want)
		}
	case opExpand:
		v := w.vols[st.vol]
		got, want := resp.(*csi.ControllerExpandVolumeResponse).GetCapacityBytes(), st.req.(*csi.ControllerExpandVolumeRequest).GetCapacityRange().GetRequiredBytes()
		v.capacity = got
		if got != want {
			return fmt.Sprintf("capacity %d bytes, want %d", got, want)
		}
	case opSnapshot:
		v := w.vols[st.vol]
		s := resp.(*csi.CreateSnapshotResponse).GetSnapshot()
		w.snaps[st.snap] = &snapshot{name: st.snap, id: s.GetSnapshotId(), volID: v.id, size: s.GetSizeBytes(), files: copyFiles(v.files)}
		switch {
		case s.GetSourceVolumeId() != v.id || !strings.HasPrefix(s.GetSnapshotId(), v.id+"@"):
			return fmt.Sprintf("snapshot %s of volume %s, want one of %s", s.GetSnapshotId(), s.GetSourceVolumeId(), v.id)
		case s.GetSizeBytes() != v.capacity:
			return fmt.Sprintf("size %d bytes, want the volume's %d", s.GetSizeBytes(), v.capacity)
		case !s.GetReadyToUse():
			return "not ready to use"
		}
	case opStage:
		w.vols[st.vol].staged = true
	case opPublish:
		w.vols[st.vol].published = true
	case opUnpublish:
		w.vols[st.vol].published = false
	case opUnstage:
		w.vols[st.vol].staged = false
	case opDeleteSnapshot:
		delete(w.snaps, st.snap)
	case opDeleteVolume:
		delete(w.vols, st.vol)
	}
	return ""
}

func copyFiles(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// writeFile writes fileSize bytes that follow from the seed and the name,
// fsyncs them, and returns their sha256.
func writeFile(path string, seed uint64, name string) (string, error) {
	h := sha256.Sum256([]byte(name))
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], h[:24])
	data := make([]byte, fileSize)
	_, _ = rand.NewChaCha8(key).Read(data)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

func fileSum(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// describe shows an answer for a message: the response or the error's
// code and text.
func describe(resp proto.Message, err error) string {
	if err != nil {
		s := status.Convert(err)
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	if resp == nil {
		return "no answer"
	}
	return fmt.Sprintf("OK %v", resp)
}
