//go:build zfs

package loopdisk

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
)

// TestSanity holds the test double to the CSI spec, so the PV-per-node
// tests that use it test the driver, not the double's quirks.
func TestSanity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("loop devices need root; CI runs as root")
	}
	dir := t.TempDir()
	disks := filepath.Join(dir, "disks")
	if err := os.MkdirAll(disks, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Dir: disks, NodeID: "node0"}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
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
	sc.TestVolumeSize = 16 << 20
	sanity.Test(t, sc)

	left, _ := filepath.Glob(filepath.Join(disks, "*"))
	if len(left) != 0 {
		t.Errorf("files left after sanity: %q", left)
	}
}
