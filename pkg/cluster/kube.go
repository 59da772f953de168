package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/deploy"
)

var (
	poolGVR = schema.GroupVersionResource{Group: "dotmesh.io", Version: "v1alpha1", Resource: "dotpools"}
	dotGVR  = schema.GroupVersionResource{Group: "dotmesh.io", Version: "v1alpha1", Resource: "dots"}
	crdGVR  = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// Kube is the view kept in the Kubernetes API as DotPool and Dot objects.
type Kube struct {
	dyn  dynamic.Interface
	core kubernetes.Interface

	// nodeOf caches each pool's node, learnt from pool records as they pass
	// by, so a Dot's record can name its master's node for `kubectl get
	// dots` without a read per write.
	mu     sync.Mutex
	nodeOf map[string]string
}

// NewKube returns a view over the API server in cfg.
func NewKube(cfg *rest.Config) (*Kube, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster view: %w", err)
	}
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster view: %w", err)
	}
	return &Kube{dyn: dyn, core: core, nodeOf: map[string]string{}}, nil
}

// EnsureCRDs creates the project's CRDs when missing and waits until the API
// serves them.
func EnsureCRDs(ctx context.Context, cfg *rest.Config) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	files, err := fs.Glob(deploy.CRDs, "base/crds/*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		raw, err := deploy.CRDs.ReadFile(f)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		_, err = dyn.Resource(crdGVR).Create(ctx, obj, metav1.CreateOptions{})
		switch {
		case err == nil, apierrors.IsAlreadyExists(err):
		case apierrors.IsForbidden(err):
			// Installed from deploy/, the controller has no rights on CRDs
			// (least privilege); the wait below tells whether they are there.
			klog.V(2).InfoS("not allowed to create CRD; expecting it installed", "crd", obj.GetName())
		default:
			return fmt.Errorf("creating CRD %s: %w", obj.GetName(), err)
		}
	}
	for _, gvr := range []schema.GroupVersionResource{poolGVR, dotGVR} {
		for {
			_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not served: %w", gvr.Resource, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// Wire forms: the JSON the CRDs hold.
type poolStatus struct {
	Node          string    `json:"node,omitempty"`
	Address       string    `json:"address,omitempty"`
	Size          int64     `json:"size"`
	Available     int64     `json:"available"`
	Zvols         bool      `json:"zvols"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
}

type dotSpec struct {
	Name           string `json:"name"`
	Capacity       int64  `json:"capacity"`
	CommitInterval string `json:"commitInterval,omitempty"`
}

type replicaWire struct {
	Pool      string    `json:"pool"`
	Commit    string    `json:"commit,omitempty"`
	Seq       int64     `json:"seq"`
	Updated   time.Time `json:"updated"`
	LastBytes int64     `json:"lastBytes"`
}

type lossWire struct {
	CommitsLost            int64     `json:"commitsLost"`
	LastReplicatedCommit   string    `json:"lastReplicatedCommit,omitempty"`
	LastReplicatedCommitAt time.Time `json:"lastReplicatedCommitAt"`
	At                     time.Time `json:"at"`
	FromPool               string    `json:"fromPool"`
	ToPool                 string    `json:"toPool"`
}

type dotStatus struct {
	Master       string        `json:"master"`
	MasterNode   string        `json:"masterNode,omitempty"` // display only; see Kube.nodeOf
	NewestCommit string        `json:"newestCommit,omitempty"`
	Seq          int64         `json:"seq"`
	Replicas     []replicaWire `json:"replicas"`
	Loss         *lossWire     `json:"loss,omitempty"`
	Moving       string        `json:"moving,omitempty"`
	Deleted      bool          `json:"deleted,omitempty"`
	LastCommitAt *time.Time    `json:"lastCommitAt,omitempty"`
	MovingSince  *time.Time    `json:"movingSince,omitempty"`
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	return m, json.Unmarshal(b, &m)
}

func fromField(obj *unstructured.Unstructured, field string, v any) error {
	m, ok := obj.Object[field]
	if !ok {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func poolObject(p Pool) (*unstructured.Unstructured, error) {
	st, err := toMap(poolStatus{Node: p.Node, Address: p.Address, Size: p.Size, Available: p.Available, Zvols: p.Zvols, LastHeartbeat: p.LastHeartbeat.UTC()})
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "dotmesh.io/v1alpha1", "kind": "DotPool", "status": st}}
	obj.SetName(p.Name)
	return obj, nil
}

func poolFrom(obj *unstructured.Unstructured) (Pool, error) {
	var st poolStatus
	if err := fromField(obj, "status", &st); err != nil {
		return Pool{}, fmt.Errorf("DotPool %s: %w", obj.GetName(), err)
	}
	return Pool{Name: obj.GetName(), Node: st.Node, Address: st.Address, Size: st.Size, Available: st.Available, Zvols: st.Zvols, LastHeartbeat: st.LastHeartbeat}, nil
}

func dotObject(d Dot, masterNode string) (*unstructured.Unstructured, error) {
	ds := dotSpec{Name: d.Name, Capacity: d.Capacity}
	if d.CommitInterval > 0 {
		ds.CommitInterval = d.CommitInterval.String()
	}
	spec, err := toMap(ds)
	if err != nil {
		return nil, err
	}
	st := dotStatus{Master: d.Master, MasterNode: masterNode, NewestCommit: d.NewestCommit, Seq: d.Seq, Replicas: []replicaWire{}, Moving: d.Moving, Deleted: d.Deleted}
	if !d.LastCommitAt.IsZero() {
		t := d.LastCommitAt.UTC()
		st.LastCommitAt = &t
	}
	if d.Moving != "" {
		t := d.MovingSince.UTC()
		st.MovingSince = &t
	}
	for _, r := range d.Replicas {
		st.Replicas = append(st.Replicas, replicaWire{Pool: r.Pool, Commit: r.Commit, Seq: r.Seq, Updated: r.Updated.UTC(), LastBytes: r.LastBytes})
	}
	if l := d.Loss; l != nil {
		st.Loss = &lossWire{CommitsLost: l.CommitsLost, LastReplicatedCommit: l.LastReplicatedCommit,
			LastReplicatedCommitAt: l.LastReplicatedCommitAt.UTC(), At: l.At.UTC(), FromPool: l.FromPool, ToPool: l.ToPool}
	}
	stm, err := toMap(st)
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "dotmesh.io/v1alpha1", "kind": "Dot", "spec": spec, "status": stm}}
	obj.SetName(d.ID)
	obj.SetResourceVersion(d.Version)
	return obj, nil
}

func dotFrom(obj *unstructured.Unstructured) (Dot, error) {
	var spec dotSpec
	var st dotStatus
	if err := fromField(obj, "spec", &spec); err != nil {
		return Dot{}, fmt.Errorf("Dot %s: %w", obj.GetName(), err)
	}
	if err := fromField(obj, "status", &st); err != nil {
		return Dot{}, fmt.Errorf("Dot %s: %w", obj.GetName(), err)
	}
	d := Dot{ID: obj.GetName(), Name: spec.Name, Capacity: spec.Capacity, Master: st.Master, NewestCommit: st.NewestCommit,
		Seq: st.Seq, Version: obj.GetResourceVersion(), Moving: st.Moving, Deleted: st.Deleted}
	if st.MovingSince != nil {
		d.MovingSince = *st.MovingSince
	}
	if st.LastCommitAt != nil {
		d.LastCommitAt = *st.LastCommitAt
	}
	if spec.CommitInterval != "" {
		d.CommitInterval, _ = time.ParseDuration(spec.CommitInterval)
	}
	for _, r := range st.Replicas {
		d.Replicas = append(d.Replicas, Replica(r))
	}
	if l := st.Loss; l != nil {
		d.Loss = &Loss{CommitsLost: l.CommitsLost, LastReplicatedCommit: l.LastReplicatedCommit,
			LastReplicatedCommitAt: l.LastReplicatedCommitAt, At: l.At, FromPool: l.FromPool, ToPool: l.ToPool}
	}
	return d, nil
}

func (k *Kube) learnNode(pool, node string) {
	if node == "" {
		return
	}
	k.mu.Lock()
	k.nodeOf[pool] = node
	k.mu.Unlock()
}

// masterNode is the node of pool, from the cache or else read once.
func (k *Kube) masterNode(ctx context.Context, pool string) string {
	if pool == "" {
		return ""
	}
	k.mu.Lock()
	node, ok := k.nodeOf[pool]
	k.mu.Unlock()
	if ok {
		return node
	}
	if p, err := k.GetPool(ctx, pool); err == nil {
		return p.Node
	}
	return ""
}

func (k *Kube) PutPool(ctx context.Context, p Pool, stale time.Duration) error {
	return k.writePool(ctx, p.Name, func(cur Pool, exists bool) (Pool, error) {
		if exists {
			if err := claimable(cur, p, stale); err != nil {
				return cur, err
			}
		}
		k.learnNode(p.Name, p.Node)
		return p, nil
	})
}

func (k *Kube) ReleasePool(ctx context.Context, name, node string) error {
	return k.writePool(ctx, name, func(cur Pool, exists bool) (Pool, error) {
		p, ok := released(cur, node)
		if !exists || !ok {
			return cur, errSkipWrite
		}
		return p, nil
	})
}

var errSkipWrite = errors.New("nothing to write")

// writePool compare-and-swaps a pool's record on its resourceVersion, so
// two nodes claiming one pool cannot both win.
func (k *Kube) writePool(ctx context.Context, name string, change func(cur Pool, exists bool) (Pool, error)) error {
	res := k.dyn.Resource(poolGVR)
	for range 5 {
		var cur Pool
		obj, err := res.Get(ctx, name, metav1.GetOptions{})
		exists := err == nil
		if exists {
			if cur, err = poolFrom(obj); err != nil {
				return err
			}
		} else if !apierrors.IsNotFound(err) {
			return wrapKube("pool", name, err)
		}
		next, err := change(cur, exists)
		if errors.Is(err, errSkipWrite) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err := poolObject(next)
		if err != nil {
			return err
		}
		if exists {
			out.SetResourceVersion(obj.GetResourceVersion())
			_, err = res.Update(ctx, out, metav1.UpdateOptions{})
		} else {
			_, err = res.Create(ctx, out, metav1.CreateOptions{})
		}
		if err == nil || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			return wrapKube("pool", name, err)
		}
	}
	return fmt.Errorf("pool %s: %w", name, ErrConflict)
}

func (k *Kube) ListPools(ctx context.Context) ([]Pool, error) {
	list, err := k.dyn.Resource(poolGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, wrapKube("pools", "", err)
	}
	out := make([]Pool, 0, len(list.Items))
	for i := range list.Items {
		p, err := poolFrom(&list.Items[i])
		if err != nil {
			return nil, err
		}
		k.learnNode(p.Name, p.Node)
		out = append(out, p)
	}
	return out, nil
}

func (k *Kube) GetPool(ctx context.Context, name string) (Pool, error) {
	obj, err := k.dyn.Resource(poolGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return Pool{}, wrapKube("pool", name, err)
	}
	p, err := poolFrom(obj)
	if err == nil {
		k.learnNode(p.Name, p.Node)
	}
	return p, err
}

func (k *Kube) DeletePool(ctx context.Context, name string) error {
	err := k.dyn.Resource(poolGVR).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return wrapKube("pool", name, err)
}

func (k *Kube) CreateDot(ctx context.Context, d Dot) (Dot, error) {
	d.Version = ""
	obj, err := dotObject(d, k.masterNode(ctx, d.Master))
	if err != nil {
		return Dot{}, err
	}
	out, err := k.dyn.Resource(dotGVR).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return Dot{}, wrapKube("dot", d.ID, err)
	}
	return dotFrom(out)
}

func (k *Kube) GetDot(ctx context.Context, id string) (Dot, error) {
	obj, err := k.dyn.Resource(dotGVR).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		return Dot{}, wrapKube("dot", id, err)
	}
	return dotFrom(obj)
}

func (k *Kube) ListDots(ctx context.Context) ([]Dot, error) {
	list, err := k.dyn.Resource(dotGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, wrapKube("dots", "", err)
	}
	out := make([]Dot, 0, len(list.Items))
	for i := range list.Items {
		d, err := dotFrom(&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (k *Kube) UpdateDot(ctx context.Context, d Dot) (Dot, error) {
	if d.Version == "" {
		return Dot{}, fmt.Errorf("dot %s: update without a version", d.ID)
	}
	obj, err := dotObject(d, k.masterNode(ctx, d.Master))
	if err != nil {
		return Dot{}, err
	}
	out, err := k.dyn.Resource(dotGVR).Update(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		return Dot{}, wrapKube("dot", d.ID, err)
	}
	return dotFrom(out)
}

func (k *Kube) DeleteDot(ctx context.Context, id string) error {
	err := k.dyn.Resource(dotGVR).Delete(ctx, id, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return wrapKube("dot", id, err)
}

// Event records a Kubernetes Event about a dot. Dots are cluster-scoped,
// and the API keeps events of cluster-scoped objects in "default". Failing
// to record one is logged, never fatal: the loss is also in the Dot's status.
func (k *Kube) Event(ctx context.Context, dotID, reason, message string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "dot-" + dotID[:8] + "-", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{APIVersion: "dotmesh.io/v1alpha1", Kind: "Dot", Name: dotID},
		Reason:         reason, Message: message, Type: corev1.EventTypeWarning,
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		Source: corev1.EventSource{Component: "dotmesh-csi"},
	}
	if _, err := k.core.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		klog.ErrorS(err, "recording event", "dot", dotID, "reason", reason)
	}
	klog.InfoS("event", "dot", dotID, "reason", reason, "message", message)
}

func wrapKube(kind, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s %s: %w", kind, name, ErrNotFound)
	case apierrors.IsConflict(err):
		return fmt.Errorf("%s %s: %w", kind, name, ErrConflict)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%s %s: %w", kind, name, ErrExists)
	}
	return fmt.Errorf("%s %s: %w", kind, name, err)
}
