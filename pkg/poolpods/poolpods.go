// Package poolpods is the node plugin's side of PV-per-node mode. The
// operator runs one pool pod per backing PVC; the kubelet mounts the PVC
// into it on this node. This package finds those pods, binds each pod's
// backing mount at a path that is the same in the plugin's container and
// on the host, imports the pool from there, and serves it. When a pool pod
// is being removed it exports the pool first, so the backing volume is
// never detached under an imported pool (Dotmesh issues #463 and #547).
package poolpods

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/operator"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// ReleasedMarker is written into the backing folder once the pool is
// exported; the pool pod's holder (`dotmesh-node hold-pool`) exits when it
// appears. The pods' labels are the operator's (pkg/operator).
const ReleasedMarker = "dotmesh_released"

// Fence keeps a pool imported on one node at a time, through the cluster
// view (mesh.Store implements it).
type Fence interface {
	ClaimPool(ctx context.Context, name, node string) error
	ReleasePool(ctx context.Context, name, node string) error
}

// Opener imports (or creates) a pool; zfsd.Open in production.
type Opener func(ctx context.Context, cfg zfsd.Config) (*zfsd.Pool, error)

// Config wires a Watcher.
type Config struct {
	Client    kubernetes.Interface
	Namespace string // where the operator runs pool pods
	Node      string
	// KubeletDir is the kubelet's root folder, mounted at the same path in
	// this container as on the host.
	KubeletDir string
	// PoolsDir holds one bind of each pool's backing folder, at the same
	// path in this container and on the host (a Bidirectional mount), so
	// `zpool import -d` sees the pool file on both sides.
	PoolsDir string
	// MountDir is where each pool mounts its dots, <MountDir>/<pool>.
	MountDir string
	Pools    *zfsd.Set
	Fence    Fence
	Open     Opener
	Interval time.Duration
}

// Watcher keeps Pools in step with the pool pods on its node.
type Watcher struct {
	cfg Config
}

// New returns a Watcher.
func New(cfg Config) *Watcher {
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	return &Watcher{cfg: cfg}
}

