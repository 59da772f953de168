package driver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// fakeMounter is a mount table in memory, with the semantics of
// pkg/mountinfo's calls on the real one: binds keep their source's device
// and root, a stack unmounts only when every layer is the caller's, dead
// mounts fail CheckAlive. It starts with a root filesystem, so a bind of a
// plain folder shows as one, and devDir as devtmpfs, where block dots'
// device nodes live.
type fakeMounter struct {
	mu     sync.Mutex
	table  []mountinfo.Mount
	dead   map[int]bool // mount IDs whose filesystem no longer answers
	nextID int
	fail   map[string]error // method name → its error, until cleared
}

var _ driver.Mounter = (*fakeMounter)(nil)

func newFakeMounter(devDir string) *fakeMounter {
	m := &fakeMounter{dead: map[int]bool{}, fail: map[string]error{}, nextID: 1}
	m.add(mountinfo.Mount{MountPoint: "/", Root: "/", FSType: "ext4", Source: "/dev/vda1", Major: 254, Minor: 1, Options: "rw"})
	m.add(mountinfo.Mount{MountPoint: devDir, Root: "/", FSType: "devtmpfs", Source: "udev", Major: 0, Minor: 5, Options: "rw"})
	return m
}

// add puts m on top of whatever is mounted at its mount point.
func (m *fakeMounter) add(mt mountinfo.Mount) mountinfo.Mount {
	m.nextID++
	mt.ID, mt.ParentID = m.nextID, 1
	mt.MountPoint = filepath.Clean(mt.MountPoint)
	m.table = append(m.table, mt)
	return mt
}

// mount adds a mount under the lock; a test uses it to put things in the
// way, as another process would.
func (m *fakeMounter) mount(mt mountinfo.Mount) mountinfo.Mount {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.add(mt)
}

// kill makes the mount with this ID stop answering, as a zfs-fuse restart
// leaves it.
func (m *fakeMounter) kill(id int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dead[id] = true
}

func (m *fakeMounter) failOn(method string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[method] = err
}

func (m *fakeMounter) stackLocked(path string) []mountinfo.Mount {
	path = filepath.Clean(path)
	var out []mountinfo.Mount
	for _, mt := range m.table {
		if mt.MountPoint == path {
			out = append(out, mt)
		}
	}
	return out
}

func (m *fakeMounter) removeLocked(id int) {
	m.table = slices.DeleteFunc(m.table, func(mt mountinfo.Mount) bool { return mt.ID == id })
}

// at is StackAt for tests: what is at path, bottom first.
func (m *fakeMounter) at(path string) []mountinfo.Mount {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stackLocked(path)
}

func (m *fakeMounter) Mounts() ([]mountinfo.Mount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fail["Mounts"]; err != nil {
		return nil, err
	}
	return slices.Clone(m.table), nil
}

func (m *fakeMounter) StackAt(path string) ([]mountinfo.Mount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fail["StackAt"]; err != nil {
		return nil, err
	}
	return m.stackLocked(path), nil
}

func (m *fakeMounter) CheckAlive(path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fail["CheckAlive"]; err != nil {
		return err
	}
	return m.aliveLocked(path)
}

func (m *fakeMounter) aliveLocked(path string) error {
	if s := m.stackLocked(path); len(s) > 0 && m.dead[s[len(s)-1].ID] {
		return fmt.Errorf("statfs %s: transport endpoint is not connected: %w", path, mountinfo.ErrDeadMount)
	}
	return nil
}

func (m *fakeMounter) DetachDead(path string, ours func(mountinfo.Mount) bool) (mountinfo.Mount, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fail["DetachDead"]; err != nil {
		return mountinfo.Mount{}, false, err
	}
	for {
		s := m.stackLocked(path)
		if len(s) == 0 {
			return mountinfo.Mount{}, false, nil
		}
		top := s[len(s)-1]
		if !ours(top) || !m.dead[top.ID] {
			return top, true, nil
		}
		m.removeLocked(top.ID)
	}
}

func (m *fakeMounter) Bind(src, dst string, readOnly bool) error {
	return m.bind("Bind", src, dst, readOnly, func(p string) error { return os.MkdirAll(p, 0o750) })
}

