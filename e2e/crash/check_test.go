//go:build zfs

package crash

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

// poolState is what the pool itself says, read with zfs get and judged by
// the on-pool layout (docs/architecture.md, "On the pool"): dots are
// <pool>/dots/<id> carrying io.dotmesh:managed and their own ID, commits
// are their snapshots, and hidden ones carry a deleted marker. Only
// values set on a dataset itself count: snapshots inherit their dot's.
type poolState struct {
	dots  map[string]dotState  // visible dots, by ID
	snaps map[string]snapState // visible commits, by ID
	all   map[string]bool      // every dot, hidden ones too, by ID
	// problems are states no converged pool has: half-made or unmanaged
	// datasets, hidden ones nothing depends on any more, duplicate names.
	problems []string
}

type dotState struct {
	name               string
	capacity, refquota int64
}

type snapState struct{ dotID string }

var poolProps = []string{"type", "origin", "refquota", "io.dotmesh:managed", "io.dotmesh:id", "io.dotmesh:name",
	"io.dotmesh:capacity", "io.dotmesh:deleted", "io.dotmesh:commit-name", "io.dotmesh:commit-deleted", "io.dotmesh:commit-internal"}

type prop struct{ value, source string }

func (p prop) own() string {
	if p.source != "local" && p.source != "received" || p.value == "-" {
		return ""
	}
	return p.value
}

// zfsGet reads props of the pool and everything in it.
func zfsGet(pool string, props []string) (map[string]map[string]prop, []string, error) {
	out, err := exec.Command("zfs", "get", "-Hp", "-r", "-o", "name,property,value,source", strings.Join(props, ","), pool).CombinedOutput()
	if err != nil {
		return nil, nil, fmt.Errorf("zfs get -r %s: %v: %s", pool, err, out)
	}
	all := map[string]map[string]prop{}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, nil, fmt.Errorf("zfs get: unexpected line %q", line)
		}
		if all[f[0]] == nil {
			all[f[0]] = map[string]prop{}
			order = append(order, f[0])
		}
		all[f[0]][f[1]] = prop{f[2], f[3]}
	}
	return all, order, nil
}

// readPool reads and judges the pool.
func readPool(pool string) (poolState, error) {
	all, order, err := zfsGet(pool, poolProps)
	if err != nil {
		return poolState{}, err
	}
	st := poolState{dots: map[string]dotState{}, snaps: map[string]snapState{}, all: map[string]bool{}}
	root := pool + "/dots"
	dependants := map[string]int{} // snapshot name -> clones of it
	for _, name := range order {
		if o := all[name]["origin"].value; o != "" && o != "-" {
			dependants[o]++
		}
	}
	type dotInfo struct {
		ok, hidden bool
	}
	dots := map[string]dotInfo{}
	var snaps []string
	for _, name := range order {
		p := all[name]
		switch {
		case name == pool || name == root || name == pool+"/reserve":
			continue // the pool's own bookkeeping
		case !strings.HasPrefix(name, root+"/"):
			st.problems = append(st.problems, fmt.Sprintf("%s is outside the driver's layout", name))
			continue
		case p["type"].value == "snapshot":
			snaps = append(snaps, name)
			continue
		}
		rel := strings.TrimPrefix(name, root+"/")
		switch {
		case p["io.dotmesh:managed"].value != "true":
			st.problems = append(st.problems, fmt.Sprintf("%s is not marked io.dotmesh:managed", name))
		case strings.Contains(rel, "/") || p["io.dotmesh:id"].own() != rel:
			st.problems = append(st.problems, fmt.Sprintf("%s is half-made: its io.dotmesh:id is %q", name, p["io.dotmesh:id"].own()))
		default:
			hidden := p["io.dotmesh:deleted"].own() != ""
			dots[rel] = dotInfo{ok: true, hidden: hidden}
			st.all[rel] = true
			if !hidden {
				capacity, _ := strconv.ParseInt(p["io.dotmesh:capacity"].own(), 10, 64)
				refquota, _ := strconv.ParseInt(p["refquota"].value, 10, 64)
				st.dots[rel] = dotState{name: p["io.dotmesh:name"].own(), capacity: capacity, refquota: refquota}
			}
		}
	}
	visibleOf := map[string]int{} // dot ID -> visible commits
	for _, name := range snaps {
		p := all[name]
		rel := strings.TrimPrefix(name, root+"/")
		dotID, _, _ := strings.Cut(rel, "@")
		hidden := p["io.dotmesh:commit-deleted"].own() != "" || p["io.dotmesh:commit-internal"].own() == "true"
		switch {
		case !dots[dotID].ok:
			continue // a problem of its dataset, reported above
		case hidden && dependants[name] == 0:
			st.problems = append(st.problems, fmt.Sprintf("hidden commit %s has no branch depending on it, yet was not destroyed", name))
		case !hidden && p["io.dotmesh:commit-name"].own() == "":
			st.problems = append(st.problems, fmt.Sprintf("commit %s has no name and is not hidden: nothing in standalone mode makes one", name))
		case !hidden:
			st.snaps[rel] = snapState{dotID: dotID}
			visibleOf[dotID]++
		}
	}
	for id, d := range dots {
		if !d.hidden || visibleOf[id] > 0 {
			continue
		}
		deps := 0
		for snap, n := range dependants {
			if strings.HasPrefix(snap, root+"/"+id+"@") {
				deps += n
			}
		}
		if deps == 0 {
			st.problems = append(st.problems, fmt.Sprintf("hidden dot %s/%s has no visible commit and no branch, yet was not destroyed", root, id))
		}
	}
	names := map[string][]string{}
	for id, d := range st.dots {
		names[d.name] = append(names[d.name], id)
	}
	for name, ids := range names {
		if len(ids) > 1 {
			sort.Strings(ids)
			st.problems = append(st.problems, fmt.Sprintf("volume name %q is on %d visible dots: %v", name, len(ids), ids))
		}
	}
	sort.Strings(st.problems)
	return st, nil
}