// Run syncs until ctx ends. It leaves pools imported when it stops: the
// plugin restarting must not take dots away from running pods.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if err := w.Sync(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "syncing pool pods", "node", w.cfg.Node)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync imports the pool of every running pool pod on this node and
// exports the pool of every pool pod that is going or gone.
func (w *Watcher) Sync(ctx context.Context) error {
	pods, err := w.cfg.Client.CoreV1().Pods(w.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{operator.LabelRole: operator.RolePool}).String(),
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", w.cfg.Node).String(),
	})
	if err != nil {
		return fmt.Errorf("listing pool pods on node %s: %w", w.cfg.Node, err)
	}
	want := map[string]*corev1.Pod{}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if name := pod.Labels[operator.LabelPool]; name != "" && pod.DeletionTimestamp == nil && pod.Status.Phase == corev1.PodRunning {
			want[name] = pod
		}
	}
	var errs []error
	for name, pod := range want {
		if _, ok := w.cfg.Pools.Get(name); ok {
			continue
		}
		if err := w.attach(ctx, name, pod); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range w.cfg.Pools.List() {
		if _, ok := want[p.Name()]; !ok {
			if err := w.detach(ctx, p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// attach fences the pool for this node, binds the pod's backing mount at
// PoolsDir/<pool>, and imports the pool from there.
func (w *Watcher) attach(ctx context.Context, name string, pod *corev1.Pod) error {
	src, err := w.backingPath(ctx, pod)
	if err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	if err := w.cfg.Fence.ClaimPool(ctx, name, w.cfg.Node); err != nil {
		return fmt.Errorf("pool %s: not importing on node %s: %w", name, w.cfg.Node, err)
	}
	dir := filepath.Join(w.cfg.PoolsDir, name)
	if err := mountinfo.Bind(src, dir, false); errors.Is(err, mountinfo.ErrMountedElsewhere) {
		// A bind left by an unclean end (the plugin killed with the node,
		// say) of a backing mount that is no longer this one.
		klog.InfoS("replacing a stale bind of the backing folder", "pool", name, "path", dir, "backing", src)
		if err := mountinfo.Unmount(dir); err != nil {
			return fmt.Errorf("pool %s: removing stale bind: %w", name, err)
		}
		err = mountinfo.Bind(src, dir, false)
		if err != nil {
			return fmt.Errorf("pool %s: %w", name, err)
		}
	} else if err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	if err := os.Remove(filepath.Join(dir, ReleasedMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pool %s: clearing the released marker: %w", name, err)
	}
	p, err := w.cfg.Open(ctx, zfsd.Config{Name: name, Dir: dir, MountRoot: filepath.Join(w.cfg.MountDir, name), Node: w.cfg.Node,
		ForceImport: true})
	if err != nil {
		return err
	}
	w.cfg.Pools.Add(p)
	klog.InfoS("serving pool from its pool pod's backing volume", "pool", name, "pod", pod.Name, "backing", src, "bind", dir)
	return nil
}

// detach exports a pool whose pool pod is going, releases it in the view,
// tells the pod's holder it may exit, and removes the bind. A pool with a
// dot staged for a pod stays imported and served: the holder keeps
// waiting, and the export is retried on the next pass.
func (w *Watcher) detach(ctx context.Context, p *zfsd.Pool) error {
	name := p.Name()
	w.cfg.Pools.Remove(name)
	if err := p.Close(ctx); err != nil {
		w.cfg.Pools.Add(p)
		return fmt.Errorf("pool %s: its pool pod is going, but the pool stays imported: %w", name, err)
	}
	if err := w.cfg.Fence.ReleasePool(ctx, name, w.cfg.Node); err != nil {
		klog.ErrorS(err, "recording the export in the cluster view; other nodes wait for the heartbeat to go stale", "pool", name)
	}
	dir := filepath.Join(w.cfg.PoolsDir, name)
	if err := os.WriteFile(filepath.Join(dir, ReleasedMarker), []byte(w.cfg.Node+"\n"), 0o644); err != nil {
		klog.ErrorS(err, "writing the released marker; the pool pod waits for its grace period", "pool", name)
	}
	if err := mountinfo.Unmount(dir); err != nil {
		return fmt.Errorf("pool %s: exported, but the bind stays: %w", name, err)
	}
	klog.InfoS("pool exported and released for its pool pod to go", "pool", name, "node", w.cfg.Node)
	return nil
}

// backingPath is where the kubelet mounted the pool pod's PVC, under the
// kubelet folder: pods/<uid>/volumes/<plugin>/<pv>[/mount].
func (w *Watcher) backingPath(ctx context.Context, pod *corev1.Pod) (string, error) {
	var claim string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
			break
		}
	}
	if claim == "" {
		return "", fmt.Errorf("pool pod %s has no PVC volume", pod.Name)
	}
	pvc, err := w.cfg.Client.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("backing PVC %s: %w", claim, err)
	}
	pv := pvc.Spec.VolumeName
	if pv == "" {
		return "", fmt.Errorf("backing PVC %s is not bound", claim)
	}
	mounts, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	// CSI volumes mount at .../<pv>/mount, in-tree ones at .../<pv>.
	for _, pattern := range []string{"*/" + pv + "/mount", "*/" + pv} {
		found, _ := filepath.Glob(filepath.Join(w.cfg.KubeletDir, "pods", string(pod.UID), "volumes", pattern))
		for _, f := range found {
			if _, ok := mountinfo.IsMountPoint(mounts, f); ok {
				return f, nil
			}
		}
	}
	return "", fmt.Errorf("volume %s of pool pod %s is not mounted under %s yet", pv, pod.Name, w.cfg.KubeletDir)
}
