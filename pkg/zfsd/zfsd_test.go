//go:build zfs

package zfsd_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// writeRandom writes n random bytes to path and returns their sha256.
func writeRandom(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func exists(t *testing.T, name string) bool {
	t.Helper()
	return exec.Command("zfs", "list", "-H", "-o", "name", "-t", "filesystem,snapshot,volume", name).Run() == nil
}

func newDot(t *testing.T, p *zfsd.Pool, name string) zfsd.Dot {
	t.Helper()
	d, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: uuid.NewString(), Name: name, Capacity: 64 << 20,
		Params: zfsd.Params{Replicas: 2, Metadata: map[string]string{zfsd.MetadataPrefix + "pvc/name": name}}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mount(t *testing.T, p *zfsd.Pool, id string) string {
	t.Helper()
	path, err := p.MountDot(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.UnmountDot(context.Background(), id) })
	return path
}

func TestDotsAndCommitsSurviveExportAndImport(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	d := newDot(t, p, "survivor")
	want := writeRandom(t, filepath.Join(mount(t, p, d.ID), "data"), 1<<20)
	c, err := p.CreateCommit(ctx(t), d.ID, "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx(t)); err != nil {
		t.Fatalf("export: %v", err)
	}
	if exec.Command("zpool", "list", cfg.Name).Run() == nil {
		t.Fatal("pool still imported after Close")
	}

	p2, err := zfsd.Open(ctx(t), zfstest.Client(), cfg)
	if err != nil {
		t.Fatalf("re-import: %v", err)
	}
	t.Cleanup(func() { zfstest.Remove(t, p2, cfg) })
	got, err := p2.GetDotByName(ctx(t), "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != d.ID || got.Capacity != d.Capacity || !got.Params.Equal(d.Params) || got.Params.Replicas != 2 || !got.Created.Equal(d.Created) {
		t.Fatalf("dot after re-import %+v, want %+v", got, d)
	}
	gc, err := p2.GetCommitByName(ctx(t), "snap-1")
	if err != nil || gc.ID != c.ID || gc.Size != d.Capacity {
		t.Fatalf("commit after re-import %+v, %v", gc, err)
	}
	if s := sum(t, filepath.Join(mount(t, p2, d.ID), "data")); s != want {
		t.Fatalf("data checksum %s after re-import, want %s", s, want)
	}
}

func TestBranchEqualsItsCommit(t *testing.T) {
	p, _ := zfstest.Pool(t, 256<<20)
	d := newDot(t, p, "origin")
	dir := mount(t, p, d.ID)
	want := writeRandom(t, filepath.Join(dir, "data"), 4<<20)
	c, err := p.CreateCommit(ctx(t), d.ID, "at-commit")
	if err != nil {
		t.Fatal(err)
	}
	later := writeRandom(t, filepath.Join(dir, "data"), 4<<20) // after the commit
	if later == want {
		t.Fatal("random data repeated")
	}
	for _, mode := range []zfsd.CloneMode{zfsd.CloneInstant, zfsd.CloneDetached} {
		t.Run(string(mode), func(t *testing.T) {
			b, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: uuid.NewString(), Name: "branch-" + string(mode),
				Capacity: 64 << 20, Source: zfsd.Source{Kind: zfsd.SourceCommit, ID: c.ID}, Params: zfsd.Params{CloneMode: mode}})
			if err != nil {
				t.Fatal(err)
			}
			if s := sum(t, filepath.Join(mount(t, p, b.ID), "data")); s != want {
				t.Fatalf("branch data %s, want the commit's %s", s, want)
			}
			if (b.Origin != "") != (mode == zfsd.CloneInstant) {
				t.Fatalf("origin %q for mode %s", b.Origin, mode)
			}
		})
	}
	// A branch too small for the commit's data is refused and leaves nothing.
	for _, mode := range []zfsd.CloneMode{zfsd.CloneInstant, zfsd.CloneDetached} {
		id := uuid.NewString()
		_, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: id, Name: "tiny-" + string(mode), Capacity: 1 << 20, Source: zfsd.Source{Kind: zfsd.SourceCommit, ID: c.ID}, Params: zfsd.Params{CloneMode: mode}})
		if !errors.Is(err, zfsd.ErrTooSmall) {
			t.Errorf("%s branch of 1 MiB from 4 MiB of data: %v, want ErrTooSmall", mode, err)
		}
		if exists(t, p.Name()+"/dots/"+id) {
			t.Errorf("%s: refused branch left its dataset", mode)
		}
	}
	// A branch of a dot (not a commit) sees the dot's current data.
	b, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: uuid.NewString(), Name: "from-dot", Capacity: 64 << 20, Source: zfsd.Source{Kind: zfsd.SourceDot, ID: d.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if s := sum(t, filepath.Join(mount(t, p, b.ID), "data")); s != later {
		t.Fatalf("branch of dot has %s, want current %s", s, later)
	}
}