// checkState compares what ListVolumes and ListSnapshots report with the
// pool and with the model, the pool's refquotas with the capacities, and
// the mount table with what is staged and published.
func (r *rig) checkState(m *model) {
	vols, err := r.listVolumes()
	if err != nil {
		r.rep.bad("ListVolumes", "%s", describe(nil, err))
		return
	}
	snaps, err := r.listSnapshots()
	if err != nil {
		r.rep.bad("ListSnapshots", "%s", describe(nil, err))
		return
	}
	ps, err := readPool(r.pool)
	if err != nil {
		r.rep.bad("zfs get", "%v", err)
		return
	}
	for _, p := range ps.problems {
		r.rep.bad("pool", "%s", p)
	}

	listed := map[string]*csi.Volume{}
	for _, v := range vols {
		if listed[v.GetVolumeId()] != nil {
			r.rep.bad("ListVolumes", "volume %s listed twice", v.GetVolumeId())
		}
		listed[v.GetVolumeId()] = v
	}
	for id, v := range listed {
		d, ok := ps.dots[id]
		switch {
		case !ok:
			r.rep.bad("ListVolumes", "lists volume %s, which is no visible managed dot on the pool", id)
		case v.GetCapacityBytes() != d.capacity:
			r.rep.bad("ListVolumes", "volume %s: capacity %d bytes, the pool says %d", id, v.GetCapacityBytes(), d.capacity)
		}
	}
	for id, d := range ps.dots {
		if listed[id] == nil {
			r.rep.bad("ListVolumes", "does not list dot %s (%q), visible on the pool", id, d.name)
		}
		if d.refquota != d.capacity {
			r.rep.bad("pool", "dot %s (%q): refquota %d bytes, io.dotmesh:capacity %d", id, d.name, d.refquota, d.capacity)
		}
	}
	byID := map[string]*volume{}
	for _, v := range m.vols {
		byID[v.id] = v
		l := listed[v.id]
		switch {
		case l == nil:
			r.rep.bad("ListVolumes", "volume %s (%s), answered for and not deleted, is not listed", v.id, v.name)
		case l.GetCapacityBytes() != v.capacity:
			r.rep.bad("ListVolumes", "volume %s (%s): capacity %d bytes, want %d", v.id, v.name, l.GetCapacityBytes(), v.capacity)
		}
		if d, ok := ps.dots[v.id]; ok && d.name != v.name {
			r.rep.bad("pool", "dot %s is named %q, want %q", v.id, d.name, v.name)
		}
	}
	for id := range listed {
		if byID[id] == nil {
			r.rep.bad("ListVolumes", "lists volume %s, which no CreateVolume answered or which was deleted", id)
		}
	}

	slisted := map[string]*csi.Snapshot{}
	for _, s := range snaps {
		if slisted[s.GetSnapshotId()] != nil {
			r.rep.bad("ListSnapshots", "snapshot %s listed twice", s.GetSnapshotId())
		}
		slisted[s.GetSnapshotId()] = s
	}
	for id, s := range slisted {
		p, ok := ps.snaps[id]
		switch {
		case !ok:
			r.rep.bad("ListSnapshots", "lists snapshot %s, which is no visible commit on the pool", id)
		case s.GetSourceVolumeId() != p.dotID:
			r.rep.bad("ListSnapshots", "snapshot %s: source volume %s, the pool says %s", id, s.GetSourceVolumeId(), p.dotID)
		}
	}
	for id := range ps.snaps {
		if slisted[id] == nil {
			r.rep.bad("ListSnapshots", "does not list commit %s, visible on the pool", id)
		}
	}
	sByID := map[string]bool{}
	for _, s := range m.snaps {
		sByID[s.id] = true
		l := slisted[s.id]
		switch {
		case l == nil:
			r.rep.bad("ListSnapshots", "snapshot %s (%s), answered for and not deleted, is not listed", s.id, s.name)
		case l.GetSourceVolumeId() != s.volID:
			r.rep.bad("ListSnapshots", "snapshot %s (%s): source volume %s, want %s", s.id, s.name, l.GetSourceVolumeId(), s.volID)
		}
	}
	for id := range slisted {
		if !sByID[id] {
			r.rep.bad("ListSnapshots", "lists snapshot %s, which no CreateSnapshot answered or which was deleted", id)
		}
	}
	r.checkMounts(m, ps)
}

