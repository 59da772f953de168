//go:build zfs

// Package cluster runs csi-sanity against the controller of a 3-node
// harness cluster (each node its own namespaces, zfs-fuse and disk; a real
// etcd and kube-apiserver), with node0's plugin as the node under test.
// Volumes land on whichever pool has most room, so node0 stages dots that
// other nodes made: every node test also exercises a handoff.
package cluster

import (
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/dotmesh-io/dotmesh-csi/e2e/multinode"
)

func TestSanityAgainstAThreeNodeCluster(t *testing.T) {
	h := multinode.New(t, multinode.Options{Nodes: 3})
	for _, n := range h.Nodes {
		n.StartPlugin()
	}
	_, ctrl := h.StartController()
	h.WaitPools(3)
	n0 := h.Nodes[0]
	sc := sanity.NewTestConfig()
	sc.Address = "unix://" + n0.Socket()
	sc.ControllerAddress = "unix://" + ctrl
	sc.TargetPath = filepath.Join(n0.KubeletDir(), "mount")
	sc.StagingPath = filepath.Join(n0.KubeletDir(), "staging")
	sc.TestVolumeSize = 64 << 20
	sc.TestVolumeExpandSize = 96 << 20
	sanity.Test(t, sc)
}
