//go:build zfs

package poolpods_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mesh"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/operator"
	"github.com/dotmesh-io/dotmesh-csi/pkg/poolpods"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

const ns = "dotmesh-system"

// kubeletMount plays the kubelet: the pool pod's PVC mounted at its CSI
// volume path under kubeletDir (a bind of disk).
func kubeletMount(t *testing.T, kubeletDir, uid, pv, disk string) {
	t.Helper()
	path := filepath.Join(kubeletDir, "pods", uid, "volumes", "kubernetes.io~csi", pv, "mount")
	if err := mountinfo.Bind(disk, path, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mountinfo.Unmount(path) })
}

func poolPod(name, pool, node, uid string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(uid),
			Labels: map[string]string{operator.LabelRole: operator.RolePool, operator.LabelPool: pool}},
		Spec: corev1.PodSpec{NodeName: node, Volumes: []corev1.Volume{{Name: "pool",
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pool}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func imported(name string) bool { return exec.Command("zpool", "list", name).Run() == nil }

// A pool pod's pool is imported from its backing mount and served; while a
// dot is staged the pool is not exported even though the pod is going;
// once unstaged it is exported, released and unbound, and the holder's
// marker appears; the next pool pod brings it back with the data; and a
// second node cannot import it while the first holds it.
func TestPoolFollowsItsPoolPod(t *testing.T) {
	zfstest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	kubelet, disk := filepath.Join(tmp, "kubelet"), filepath.Join(tmp, "disk")
	if err := os.MkdirAll(disk, 0o750); err != nil {
		t.Fatal(err)
	}
	pool := zfstest.UniqueName("pp")
	t.Cleanup(func() { zfstest.ForgetPool(t, pool) })
	kubeletMount(t, kubelet, "uid-1", "pv-1", disk)

	client := fake.NewSimpleClientset(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: pool, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}}, poolPod("pod-1", pool, "node-a", "uid-1"))
	view := cluster.NewMemory()
	watcher := func(node string, pools *zfsd.Set) *poolpods.Watcher {
		return poolpods.New(poolpods.Config{Client: client, Namespace: ns, Node: node, KubeletDir: kubelet,
			PoolsDir: filepath.Join(tmp, node, "pools"), MountDir: filepath.Join(tmp, node, "mnt"), Pools: pools,
			Fence: mesh.New(mesh.Config{View: view}),
			Open: func(ctx context.Context, cfg zfsd.Config) (*zfsd.Pool, error) {
				cfg.Size = 256 << 20
				return zfsd.Open(ctx, zfstest.Client(), cfg)
			}})
	}
	poolsA := zfsd.NewSet()
	a := watcher("node-a", poolsA)
	bind := filepath.Join(tmp, "node-a", "pools", pool)
	t.Cleanup(func() { _ = mountinfo.Unmount(bind) })

	if err := a.Sync(ctx); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	p, ok := poolsA.Get(pool)
	if !ok || !imported(pool) {
		t.Fatalf("pool %s not served (%v) or not imported (%v) after the pool pod runs", pool, ok, imported(pool))
	}
	if _, err := os.Stat(filepath.Join(disk, zfsd.PoolFile)); err != nil {
		t.Fatalf("the pool file is not on the backing volume: %v", err)
	}
	if rec, _ := view.GetPool(ctx, pool); rec.Node != "node-a" {
		t.Fatalf("view says pool %s is held by %q, want node-a", pool, rec.Node)
	}

	// Another node may not import the pool while node-a holds it.
	if err := mesh.New(mesh.Config{View: view}).ClaimPool(ctx, pool, "node-b"); !errors.Is(err, cluster.ErrHeld) {
		t.Fatalf("node-b claiming a held pool: got %v, want ErrHeld", err)
	}

	id := uuid.NewString()
	if _, err := p.CreateDot(ctx, zfsd.DotSpec{ID: id, Name: "pvc-x", Capacity: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(tmp, "staging")
	if err := p.StageDot(ctx, id, staging); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(staging, "data"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha(t, filepath.Join(staging, "data"))

	// The pool pod is going while the dot is staged: the pool stays.
	pod, err := client.CoreV1().Pods(ns).Get(ctx, "pod-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	pod.DeletionTimestamp = &now
	if _, err := client.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err == nil || !strings.Contains(err.Error(), "stays imported") {
		t.Fatalf("sync with a staged dot and a going pool pod: got %v, want the pool kept", err)
	}
	if _, ok := poolsA.Get(pool); !ok || !imported(pool) {
		t.Fatal("a pool with a staged dot was taken away")
	}
	if _, err := os.Stat(filepath.Join(disk, poolpods.ReleasedMarker)); err == nil {
		t.Fatal("released marker written while the pool is still imported")
	}

	if err := p.UnstageDot(ctx, id, staging); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatalf("sync after unstaging: %v", err)
	}
	if _, ok := poolsA.Get(pool); ok || imported(pool) {
		t.Fatalf("pool still served (%v) or imported (%v) after its pool pod went", ok, imported(pool))
	}
	if _, err := os.Stat(filepath.Join(disk, poolpods.ReleasedMarker)); err != nil {
		t.Fatalf("no released marker for the holder: %v", err)
	}
	if mounts, _ := mountinfo.ReadFile("/proc/self/mountinfo"); mountinfoHas(mounts, bind) {
		t.Fatal("bind of the backing folder left behind")
	}
	if rec, _ := view.GetPool(ctx, pool); rec.Node != "" {
		t.Fatalf("view still says node %q holds the exported pool", rec.Node)
	}

	// The replacement pool pod, now on node-b: released, so node-b may
	// import it at once, and the dot's data is there.
	if err := client.CoreV1().Pods(ns).Delete(ctx, "pod-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeletMount(t, kubelet, "uid-2", "pv-1", disk)
	if _, err := client.CoreV1().Pods(ns).Create(ctx, poolPod("pod-2", pool, "node-b", "uid-2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poolsB := zfsd.NewSet()
	if err := watcher("node-b", poolsB).Sync(ctx); err != nil {
		t.Fatalf("node-b importing the released pool: %v", err)
	}
	t.Cleanup(func() { _ = mountinfo.Unmount(filepath.Join(tmp, "node-b", "pools", pool)) })
	pb, ok := poolsB.Get(pool)
	if !ok {
		t.Fatal("node-b does not serve the pool")
	}
	t.Cleanup(func() { _ = pb.Close(context.Background()) })
	if _, err := os.Stat(filepath.Join(disk, poolpods.ReleasedMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale released marker not cleared on import: %v", err)
	}
	dir, err := pb.MountDot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha(t, filepath.Join(dir, "data")); got != want {
		t.Fatalf("data after the pool moved: sha256 %s, want %s", got, want)
	}
}

func mountinfoHas(mounts []mountinfo.Mount, path string) bool {
	_, ok := mountinfo.IsMountPoint(mounts, path)
	return ok
}