// checkMounts: every staged volume is mounted once at its staging path and
// every published one once at its target, and nothing else of the pool's
// or under the test's folder is mounted, except the driver's shared mount
// root and a dot at its own mountpoint (zfs-fuse mounts clones when it
// makes them).
func (r *rig) checkMounts(m *model, ps poolState) {
	ms, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		r.rep.bad("mountinfo", "%v", err)
		return
	}
	want := map[string]string{} // mount point -> dataset
	for _, v := range m.vols {
		ds := r.pool + "/dots/" + v.id
		if v.staged {
			want[r.stagingPath(v.name)] = ds
		}
		if v.published {
			want[r.targetPath(v.name)] = ds
		}
	}
	seen := map[string]int{}
	ownRoot := filepath.Join(r.mountRoot, r.pool, "dots")
	for _, mt := range ms {
		ours := mt.MountPoint == r.work || strings.HasPrefix(mt.MountPoint, r.work+"/")
		pools := mt.Source == r.pool || strings.HasPrefix(mt.Source, r.pool+"/")
		if !ours && !pools {
			continue
		}
		seen[mt.MountPoint]++
		id := strings.TrimPrefix(mt.Source, r.pool+"/dots/")
		switch {
		case mt.MountPoint == r.mountRoot && !pools:
			// The driver's mount root, bound onto itself rshared.
		case want[mt.MountPoint] != "":
			if mt.Source != want[mt.MountPoint] {
				r.rep.bad("mounts", "%s shows %s, want %s", mt.MountPoint, mountinfo.Describe(mt), want[mt.MountPoint])
			}
		case mt.MountPoint == filepath.Join(ownRoot, id) && ps.all[id]:
			// A dot at its own mountpoint.
		default:
			r.rep.bad("mounts", "leftover mount at %s: %s", mt.MountPoint, mountinfo.Describe(mt))
		}
	}
	for mp, ds := range want {
		if seen[mp] == 0 {
			r.rep.bad("mounts", "%s is staged or published, yet nothing is mounted at %s", ds, mp)
		}
	}
	for mp, n := range seen {
		if n > 1 {
			r.rep.bad("mounts", "%d mounts stacked at %s", n, mp)
		}
	}
}
