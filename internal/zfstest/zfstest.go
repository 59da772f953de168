// Package zfstest gives tests a real pool on the machine's ZFS (zfs-fuse on
// the build machines, OpenZFS in the guest tier), and removes it afterwards
// even when the test fails.
package zfstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// Require fails the test (never skips it: CI runs as root with ZFS) when
// the test cannot reach a ZFS as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root; run it through `make test`, which runs as root in CI")
	}
	if out, err := exec.Command("zpool", "list").CombinedOutput(); err != nil {
		t.Fatalf("ZFS does not answer (`zpool list`: %v: %s); `make test` starts zfs-fuse, or run hack/zfs-fuse.sh start", err, out)
	}
}

// UniqueName returns prefix-<8 hex>, so parallel runs never share a pool.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Client is a zfs client on the real tools.
func Client() *zfs.Client { return zfs.New(zfs.ExecRunner{}, zfs.Options{}) }

// Pool opens a fresh pool of size bytes in a temporary backing folder and
// registers its removal.
func Pool(t testing.TB, size int64) (*zfsd.Pool, zfsd.Config) {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	cfg := zfsd.Config{Name: UniqueName("t"), Dir: filepath.Join(dir, "backing"), Size: size,
		MountRoot: filepath.Join(dir, "mnt"), Node: "test-node"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := zfsd.Open(ctx, Client(), cfg)
	if err != nil {
		t.Fatalf("opening pool: %v", err)
	}
	t.Cleanup(func() { Remove(t, p, cfg) })
	return p, cfg
}

// Remove exports the pool, or destroys it forcibly when export fails, so no
// test leaves a pool imported in the shared daemon.
func Remove(t testing.TB, p *zfsd.Pool, cfg zfsd.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if exec.Command("zpool", "list", cfg.Name).Run() != nil {
		return // a test exported it already
	}
	if err := p.Close(ctx); err != nil {
		t.Logf("export failed, destroying pool %s: %v", cfg.Name, err)
	}
	ForgetPool(t, cfg.Name)
}

// ForgetPool destroys a pool by name if it is still imported.
func ForgetPool(t testing.TB, name string) {
	t.Helper()
	if exec.Command("zpool", "list", name).Run() == nil {
		if out, err := exec.Command("zpool", "destroy", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("zpool destroy -f %s: %v: %s", name, err, out)
		}
	}
}
