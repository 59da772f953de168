//go:build zfs

// Package split runs csi-sanity against the two real binaries: the node
// plugin (Identity + Node, and zfsd's API) and the controller plugin
// (Identity + Controller, which drives zfsd), each on its own socket.
package split

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
)

func TestSanitySplitBinaries(t *testing.T) {
	zfstest.Require(t)
	dir := t.TempDir()
	nodeBin := procs.Build(t, dir, "node")
	ctrlBin := procs.Build(t, dir, "controller")
	pool := zfstest.UniqueName("split")
	t.Cleanup(func() { zfstest.ForgetPool(t, pool) })

	nodeSock := filepath.Join(dir, "node.sock")
	zfsdSock := filepath.Join(dir, "zfsd.sock")
	ctrlSock := filepath.Join(dir, "controller.sock")
	node := procs.Start(t, filepath.Join(dir, "node.log"), nodeBin,
		"--endpoint=unix://"+nodeSock, "--node-id=split-node", "--data-dir="+filepath.Join(dir, "data"),
		"--pool-name="+pool, "--pool-size=512Mi", "--allowed-target-dirs="+dir,
		"--zfsd-endpoint=unix://"+zfsdSock, "--default-volume-size=64Mi", "--v=2")
	node.WaitForSocket(t, zfsdSock, time.Minute)
	node.WaitForSocket(t, nodeSock, time.Minute)
	ctrl := procs.Start(t, filepath.Join(dir, "controller.log"), ctrlBin,
		"--endpoint=unix://"+ctrlSock, "--zfsd-endpoint=unix://"+zfsdSock, "--v=2")
	ctrl.WaitForSocket(t, ctrlSock, time.Minute)

	sc := sanity.NewTestConfig()
	sc.Address = "unix://" + nodeSock
	sc.ControllerAddress = "unix://" + ctrlSock
	sc.TargetPath = filepath.Join(dir, "mount")
	sc.StagingPath = filepath.Join(dir, "staging")
	sc.TestVolumeSize = 64 << 20
	sc.TestVolumeExpandSize = 96 << 20
	sanity.Test(t, sc)

	// A clean SIGTERM exports the pool.
	if err := ctrl.Stop(30 * time.Second); err != nil {
		t.Errorf("controller exit: %v", err)
	}
	if err := node.Stop(60 * time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "node.log"))
		t.Errorf("node exit: %v\n%s", err, b)
	}
	if exec.Command("zpool", "list", pool).Run() == nil {
		t.Errorf("pool %s still imported after the node plugin's SIGTERM", pool)
	}
}
