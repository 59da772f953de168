package zfsd

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

func (p *Pool) dataset(dotID string) string { return p.dotsRoot + "/" + dotID }

// snapshotName maps a commit ID (<dot-id>@<commit>) to its ZFS snapshot.
func (p *Pool) snapshotName(commitID string) string { return p.dotsRoot + "/" + commitID }

func encodeParams(m map[string]string) string {
	v := url.Values{}
	for k, val := range m {
		v.Set(k, val)
	}
	return v.Encode()
}

func decodeParams(s string) map[string]string {
	m := map[string]string{}
	v, err := url.ParseQuery(s)
	if err != nil {
		return m
	}
	for k := range v {
		m[k] = v.Get(k)
	}
	return m
}

// storedParams reads a dot's stored parameters. The driver checked them
// before they were stored, so a refusal means a newer driver wrote a key
// this one does not know: the dot keeps the rest and stays usable.
func (p *Pool) storedParams(dotID, v string) Params {
	params, err := ParseParams(decodeParams(v))
	if err != nil {
		klog.ErrorS(err, "dot's stored parameters; keeping those understood", "pool", p.cfg.Name, "dot", dotID)
	}
	return params
}

// storedSource reads what a dot was branched from, which only says where
// it came from: a value this driver cannot read is logged and left out.
func (p *Pool) storedSource(dotID, v string) Source {
	src, err := ParseSource(v)
	if err != nil {
		klog.ErrorS(err, "dot's stored source; left out", "pool", p.cfg.Name, "dot", dotID)
	}
	return src
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// load rebuilds the index from the pool's user properties. Datasets without
// io.dotmesh:managed are not ours and are ignored (architecture rule 4).
func (p *Pool) load(ctx context.Context) error {
	list, err := p.z.Get(ctx, []string{p.dotsRoot}, true, p.loadProps()...)
	if err != nil {
		return fmt.Errorf("pool %s: loading dots: %w", p.cfg.Name, err)
	}
	dots, commits := p.parse(list)
	// A half-made detached copy carries its origin's ID: the driver died
	// between receiving it and marking it as its own. It is ours and
	// incomplete, so it goes.
	for _, ds := range list {
		rel := strings.TrimPrefix(ds.Name, p.dotsRoot+"/")
		if ds.Type() != "snapshot" && ds.Props[propManaged].Value == "true" && ds.OwnValue(propID) != rel {
			klog.InfoS("found a half-made dot; destroying it", "pool", p.cfg.Name, "dataset", ds.Name)
			if err := p.z.Destroy(ctx, ds.Name, true); err != nil && !zfs.IsKind(err, zfs.KindNotFound) {
				klog.ErrorS(err, "destroying half-made dot", "dataset", ds.Name)
			}
		}
	}
	p.mu.Lock()
	p.dots, p.commits = dots, commits
	p.mu.Unlock()
	return nil
}

// loadProps are the properties the index is built from. The resume token
// only where the tools know it: zfs-fuse fails the whole get on it.
func (p *Pool) loadProps() []string {
	if p.resumable {
		return append(loadProps[:len(loadProps):len(loadProps)], "receive_resume_token")
	}
	return loadProps
}

// parse builds index entries from `zfs get` output. Datasets without
// io.dotmesh:managed are not ours and are ignored (architecture rule 4), and
// so are half-made copies whose ID is not their own.
func (p *Pool) parse(list []zfs.Dataset) (map[string]*Dot, map[string]*Commit) {
	dots := map[string]*Dot{}
	commits := map[string]*Commit{}
	for _, ds := range list {
		if ds.Name == p.dotsRoot || ds.Props[propManaged].Value != "true" {
			continue
		}
		rel := strings.TrimPrefix(ds.Name, p.dotsRoot+"/")
		if ds.Type() == "snapshot" {
			dotID, _, _ := strings.Cut(rel, "@")
			commits[rel] = &Commit{
				ID:       rel,
				DotID:    dotID,
				Name:     ds.OwnValue(propCommitName),
				Size:     atoi(ds.OwnValue(propCommitSize)),
				Created:  parseTime(ds.OwnValue(propCommitCreated)),
				Deleted:  ds.OwnValue(propCommitDeleted) != "",
				Internal: ds.OwnValue(propCommitInternal) == "true",
			}
			continue
		}
		if ds.OwnValue(propID) != rel || strings.Contains(rel, "/") {
			continue
		}
		d := &Dot{
			Pool:     p.cfg.Name,
			ID:       rel,
			Name:     ds.OwnValue(propName),
			Capacity: atoi(ds.OwnValue(propCapacity)),
			Params:   p.storedParams(rel, ds.OwnValue(propParams)),
			Source:   p.storedSource(rel, ds.OwnValue(propSource)),
			Created:  parseTime(ds.OwnValue(propCreated)),
			Deleted:  ds.OwnValue(propDeleted) != "",
		}
		if o := ds.Props["origin"].Value; o != "-" && o != "" {
			d.Origin = o
		}
		d.Block = ds.Type() == "volume"
		d.legacyMount = ds.Props["mountpoint"].Value == "legacy"
		d.Master = ds.Props[propRole].Source == "local" && ds.Props[propRole].Value == "master"
		dots[rel] = d
	}
	for id, c := range commits {
		if _, ok := dots[c.DotID]; !ok {
			delete(commits, id)
		}
	}
	// The first stream into a replica, broken off with its partial state
	// kept (zfs recv -s), leaves a dataset with the stream's properties but
	// no commit: not a copy of anything yet, until the stream is resumed.
	for _, ds := range list {
		rel := strings.TrimPrefix(ds.Name, p.dotsRoot+"/")
		if tok := ds.Props["receive_resume_token"].Value; tok != "" && tok != "-" && dots[rel] != nil && !hasCommit(commits, rel) {
			delete(dots, rel)
		}
	}
	return dots, commits
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// ListDots lists the live (not hidden) dots, sorted by ID. The index
// answers these reads, but only while the pool serves: a dot of a pool
// that is not imported cannot be staged or read.
func (p *Pool) ListDots(context.Context) ([]Dot, error) {
	return list(p, p.dotIndex, liveDot, copyDot, func(d Dot) string { return d.ID })
}

func copyDot(d *Dot) Dot {
	c := *d
	c.Params = d.Params.copy()
	return c
}

// GetDot returns a live dot by ID.
func (p *Pool) GetDot(_ context.Context, id string) (Dot, error) {
	return lookup(p, p.dotIndex, id, liveDot, copyDot, "dot "+id)
}

// GetDotByName returns the live dot with a CSI name.
func (p *Pool) GetDotByName(_ context.Context, name string) (Dot, error) {
	named := func(d *Dot) bool { return liveDot(d) && d.Name == name }
	return lookup(p, p.dotIndex, "", named, copyDot, fmt.Sprintf("dot named %q", name))
}

// ListCommits lists live, user-visible commits sorted by ID.
func (p *Pool) ListCommits(context.Context) ([]Commit, error) {
	return list(p, p.commitIndex, (*Commit).visible, copyCommit, func(c Commit) string { return c.ID })
}

// GetCommit returns a live commit by ID.
func (p *Pool) GetCommit(_ context.Context, id string) (Commit, error) {
	return lookup(p, p.commitIndex, id, (*Commit).visible, copyCommit, "commit "+id)
}

// GetCommitByName returns the live commit with a CSI snapshot name.
func (p *Pool) GetCommitByName(_ context.Context, name string) (Commit, error) {
	named := func(c *Commit) bool { return c.visible() && c.Name == name }
	return lookup(p, p.commitIndex, "", named, copyCommit, fmt.Sprintf("commit named %q", name))
}

func liveDot(d *Dot) bool                       { return !d.Deleted }
func copyCommit(c *Commit) Commit               { return *c }
func (p *Pool) dotIndex() map[string]*Dot       { return p.dots }
func (p *Pool) commitIndex() map[string]*Commit { return p.commits }

// list returns copies of the index entries that match accepts, sorted by
// key. index is called under mu: a reload replaces the maps.
func list[T any](p *Pool, index func() map[string]*T, match func(*T) bool, clone func(*T) T, key func(T) string) ([]T, error) {
	if err := p.available(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []T{}
	for _, x := range index() {
		if match(x) {
			out = append(out, clone(x))
		}
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out, nil
}

// lookup returns a copy of the entry under id that match accepts or, with
// no id, of any entry it accepts; what names the sought in the error.
func lookup[T any](p *Pool, index func() map[string]*T, id string, match func(*T) bool, clone func(*T) T, what string) (T, error) {
	var zero T
	if err := p.available(); err != nil {
		return zero, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if id != "" {
		if x, ok := index()[id]; ok && match(x) {
			return clone(x), nil
		}
	} else {
		for _, x := range index() {
			if match(x) {
				return clone(x), nil
			}
		}
	}
	return zero, fmt.Errorf("%s on pool %s: %w", what, p.cfg.Name, ErrNotFound)
}

// branchesOfLocked counts dots (hidden ones too) whose origin is commit id.
func (p *Pool) branchesOfLocked(commitID string) int {
	snap := p.snapshotName(commitID)
	n := 0
	for _, d := range p.dots {
		if d.Origin == snap {
			n++
		}
	}
	return n
}

// originCommit turns a ZFS origin ("pool/dots/a@b") back into a commit ID.
func (p *Pool) originCommit(origin string) string {
	rel := strings.TrimPrefix(origin, p.dotsRoot+"/")
	if rel == origin || path.Base(rel) != rel {
		return ""
	}
	return rel
}

func hasCommit(commits map[string]*Commit, dotID string) bool {
	for _, c := range commits {
		if c.DotID == dotID {
			return true
		}
	}
	return false
}