func TestDeferredCommitDeletion(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	a := newDot(t, p, "a")
	c, err := p.CreateCommit(ctx(t), a.ID, "c")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: uuid.NewString(), Name: "b", Capacity: 64 << 20, Source: zfsd.Source{Kind: zfsd.SourceCommit, ID: c.ID}})
	if err != nil {
		t.Fatal(err)
	}
	snap := cfg.Name + "/dots/" + c.ID
	dsA := cfg.Name + "/dots/" + a.ID

	// The commit has a branch: deleting it hides it, and ZFS keeps it.
	if err := p.DeleteCommit(ctx(t), c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetCommit(ctx(t), c.ID); !errors.Is(err, zfsd.ErrNotFound) {
		t.Fatalf("hidden commit still visible: %v", err)
	}
	if !exists(t, snap) {
		t.Fatal("commit destroyed while a branch depends on it")
	}
	// The origin dot too: deleting it hides it.
	if err := p.DeleteDot(ctx(t), a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetDot(ctx(t), a.ID); !errors.Is(err, zfsd.ErrNotFound) {
		t.Fatal("hidden dot still visible")
	}
	if !exists(t, dsA) {
		t.Fatal("origin dot destroyed while a branch depends on it")
	}
	// Deletions are idempotent.
	if err := p.DeleteCommit(ctx(t), c.ID); err != nil {
		t.Fatal(err)
	}
	// The last branch goes: the commit and its hidden dot go with it.
	if err := p.DeleteDot(ctx(t), b.ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{snap, dsA, cfg.Name + "/dots/" + b.ID} {
		if exists(t, n) {
			t.Errorf("%s still exists after its last dependant went", n)
		}
	}
}

func TestDeletionSurvivesRestart(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	a := newDot(t, p, "a")
	c, err := p.CreateCommit(ctx(t), a.ID, "c")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: uuid.NewString(), Name: "b", Capacity: 64 << 20, Source: zfsd.Source{Kind: zfsd.SourceCommit, ID: c.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteCommit(ctx(t), c.ID); err != nil {
		t.Fatal(err)
	}
	// The branch is destroyed behind the driver's back (a crash between
	// destroying it and collecting its origin); reopening collects.
	if err := zfstest.Client().Destroy(ctx(t), cfg.Name+"/dots/"+b.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	p2, err := zfsd.Open(ctx(t), zfstest.Client(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zfstest.Remove(t, p2, cfg) })
	if exists(t, cfg.Name+"/dots/"+c.ID) {
		t.Fatal("hidden commit not collected on open")
	}
	if !exists(t, cfg.Name+"/dots/"+a.ID) {
		t.Fatal("live dot collected")
	}
}

func TestHalfMadeDetachedCopyIsCollected(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	a := newDot(t, p, "a")
	c, err := p.CreateCommit(ctx(t), a.ID, "c")
	if err != nil {
		t.Fatal(err)
	}
	// What a crash right after the receive leaves: a copy still carrying
	// the origin's properties.
	half := cfg.Name + "/dots/" + uuid.NewString()
	send := exec.Command("zfs", "send", "-p", cfg.Name+"/dots/"+c.ID)
	recv := exec.Command("zfs", "recv", "-u", half)
	pipe, _ := send.StdoutPipe()
	recv.Stdin = pipe
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := send.Run(); err != nil {
		t.Fatal(err)
	}
	if err := recv.Wait(); err != nil {
		t.Fatal(err)
	}
	// An unmanaged dataset beside it must be left alone (rule 4).
	foreign := cfg.Name + "/dots/not-ours"
	if out, err := exec.Command("zfs", "create", foreign).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := p.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	p2, err := zfsd.Open(ctx(t), zfstest.Client(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zfstest.Remove(t, p2, cfg) })
	if exists(t, half) {
		t.Fatal("half-made copy not collected")
	}
	if !exists(t, foreign) {
		t.Fatal("a dataset without io.dotmesh:managed was destroyed")
	}
	dots, _ := p2.ListDots(ctx(t))
	if len(dots) != 1 || dots[0].ID != a.ID {
		t.Fatalf("dots after open: %+v", dots)
	}
}

func TestResizeIsOnline(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	d := newDot(t, p, "grow")
	mount(t, p, d.ID)
	if _, err := p.ResizeDot(ctx(t), d.ID, 128<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zfs", "get", "-Hp", "-o", "value", "refquota", cfg.Name+"/dots/"+d.ID).Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "134217728\n" {
		t.Fatalf("refquota %q after resize", out)
	}
}

// A dot is staged by mounting it at the staging path itself, and a
// detached branch of its commit must not take that path along (the stream
// carries the origin's mountpoint) and mount on top of it.
func TestStagedDotAndItsDetachedBranch(t *testing.T) {
	p, _ := zfstest.Pool(t, 256<<20)
	d := newDot(t, p, "staged")
	staging := filepath.Join(t.TempDir(), "globalmount")
	if err := p.StageDot(ctx(t), d.ID, staging); err != nil {
		t.Fatal(err)
	}
	if err := p.StageDot(ctx(t), d.ID, staging); err != nil {
		t.Fatalf("second StageDot: %v", err)
	}
	want := writeRandom(t, filepath.Join(staging, "data"), 2<<20)
	if staged, err := p.Staged(ctx(t), d.ID); err != nil || !staged {
		t.Fatalf("Staged = %v, %v while mounted at the staging path", staged, err)
	}
	c, err := p.CreateCommit(ctx(t), d.ID, "c")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: uuid.NewString(), Name: "branch", Capacity: 64 << 20, Source: zfsd.Source{Kind: zfsd.SourceCommit, ID: c.ID}, Params: zfsd.Params{CloneMode: zfsd.CloneDetached}})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := p.MountDot(ctx(t), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dir != p.MountPath(b.ID) {
		t.Fatalf("branch mounted at %s, want its own path %s", dir, p.MountPath(b.ID))
	}
	if s := sum(t, filepath.Join(dir, "data")); s != want {
		t.Fatalf("branch data %s, want %s", s, want)
	}
	if s := sum(t, filepath.Join(staging, "data")); s != want {
		t.Fatalf("staging path now shows %s, want the staged dot's %s", s, want)
	}
	if err := p.UnstageDot(ctx(t), d.ID, staging); err != nil {
		t.Fatal(err)
	}
	if staged, err := p.Staged(ctx(t), d.ID); err != nil || staged {
		t.Fatalf("Staged = %v, %v after UnstageDot", staged, err)
	}
	if err := p.UnstageDot(ctx(t), d.ID, staging); err != nil {
		t.Fatalf("second UnstageDot: %v", err)
	}
}

// A staging path that already holds another filesystem is refused, and
// the dot is not mounted over it.
func TestStageDotRefusesAnOccupiedPath(t *testing.T) {
	p, _ := zfstest.Pool(t, 256<<20)
	d := newDot(t, p, "occupied")
	staging := filepath.Join(t.TempDir(), "globalmount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", staging, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(staging, 0) })
	if err := p.StageDot(ctx(t), d.ID, staging); !errors.Is(err, zfsd.ErrAlreadyExists) {
		t.Fatalf("staging on a tmpfs: %v, want ErrAlreadyExists", err)
	}
	if staged, err := p.Staged(ctx(t), d.ID); err != nil || staged {
		t.Fatalf("Staged = %v, %v after a refused stage", staged, err)
	}
}
