//go:build zfs

package k8s

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDotFollowsItsPod is the seed's "dots follow containers" on a real
// three-node Kubernetes: a pod writes on node0, is deleted, and a pod on
// node1 with the same claim reads the data there, the dot's master now
// node1's pool.
func TestDotFollowsItsPod(t *testing.T) {
	e := installNodes(t, 3)
	e.pvc("roamer", storageClass, "128Mi", nil)
	e.podOn("first", "roamer", e.h.Nodes[0].Name)
	e.waitRunning("first", 3*time.Minute)
	handle := e.volumeHandle("roamer")
	sum := e.exec("first", "dd if=/dev/urandom of=/data/blob bs=1M count=64 2>/dev/null && sync && sha256sum /data/blob | cut -d' ' -f1")
	pv, err := e.cs.CoreV1().PersistentVolumes().List(e.ctx(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range pv.Items {
		if v.Spec.CSI != nil && v.Spec.CSI.VolumeHandle == handle && v.Spec.NodeAffinity != nil {
			t.Fatalf("the PV of a dot is pinned by node affinity %v; its pod could never move", v.Spec.NodeAffinity)
		}
	}
	e.deletePod("first")

	start := time.Now()
	e.podOn("second", "roamer", e.h.Nodes[1].Name)
	e.waitRunning("second", 3*time.Minute)
	t.Logf("pod on another node Running %s after it was created (64 MiB dot handed over)", time.Since(start).Round(time.Millisecond))
	if got := e.exec("second", "sha256sum /data/blob | cut -d' ' -f1"); got != sum {
		t.Fatalf("on %s the blob reads sha256 %s, want %s", e.h.Nodes[1].Name, got, sum)
	}
	dots := e.kubectl("get", "dots")
	for _, l := range strings.Split(dots, "\n") {
		if strings.HasPrefix(l, handle) && !strings.Contains(l, e.h.Nodes[1].Name) {
			t.Errorf("after the move the dot's master is not on %s:\n%s", e.h.Nodes[1].Name, dots)
		}
	}
	e.deletePod("second")
	e.deletePVC("roamer")
}

// podOn is pod, placed on node by the scheduler (a nodeSelector; setting
// nodeName would skip the scheduler, and WaitForFirstConsumer waits for it).
func (e *env) podOn(name, claim, node string) *corev1.Pod {
	e.t.Helper()
	p := e.podSpec(name, claim, "")
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	out, err := e.cs.CoreV1().Pods(e.ns).Create(e.ctx(), p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}