func (m *fakeMounter) BindFile(src, dst string, readOnly bool) error {
	return m.bind("BindFile", src, dst, readOnly, func(p string) error {
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return err
		}
		return os.WriteFile(p, nil, 0o640)
	})
}

// bind is mountinfo.Bind on the fake table: dst already showing src's
// folder is success (made read-only if asked), anything else there is
// ErrMountedElsewhere.
func (m *fakeMounter) bind(method, src, dst string, readOnly bool, makeTarget func(string) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fail[method]; err != nil {
		return err
	}
	src, dst = filepath.Clean(src), filepath.Clean(dst)
	from, _ := mountinfo.Find(m.table, src)
	rel, _ := filepath.Rel(from.MountPoint, src)
	root := filepath.Join(from.Root, rel)
	if s := m.stackLocked(dst); len(s) > 0 {
		top := s[len(s)-1]
		if top.Major != from.Major || top.Minor != from.Minor || top.Root != root {
			return fmt.Errorf("bind %s at %s: %s: %w", src, dst, mountinfo.Describe(top), mountinfo.ErrMountedElsewhere)
		}
		if readOnly {
			for i := range m.table {
				if m.table[i].ID == top.ID {
					m.table[i].Options = "ro"
				}
			}
		}
		return nil
	}
	if err := makeTarget(dst); err != nil {
		return err
	}
	opts := "rw"
	if readOnly {
		opts = "ro"
	}
	m.add(mountinfo.Mount{MountPoint: dst, Root: root, FSType: from.FSType, Source: from.Source, Major: from.Major, Minor: from.Minor, Options: opts})
	return nil
}

func (m *fakeMounter) UnmountOnly(path string, ours func(mountinfo.Mount) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fail["UnmountOnly"]; err != nil {
		return err
	}
	s := m.stackLocked(path)
	for _, mt := range s {
		if !ours(mt) {
			return &mountinfo.ForeignMountError{Path: path, Mount: mt}
		}
	}
	for _, mt := range s {
		m.removeLocked(mt.ID)
	}
	return nil
}

// fakeStore is a driver.Store in memory, with zfsd.Pool's answers: its
// sentinel errors, live dots and visible commits sorted by ID, a delete of
// what is missing as success, a staged dot refused deletion. Staging mounts
// the dot's dataset in the fake mount table, as zfsd does in the real one.
// A test injects errors by method name, and can hold a method's calls
// (block) to catch the driver mid-call.
type fakeStore struct {
	mu      sync.Mutex
	pools   []zfsd.PoolInfo
	dots    map[string]zfsd.Dot
	commits map[string]zfsd.Commit
	minor   map[string]int // each filesystem dot's device minor in the table
	mounter *fakeMounter
	devDir  string
	fail    map[string]error
	calls   map[string]int           // method → how often it was called
	block   map[string]chan struct{} // method → closed to let its next call go on
	entered chan string              // a held method's name, once its call waits
}

var _ driver.Store = (*fakeStore)(nil)

func newFakeStore(mounter *fakeMounter, devDir string, pools ...zfsd.PoolInfo) *fakeStore {
	return &fakeStore{pools: pools, dots: map[string]zfsd.Dot{}, commits: map[string]zfsd.Commit{},
		minor: map[string]int{}, mounter: mounter, devDir: devDir, fail: map[string]error{}, calls: map[string]int{},
		block: map[string]chan struct{}{}, entered: make(chan string, 16)}
}

func (s *fakeStore) failOn(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[method] = err
}

// called says how often method was called.
func (s *fakeStore) called(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// hold makes the next call of method wait until release is called; the
// method's name is sent on entered once the call is waiting.
func (s *fakeStore) hold(method string) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.block[method] = ch
	return func() { close(ch) }
}

