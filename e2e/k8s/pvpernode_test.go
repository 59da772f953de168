//go:build zfs

package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dotmesh-io/dotmesh-csi/e2e/multinode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/operator"
)

const system = "dotmesh-system"

// TestPVPerNode runs the PV-per-node scenarios in order on one cluster
// whose cloud disks are loop disks (deploy/overlays/e2e-pv-per-node: an
// orphan grace of 45 s and a cap of three auto-created backing PVCs). Each
// step starts from where the last one left the cluster, as a real
// cluster's history would.
func TestPVPerNode(t *testing.T) {
	e := installOverlay(t, 3, "e2e-pv-per-node", func(h *multinode.Harness) { h.StartLoopDisks() })
	n := e.h.Nodes
	sums := map[string]string{} // claim -> sha256 of /data/blob

	step := func(name string, f func()) {
		start := time.Now()
		e.t = t
		f()
		t.Logf("step %q passed in %s", name, time.Since(start).Round(time.Second))
	}

	var original map[string]string // backing PVC -> node, after install
	step("install on 3 nodes: 3 backing PVCs, 3 pools, a dot works", func() {
		original = e.waitBacking("one backing PVC per node", func(b map[string]string) bool {
			return len(b) == 3 && distinct(b)
		})
		e.waitPoolsServed(original)
		e.pvc("data1", storageClass, "64Mi", nil)
		e.podOn("writer", "data1", n[1].Name)
		e.waitRunning("writer", 3*time.Minute)
		sums["data1"] = e.exec("writer", "dd if=/dev/urandom of=/data/blob bs=1M count=16 2>/dev/null && sync && sha256sum /data/blob | cut -d' ' -f1")
		e.deletePod("writer")
		e.podOn("reader", "data1", n[0].Name)
		e.waitRunning("reader", 3*time.Minute)
		e.checkSum("reader", "data1", sums)
	})

	step("pool pod and node plugin restart under a mounted dot", func() {
		e.deletePod("reader")
		e.podOn("writer", "data1", n[1].Name)
		e.waitRunning("writer", 3*time.Minute)
		pool := poolOf(original, n[1].Name)
		pod := e.poolPod(pool)
		e.killHolder(n[1], pod)
		e.eventually("pool pod "+pod.Name+" restarted", 2*time.Minute, func() (bool, string) {
			p, err := e.cs.CoreV1().Pods(system).Get(e.ctx(), pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			restarts := int32(0)
			for _, c := range p.Status.ContainerStatuses {
				restarts += c.RestartCount
			}
			return restarts > 0 && p.Status.Phase == corev1.PodRunning, fmt.Sprintf("phase %s, restarts %d", p.Status.Phase, restarts)
		})
		e.restartPluginOn(n[1].Name)
		e.checkSum("writer", "data1", sums)
		sums["data1"] = e.exec("writer", "dd if=/dev/urandom of=/data/blob bs=1M count=4 2>/dev/null && sync && sha256sum /data/blob | cut -d' ' -f1")
		if out, err := n[1].Exec(e.ctx(), "zpool", "status", "-x", pool); err != nil || !strings.Contains(out, "healthy") {
			t.Fatalf("pool %s after the restarts: %v\n%s", pool, err, out)
		}
		e.waitPoolsServed(original)
		// A snapshot is a commit on the dot's pool: it must survive the
		// node's replacement below.
		e.snapshot("data1-snap", "data1")
		e.deletePod("writer")
	})

	step("short absence: a node leaves and returns within the grace period", func() {
		gone := n[2]
		pool := poolOf(original, gone.Name)
		gone.StopKubelet()
		gone.DeleteNodeObject()
		e.eventually("backing PVC "+pool+" stamped orphaned", time.Minute, func() (bool, string) {
			c := e.backingPVC(pool)
			return c.Annotations[operator.AnnotationOrphanedAt] != "", fmt.Sprint(c.Annotations)
		})
		gone.StartKubelet()
		e.eventually("backing PVC "+pool+" no longer orphaned, still on "+gone.Name, time.Minute, func() (bool, string) {
			c := e.backingPVC(pool)
			return c.Annotations[operator.AnnotationOrphanedAt] == "" && c.Annotations[operator.AnnotationNode] == gone.Name, fmt.Sprint(c.Annotations)
		})
		if got := e.waitBacking("the same three backing PVCs", func(b map[string]string) bool { return len(b) == 3 }); !same(got, original) {
			t.Fatalf("backing PVCs after a short absence: %v, want %v (no adoption, no new PVC)", got, original)
		}
		e.waitPoolsServed(original)
		// A dot on this node's pool, for the orphan step.
		e.pvc("data2", storageClass, "64Mi", nil)
		e.podOn("writer2", "data2", gone.Name)
		e.waitRunning("writer2", 3*time.Minute)
		sums["data2"] = e.exec("writer2", "dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null && sync && sha256sum /data/blob | cut -d' ' -f1")
		e.deletePod("writer2")
	})

	var replacement *multinode.Node
	step("node replacement: the node's PVC is re-attached on the new node", func() {
		pool := poolOf(original, n[1].Name)
		n[1].Remove()
		replacement = e.h.AddNode()
		e.waitDriverRegistered(replacement.Name, 2*time.Minute)
		want := map[string]string{}
		for k, v := range original {
			want[k] = v
		}
		want[pool] = replacement.Name
		got := e.waitBacking(pool+" re-attached on "+replacement.Name, func(b map[string]string) bool { return same(b, want) })
		e.waitPoolsServed(got)
		e.podOn("reader", "data1", replacement.Name)
		e.waitRunning("reader", 4*time.Minute)
		e.checkSum("reader", "data1", sums)
		e.deletePod("reader")
		e.pvc("restored", storageClass, "64Mi", &corev1.TypedLocalObjectReference{APIGroup: strPtr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "data1-snap"})
		e.podOn("restore-reader", "restored", replacement.Name)
		e.waitRunning("restore-reader", 3*time.Minute)
		if e.exec("restore-reader", "test -s /data/blob && echo ok") != "ok" {
			t.Fatal("the claim restored from the snapshot taken before the node was replaced has no data")
		}
		e.deletePod("restore-reader")
	})

	var adopter string
	step("orphan: a node gone past the grace period; its PVC becomes another node's second pool", func() {
		pool := poolOf(original, n[2].Name)
		n[2].Remove()
		got := e.waitBacking(pool+" adopted", func(b map[string]string) bool {
			return b[pool] != n[2].Name && b[pool] != ""
		})
		adopter = got[pool]
		if adopter != n[0].Name && adopter != replacement.Name {
			t.Fatalf("pool %s adopted by %q, which is not a live node", pool, adopter)
		}
		e.waitPoolsServed(got)
		e.podOn("reader2", "data2", adopter)
		e.waitRunning("reader2", 4*time.Minute)
		e.checkSum("reader2", "data2", sums)
		e.deletePod("reader2")
	})

	step("rebalance: a new node takes one pool from the node with two", func() {
		joined := e.h.AddNode()
		e.waitDriverRegistered(joined.Name, 2*time.Minute)
		got := e.waitBacking("one pool moved to "+joined.Name, func(b map[string]string) bool {
			return len(b) == 3 && distinct(b) && poolOf(b, joined.Name) != ""
		})
		e.waitPoolsServed(got)
		moved := poolOf(got, joined.Name)
		logs := e.kubectl("-n", system, "logs", "-l", "app.kubernetes.io/component=node", "--tail=-1", "--prefix")
		if !strings.Contains(logs, `"pool exported and released for its pool pod to go" pool="`+moved+`" node="`+adopter+`"`) {
			t.Fatalf("no clean export of pool %s on %s before it moved", moved, adopter)
		}
		for _, claim := range []string{"data1", "data2"} {
			e.podOn("check-"+claim, claim, joined.Name)
			e.waitRunning("check-"+claim, 4*time.Minute)
			e.checkSum("check-"+claim, claim, sums)
			e.deletePod("check-" + claim)
		}
	})

	step("cap: a node past the cap of auto-created PVCs gets none, and an Event says why", func() {
		joined := e.h.AddNode()
		e.eventually("a BackingPVCCapReached Event for "+joined.Name, 2*time.Minute, func() (bool, string) {
			list, err := e.cs.CoreV1().Events("").List(e.ctx(), metav1.ListOptions{FieldSelector: "reason=" + operator.ReasonCapReached})
			if err != nil {
				return false, err.Error()
			}
			for _, ev := range list.Items {
				if strings.Contains(ev.Message, joined.Name) || ev.InvolvedObject.Name == joined.Name {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d such events", len(list.Items))
		})
		if got := e.waitBacking("still three backing PVCs", func(b map[string]string) bool { return len(b) == 3 }); poolOf(got, joined.Name) != "" {
			t.Fatalf("node %s past the cap got pool %s", joined.Name, poolOf(got, joined.Name))
		}
	})

	// Here, not in a cleanup: the nodes that joined during the test are
	// torn down before the cleanups registered at install run, and the
	// controller may be on one of them.
	step("every claim, snapshot and dot deletes after all the moves", func() {
		if !e.deleteWorkloads() {
			t.Fatal("claims or volumes left after deleting them (see above)")
		}
	})
}

// waitBacking waits until the backing PVCs (name -> assigned node) satisfy
// ok, and returns them.
func (e *env) waitBacking(what string, ok func(map[string]string) bool) map[string]string {
	e.t.Helper()
	var got map[string]string
	e.eventually(what, 3*time.Minute, func() (bool, string) {
		list, err := e.cs.CoreV1().PersistentVolumeClaims(system).List(e.ctx(), metav1.ListOptions{LabelSelector: operator.LabelRole + "=" + operator.RoleBacking})
		if err != nil {
			return false, err.Error()
		}
		got = map[string]string{}
		for _, c := range list.Items {
			got[c.Name] = c.Annotations[operator.AnnotationNode]
		}
		return ok(got), fmt.Sprint(got)
	})
	return got
}

func (e *env) backingPVC(name string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	c, err := e.cs.CoreV1().PersistentVolumeClaims(system).Get(e.ctx(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitPoolsServed waits until every pool (backing PVC) is served by its
// assigned node: its DotPool names that node and its heartbeat is fresh.
func (e *env) waitPoolsServed(want map[string]string) {
	e.t.Helper()
	view, err := cluster.NewKube(e.h.Rest)
	if err != nil {
		e.t.Fatal(err)
	}
	e.eventually("pools served by their nodes", 3*time.Minute, func() (bool, string) {
		pools, err := view.ListPools(e.ctx())
		if err != nil {
			return false, err.Error()
		}
		have := map[string]cluster.Pool{}
		for _, p := range pools {
			have[p.Name] = p
		}
		for pool, node := range want {
			p, ok := have[pool]
			if !ok || p.Node != node || time.Since(p.LastHeartbeat) > 10*time.Second {
				return false, fmt.Sprintf("pool %s: want node %s, view has %+v", pool, node, p)
			}
		}
		return true, ""
	})
}

func (e *env) poolPod(pool string) *corev1.Pod {
	e.t.Helper()
	list, err := e.cs.CoreV1().Pods(system).List(e.ctx(), metav1.ListOptions{LabelSelector: operator.LabelPool + "=" + pool})
	if err != nil || len(list.Items) != 1 {
		e.t.Fatalf("pool pods of %s: %v (%v)", pool, list, err)
	}
	return &list.Items[0]
}

// killHolder SIGKILLs the pool pod's process from the machine (its own
// PID 1 cannot be killed from inside), as a crash would end it.
func (e *env) killHolder(node *multinode.Node, pod *corev1.Pod) {
	e.t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cmd), "hold-pool") {
			continue
		}
		dir := filepath.Dir(p)
		cg, _ := os.ReadFile(filepath.Join(dir, "cgroup"))
		if !strings.Contains(string(cg), string(pod.UID)) && !strings.Contains(string(cg), strings.ReplaceAll(string(pod.UID), "-", "_")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if err := killPID(pid); err != nil {
			e.t.Fatal(err)
		}
		e.t.Logf("killed the holder of pool pod %s on %s (pid %d)", pod.Name, node.Name, pid)
		return
	}
	e.t.Fatalf("no hold-pool process of pod %s (uid %s) on %s", pod.Name, pod.UID, node.Name)
}

// restartPluginOn deletes the node plugin pod on node and waits for the
// DaemonSet's replacement to run.
func (e *env) restartPluginOn(node string) {
	e.t.Helper()
	list, err := e.cs.CoreV1().Pods(system).List(e.ctx(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node",
		FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(list.Items) != 1 {
		e.t.Fatalf("node plugin pods on %s: %v (%v)", node, list, err)
	}
	old := list.Items[0]
	if err := e.cs.CoreV1().Pods(system).Delete(e.ctx(), old.Name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("node plugin on "+node+" replaced and running", 2*time.Minute, func() (bool, string) {
		list, err := e.cs.CoreV1().Pods(system).List(e.ctx(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node",
			FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range list.Items {
			if p.UID != old.UID && p.Status.Phase == corev1.PodRunning {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods", len(list.Items))
	})
	e.waitDriverRegistered(node, 2*time.Minute)
}

func (e *env) checkSum(pod, claim string, sums map[string]string) {
	e.t.Helper()
	if got := e.exec(pod, "sha256sum /data/blob | cut -d' ' -f1"); got != sums[claim] {
		e.t.Fatalf("claim %s in pod %s reads sha256 %s, want %s", claim, pod, got, sums[claim])
	}
}

// poolOf is the pool assigned to node ("" for none).
func poolOf(backing map[string]string, node string) string {
	for pool, n := range backing {
		if n == node {
			return pool
		}
	}
	return ""
}

func distinct(backing map[string]string) bool {
	seen := map[string]bool{}
	for _, n := range backing {
		if n == "" || seen[n] {
			return false
		}
		seen[n] = true
	}
	return true
}

func same(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
