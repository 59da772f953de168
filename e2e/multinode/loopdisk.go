package multinode

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dotmesh-io/dotmesh-csi/e2e/loopdisk"
	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
)

// LoopDiskClass is the StorageClass of loop disks (StartLoopDisks).
const LoopDiskClass = "loopdisk"

// StartLoopDisks gives the cluster a cloud disk service: the loop-disk
// test driver (e2e/loopdisk), whose disks are files in one folder every
// node sees. Its controller runs with csi-provisioner and csi-attacher in
// the control plane's network, and its node plugin on every node, now and
// later, registered with the node's kubelet. They run as processes of the
// machines rather than as pods, as a cloud's disk service is part of the
// machine and not of the cluster under test. Disks attach to one node at a
// time (attachRequired), so a volume moves only after a detach.
func (h *Harness) StartLoopDisks() {
	t := h.t
	bin := filepath.Join(h.Dir, "loopdisk")
	cmd := exec.Command("go", "build", "-o", bin, "./e2e/loopdisk/plugin")
	cmd.Dir = procs.Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the loop-disk plugin: %v\n%s", err, out)
	}
	h.Bin["loopdisk"] = bin
	h.loopDisks = filepath.Join(h.Dir, "loopdisks")
	if err := os.MkdirAll(h.loopDisks, 0o750); err != nil {
		t.Fatal(err)
	}
	// A loop device outlives the mount namespace that mounted it. This may
	// run before some nodes' teardown: a device still mounted there is then
	// detached by the kernel when its last mount goes.
	t.Cleanup(func() {
		imgs, _ := filepath.Glob(filepath.Join(h.loopDisks, "*.img"))
		for _, img := range imgs {
			out, _ := sh(context.Background(), "losetup", "-j", img)
			for _, line := range strings.Split(out, "\n") {
				if dev, _, ok := strings.Cut(line, ":"); ok {
					_, _ = sh(context.Background(), "losetup", "-d", dev)
				}
			}
		}
	})
	sock := filepath.Join(h.Dir, "loopdisk-controller.sock")
	in := []string{"--net=" + h.CPNetns}
	p := procs.Start(t, filepath.Join(h.Dir, "loopdisk-controller.log"), "nsenter", append(in, bin, "--controller",
		"--endpoint=unix://"+sock, "--dir="+h.loopDisks)...)
	p.WaitForSocket(t, sock, time.Minute)
	for _, sidecar := range []struct{ name, version string }{{"csi-provisioner", "v6.4.0"}, {"csi-attacher", "v4.13.0"}} {
		procs.Start(t, filepath.Join(h.Dir, "loopdisk-"+sidecar.name+".log"), "nsenter", append(in, h.kubeBinary(sidecar.name, sidecar.version),
			"--csi-address="+sock, "--kubeconfig="+h.Kubeconfig, "--leader-election=false", "--timeout=60s", "--v=2")...)
	}
	attach, podInfo := true, false
	_, err := h.Client.StorageV1().CSIDrivers().Create(h.ctx(), &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: loopdisk.Name},
		Spec: storagev1.CSIDriverSpec{AttachRequired: &attach, PodInfoOnMount: &podInfo}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	wffc, reclaim := storagev1.VolumeBindingWaitForFirstConsumer, corev1.PersistentVolumeReclaimDelete
	_, err = h.Client.StorageV1().StorageClasses().Create(h.ctx(), &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: LoopDiskClass},
		Provisioner: loopdisk.Name, VolumeBindingMode: &wffc, ReclaimPolicy: &reclaim}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, n := range h.Nodes {
		n.startLoopDisk()
	}
}

// startLoopDisk runs the loop-disk node plugin inside the node, where the
// kubelet finds it through its plugin watcher.
func (n *Node) startLoopDisk() {
	dir := "/var/lib/kubelet/plugins/" + loopdisk.Name
	n.mustExec("mkdir", "-p", dir)
	n.LoopDisk = n.Start("loopdisk", n.h.Bin["loopdisk"], "--endpoint=unix://"+dir+"/csi.sock", "--node-id="+n.Name,
		"--dir="+n.h.loopDisks, "--registration-dir=/var/lib/kubelet/plugins_registry")
}