// enter is each method's start: a held method waits, and an injected
// error is returned.
func (s *fakeStore) enter(method string) error {
	s.mu.Lock()
	s.calls[method]++
	ch := s.block[method]
	delete(s.block, method)
	s.mu.Unlock()
	if ch != nil {
		s.entered <- method
		<-ch
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail[method]
}

func dataset(pool, id string) string { return pool + "/dots/" + id }

func (s *fakeStore) Pools(context.Context) ([]zfsd.PoolInfo, error) {
	if err := s.enter("Pools"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pools), nil
}

func (s *fakeStore) ListDots(context.Context) ([]zfsd.Dot, error) {
	if err := s.enter("ListDots"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []zfsd.Dot
	for _, d := range s.dots {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *fakeStore) GetDot(_ context.Context, id string) (zfsd.Dot, error) {
	if err := s.enter("GetDot"); err != nil {
		return zfsd.Dot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dots[id]
	if !ok {
		return zfsd.Dot{}, fmt.Errorf("dot %s: %w", id, zfsd.ErrNotFound)
	}
	return d, nil
}

func (s *fakeStore) GetDotByName(_ context.Context, name string) (zfsd.Dot, error) {
	if err := s.enter("GetDotByName"); err != nil {
		return zfsd.Dot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dots {
		if d.Name == name {
			return d, nil
		}
	}
	return zfsd.Dot{}, fmt.Errorf("dot named %q: %w", name, zfsd.ErrNotFound)
}

func (s *fakeStore) CreateDot(_ context.Context, spec zfsd.DotSpec) (zfsd.Dot, error) {
	if err := s.enter("CreateDot"); err != nil {
		return zfsd.Dot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.pools, func(p zfsd.PoolInfo) bool { return p.Name == spec.Pool })
	if i < 0 {
		return zfsd.Dot{}, fmt.Errorf("dot %s asked for pool %q: %w", spec.ID, spec.Pool, zfsd.ErrInvalid)
	}
	if spec.Block && !s.pools[i].Zvols {
		return zfsd.Dot{}, fmt.Errorf("dot %s: %w", spec.ID, zfsd.ErrUnsupported)
	}
	if _, ok := s.dots[spec.ID]; ok {
		return zfsd.Dot{}, fmt.Errorf("dot %s: %w", spec.ID, zfsd.ErrAlreadyExists)
	}
	d := zfsd.Dot{Pool: spec.Pool, ID: spec.ID, Name: spec.Name, Capacity: spec.Capacity, Params: spec.Params, Source: spec.Source,
		Created: time.Now(), Block: spec.Block, Master: true}
	switch spec.Source.Kind {
	case zfsd.SourceCommit:
		c, ok := s.commits[spec.Source.ID]
		if !ok {
			return zfsd.Dot{}, fmt.Errorf("commit %s: %w", spec.Source.ID, zfsd.ErrNotFound)
		}
		if spec.Capacity < c.Used {
			return zfsd.Dot{}, fmt.Errorf("dot %s of %d bytes from commit %s holding %d: %w", spec.ID, spec.Capacity, c.ID, c.Used, zfsd.ErrTooSmall)
		}
	case zfsd.SourceDot:
		if _, ok := s.dots[spec.Source.ID]; !ok {
			return zfsd.Dot{}, fmt.Errorf("dot %s: %w", spec.Source.ID, zfsd.ErrNotFound)
		}
	}
	s.dots[d.ID] = d
	s.minor[d.ID] = 100 + len(s.minor)
	return d, nil
}

func (s *fakeStore) DeleteDot(_ context.Context, id string) error {
	if err := s.enter("DeleteDot"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dots[id]
	if !ok {
		return nil
	}
	s.mounter.mu.Lock()
	staged := slices.ContainsFunc(s.mounter.table, func(m mountinfo.Mount) bool { return m.Source == dataset(d.Pool, id) })
	s.mounter.mu.Unlock()
	if staged {
		return fmt.Errorf("dot %s is staged; unstage it first: %w", id, zfsd.ErrBusy)
	}
	delete(s.dots, id)
	return nil
}

func (s *fakeStore) ResizeDot(_ context.Context, id string, capacity int64) (zfsd.Dot, error) {
	if err := s.enter("ResizeDot"); err != nil {
		return zfsd.Dot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dots[id]
	if !ok {
		return zfsd.Dot{}, fmt.Errorf("dot %s: %w", id, zfsd.ErrNotFound)
	}
	d.Capacity = max(d.Capacity, capacity)
	s.dots[id] = d
	return d, nil
}

func (s *fakeStore) ListCommits(context.Context) ([]zfsd.Commit, error) {
	if err := s.enter("ListCommits"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []zfsd.Commit
	for _, c := range s.commits {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *fakeStore) GetCommit(_ context.Context, id string) (zfsd.Commit, error) {
	if err := s.enter("GetCommit"); err != nil {
		return zfsd.Commit{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.commits[id]
	if !ok {
		return zfsd.Commit{}, fmt.Errorf("commit %s: %w", id, zfsd.ErrNotFound)
	}
	return c, nil
}

func (s *fakeStore) GetCommitByName(_ context.Context, name string) (zfsd.Commit, error) {
	if err := s.enter("GetCommitByName"); err != nil {
		return zfsd.Commit{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.commits {
		if c.Name == name {
			return c, nil
		}
	}
	return zfsd.Commit{}, fmt.Errorf("commit named %q: %w", name, zfsd.ErrNotFound)
}

func (s *fakeStore) CreateCommit(_ context.Context, dotID, name string) (zfsd.Commit, error) {
	if err := s.enter("CreateCommit"); err != nil {
		return zfsd.Commit{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dots[dotID]
	if !ok {
		return zfsd.Commit{}, fmt.Errorf("dot %s: %w", dotID, zfsd.ErrNotFound)
	}
	c := zfsd.Commit{ID: dotID + "@" + uuid.NewString(), DotID: dotID, Name: name, Size: d.Capacity, Created: time.Now()}
	s.commits[c.ID] = c
	return c, nil
}

func (s *fakeStore) DeleteCommit(_ context.Context, id string) error {
	if err := s.enter("DeleteCommit"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.commits, id)
	return nil
}

// MountDot gives a block dot's device node, a file in devDir as a zvol's
// is in /dev; a filesystem dot's own mount is never used by the driver.
func (s *fakeStore) MountDot(_ context.Context, id string) (string, error) {
	if err := s.enter("MountDot"); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dots[id]
	if !ok {
		return "", fmt.Errorf("dot %s: %w", id, zfsd.ErrNotFound)
	}
	if !d.Block {
		return "/mnt/" + dataset(d.Pool, id), nil
	}
	dev := filepath.Join(s.devDir, "zd"+strings.ReplaceAll(id, "-", "")[:6])
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		return "", err
	}
	return dev, nil
}

func (s *fakeStore) UnmountDot(context.Context, string) error { return s.enter("UnmountDot") }

// StageDot is zfsd.Pool.StageDot on the fake table: a dead mount of the
// dot is let go of, a live one is success, anything else is
// ErrAlreadyExists.
func (s *fakeStore) StageDot(_ context.Context, id, path string) error {
	if err := s.enter("StageDot"); err != nil {
		return err
	}
	s.mu.Lock()
	d, ok := s.dots[id]
	minor := s.minor[id]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("dot %s: %w", id, zfsd.ErrNotFound)
	}
	if d.Block {
		return fmt.Errorf("dot %s is a block volume: %w", id, zfsd.ErrInvalid)
	}
	ds := dataset(d.Pool, id)
	ours := func(m mountinfo.Mount) bool { return m.Source == ds }
	top, ok, err := s.mounter.DetachDead(path, ours)
	if err != nil {
		return err
	}
	if ok {
		if ours(top) {
			return nil
		}
		return fmt.Errorf("%s holds %s: %w", path, mountinfo.Describe(top), zfsd.ErrAlreadyExists)
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return err
	}
	s.mounter.mount(mountinfo.Mount{MountPoint: path, Root: "/", FSType: "fuse.zfs", Source: ds, Major: 0, Minor: minor, Options: "rw"})
	return nil
}

// UnstageDot takes the dot's mounts at path away, dead or alive.
func (s *fakeStore) UnstageDot(_ context.Context, id, path string) error {
	if err := s.enter("UnstageDot"); err != nil {
		return err
	}
	s.mu.Lock()
	d, ok := s.dots[id]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("dot %s: %w", id, zfsd.ErrNotFound)
	}
	s.mounter.mu.Lock()
	defer s.mounter.mu.Unlock()
	for _, m := range s.mounter.stackLocked(path) {
		if m.Source == dataset(d.Pool, id) {
			s.mounter.removeLocked(m.ID)
		}
	}
	return nil
}
