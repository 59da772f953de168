//go:build zfs

// Package inprocess runs the upstream csi-sanity suite in process against
// the real driver over a unix socket, on a real ZFS pool.
package inprocess

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
)

func TestSanity(t *testing.T) {
	pool, cfg := zfstest.Pool(t, 512<<20)
	dir := t.TempDir()
	d := driver.New(driver.Config{NodeID: "test-node", AllowedTargetDirs: []string{dir}, DefaultCapacity: 64 << 20}, pool)
	srv := driver.NewServer(d, driver.Services{Controller: true, Node: true})
	endpoint := "unix://" + filepath.Join(dir, "csi.sock")
	l, err := driver.Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	sc := sanity.NewTestConfig()
	sc.Address = endpoint
	sc.TargetPath = filepath.Join(dir, "mount")
	sc.StagingPath = filepath.Join(dir, "staging")
	sc.TestVolumeSize = 64 << 20
	sc.TestVolumeExpandSize = 96 << 20
	// The OpenZFS tier runs this binary a second time with block volumes
	// (zvols), which zfs-fuse does not have.
	if at := os.Getenv("DOTMESH_SANITY_ACCESS_TYPE"); at != "" {
		sc.TestVolumeAccessType = at
		t.Logf("csi-sanity with the %s access type", at)
	}
	sanity.Test(t, sc)

	// Sanity deletes everything it made; nothing may be left on the pool.
	dots, err := pool.ListDots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(dots) != 0 {
		t.Errorf("%d dots left after sanity: %+v", len(dots), dots)
	}
	out, err := exec.Command("zfs", "list", "-H", "-o", "name", "-t", "filesystem,snapshot", "-r", cfg.Name+"/dots").Output()
	if err != nil {
		t.Fatal(err)
	}
	if left := strings.Fields(string(out)); len(left) != 1 {
		t.Errorf("datasets left after sanity: %q", left)
	}
}
