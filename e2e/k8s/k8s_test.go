//go:build zfs

package k8s

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestKubernetes runs the scenarios in order on one cluster: later ones
// use the claim the first one wrote.
func TestKubernetes(t *testing.T) {
	e := install(t)
	var sum string

	t.Run("data persists across pods", func(t *testing.T) {
		e.t = t
		e.pvc("data", storageClass, "100Mi", nil)
		start := time.Now()
		e.pod("writer", "data", "")
		e.waitRunning("writer", 3*time.Minute)
		t.Logf("PVC created to Pod Running: %s", time.Since(start).Round(time.Millisecond))
		sum = e.exec("writer", "dd if=/dev/urandom of=/data/blob bs=1M count=64 2>/dev/null && sync && sha256sum /data/blob | cut -d' ' -f1")
		e.deletePod("writer")
		e.pod("reader", "data", "")
		e.waitRunning("reader", 2*time.Minute)
		if got := e.exec("reader", "sha256sum /data/blob | cut -d' ' -f1"); got != sum {
			t.Fatalf("64 MiB written by one pod read back by the next: sha256 %s, want %s", got, sum)
		}
	})

	t.Run("snapshot restore and clone", func(t *testing.T) {
		e.t = t
		e.snapshot("snap1", "data")
		later := e.exec("reader", "dd if=/dev/urandom of=/data/later bs=1M count=1 2>/dev/null && sync && sha256sum /data/later | cut -d' ' -f1")

		e.pvc("restored", storageClass, "100Mi", &corev1.TypedLocalObjectReference{
			APIGroup: strPtr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "snap1"})
		e.pod("restorer", "restored", "")
		e.waitRunning("restorer", 2*time.Minute)
		if got := e.exec("restorer", "sha256sum /data/blob | cut -d' ' -f1"); got != sum {
			t.Errorf("restored from snapshot: blob sha256 %s, want %s", got, sum)
		}
		if got := e.exec("restorer", "ls /data"); strings.Contains(got, "later") {
			t.Errorf("restored from snapshot shows a write made after it: ls /data = %q", got)
		}

		e.pvc("cloned", storageClass, "100Mi", &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "data"})
		e.pod("cloner", "cloned", "")
		e.waitRunning("cloner", 2*time.Minute)
		got := e.exec("cloner", "sha256sum /data/blob /data/later | cut -d' ' -f1 | tr '\\n' ' '")
		if want := sum + " " + later; strings.TrimSpace(got) != want {
			t.Errorf("cloned from the claim: sha256 of blob and later = %q, want %q", got, want)
		}
		// A write to the clone does not reach its source.
		e.exec("cloner", "echo clone-only > /data/mine && sync")
		if got := e.exec("reader", "ls /data"); strings.Contains(got, "mine") {
			t.Errorf("a write to the clone shows in the source: ls /data = %q", got)
		}
		e.deletePod("restorer")
		e.deletePod("cloner")
	})

	t.Run("online expansion", func(t *testing.T) {
		e.t = t
		before := e.waitRunning("reader", time.Minute)
		dfKiB := func() int64 {
			// -P: one line per filesystem, however long its name.
			f := strings.Fields(e.exec("reader", "df -kP /data | tail -1"))
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("df: %v (%q)", err, f)
			}
			return n
		}
		was := dfKiB()
		patch := []byte(`{"spec":{"resources":{"requests":{"storage":"200Mi"}}}}`)
		if _, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Patch(e.ctx(), "data", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.eventually("claim data at 200Mi", 2*time.Minute, func() (bool, string) {
			c, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx(), "data", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			q := c.Status.Capacity[corev1.ResourceStorage]
			return q.Value() == 200<<20, fmt.Sprintf("capacity %s, conditions %+v; events %s", q.String(), c.Status.Conditions, e.events("data"))
		})
		e.eventually("df in the running pod shows the new size", time.Minute, func() (bool, string) {
			now := dfKiB()
			return now > 190<<10, fmt.Sprintf("df size %d KiB (was %d KiB)", now, was)
		})
		after := e.waitRunning("reader", time.Minute)
		if after.UID != before.UID || after.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("the pod restarted for the expansion: uid %s -> %s, restarts %d", before.UID, after.UID, after.Status.ContainerStatuses[0].RestartCount)
		}
		t.Logf("df size %d KiB -> %d KiB without a restart", was, dfKiB())
	})

	t.Run("delete waits for dependent snapshots", func(t *testing.T) {
		e.t = t
		e.pvc("plain", storageClass, "64Mi", nil)
		e.pvc("kept", storageClass, "64Mi", nil)
		e.pod("user", "plain", "")
		e.pod("user2", "kept", "")
		e.waitRunning("user", 2*time.Minute)
		e.waitRunning("user2", 2*time.Minute)
		plain, kept := e.volumeHandle("plain"), e.volumeHandle("kept")
		e.exec("user2", "echo keep > /data/f && sync")
		e.snapshot("keep-snap", "kept")
		e.deletePod("user")
		e.deletePod("user2")

		e.deletePVC("plain")
		if ds := e.datasets(); strings.Contains(ds, plain) {
			t.Errorf("claim without snapshots deleted, but its dot %s is still in the pool:\n%s", plain, ds)
		}
		e.deletePVC("kept")
		if ds := e.datasets(); !strings.Contains(ds, kept) {
			t.Errorf("claim deleted while a snapshot depends on it, but its dot %s is already gone:\n%s", kept, ds)
		}
		e.deleteSnapshot("keep-snap")
		e.eventually("dot "+kept+" removed with its last snapshot", time.Minute, func() (bool, string) {
			ds := e.datasets()
			return !strings.Contains(ds, kept), ds
		})
	})

	t.Run("node plugin restart under a running pod", func(t *testing.T) {
		e.t = t
		e.pod("ticker", "data", "i=0; while true; do echo $i >> /data/ticks; i=$((i+1)); sleep 0.2; done")
		e.waitRunning("ticker", 2*time.Minute)
		count := func() int {
			n, _ := strconv.Atoi(e.exec("ticker", "wc -l < /data/ticks"))
			return n
		}
		e.eventually("ticks written", 30*time.Second, func() (bool, string) { return count() > 0, "none yet" })

		pods, err := e.cs.CoreV1().Pods("dotmesh-system").List(e.ctx(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node"})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("node plugin pods: %v %d", err, len(pods.Items))
		}
		old := pods.Items[0]
		if err := e.cs.CoreV1().Pods("dotmesh-system").Delete(e.ctx(), old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.eventually("a new node plugin pod Ready", 3*time.Minute, func() (bool, string) {
			pods, err := e.cs.CoreV1().Pods("dotmesh-system").List(e.ctx(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node"})
			if err != nil {
				return false, err.Error()
			}
			for _, p := range pods.Items {
				if p.UID != old.UID && isReady(&p) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d pods", len(pods.Items))
		})
		e.waitDriverRegistered(e.h.Nodes[0].Name, time.Minute)
		before := count()
		e.eventually("the pod keeps writing after the restart", 30*time.Second, func() (bool, string) {
			n := count()
			return n > before+5, fmt.Sprintf("%d ticks, %d before", n, before)
		})
		if got := e.exec("reader", "sha256sum /data/blob | cut -d' ' -f1"); got != sum {
			t.Errorf("after the plugin restart the blob reads sha256 %s, want %s", got, sum)
		}
		// Unpublish and unstage still work: the pods go, and with them
		// every mount of the dot on the node (the kubelet unstages only
		// when no other mount of the staged filesystem is left).
		e.deletePod("ticker")
		e.deletePod("reader")
		handle := e.volumeHandle("data")
		e.eventually("no mount of "+handle+" left on the node", time.Minute, func() (bool, string) {
			mounts, err := e.h.Nodes[0].Exec(e.ctx(), "cat", "/proc/self/mountinfo")
			if err != nil {
				return false, err.Error()
			}
			for _, l := range strings.Split(mounts, "\n") {
				if strings.Contains(l, handle) {
					return false, l
				}
			}
			return true, ""
		})
	})

	t.Run("bad StorageClass parameters", func(t *testing.T) {
		e.t = t
		before := e.datasets()
		for param, params := range map[string]map[string]string{
			"colour":      {"colour": "blue"},
			"replicas":    {"replicas": "0"},
			"compression": {"compression": "snappy"},
		} {
			class := "bad-" + param
			e.storageClass(class, params, storagev1.VolumeBindingImmediate)
			e.pvc(class, class, "64Mi", nil)
			e.eventually("ProvisioningFailed naming "+param, 2*time.Minute, func() (bool, string) {
				ev := e.events(class)
				return strings.Contains(ev, "ProvisioningFailed") && strings.Contains(ev, param), ev
			})
			c, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx(), class, metav1.GetOptions{})
			if err != nil || c.Spec.VolumeName != "" || c.Status.Phase != corev1.ClaimPending {
				t.Errorf("claim on %s: %v, volume %q, phase %s; want Pending without a volume", class, err, c.Spec.VolumeName, c.Status.Phase)
			}
			e.deletePVC(class)
		}
		if after := e.datasets(); after != before {
			t.Errorf("refused claims changed the pool:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("kubectl get shows dots, pools and nodes", func(t *testing.T) {
		e.t = t
		handle := e.volumeHandle("data")
		node := e.h.Nodes[0].Name
		pools := e.kubectl("get", "dotpools")
		dots := e.kubectl("get", "dots")
		t.Logf("kubectl get dotpools:\n%s\nkubectl get dots:\n%s", pools, dots)
		var pool string
		for _, l := range strings.Split(pools, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] == node {
				pool = f[0]
			}
		}
		if pool == "" {
			t.Fatalf("no pool of %s in kubectl get dotpools", node)
		}
		for _, l := range strings.Split(dots, "\n") {
			if strings.HasPrefix(l, handle) {
				if !strings.Contains(l, pool) || !strings.Contains(l, node) {
					t.Errorf("kubectl get dots line for %s lacks pool %s or node %s: %q", handle, pool, node, l)
				}
				return
			}
		}
		t.Errorf("kubectl get dots does not list %s", handle)
	})
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func strPtr(s string) *string { return &s }
