package cluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
)

// Kube is the view kept in the Kubernetes API as DotPool and Dot objects
// (api/v1alpha1). Their status is a subresource: the API server takes it
// only through UpdateStatus, and drops it from an object being created, so
// a new record is made in two writes and is not in the view until the
// second lands.
type Kube struct {
	dyn dynamic.Interface

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
	return newKube(dyn), nil
}

func newKube(dyn dynamic.Interface) *Kube {
	return &Kube{dyn: dyn, nodeOf: map[string]string{}}
}

func (k *Kube) pools() dynamic.ResourceInterface { return k.dyn.Resource(v1alpha1.DotPoolsResource) }
func (k *Kube) dots() dynamic.ResourceInterface  { return k.dyn.Resource(v1alpha1.DotsResource) }

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
	err := k.writePool(ctx, p.Name, func(cur Pool, _ bool) (Pool, error) {
		return p, claimable(cur, p, stale)
	})
	if err == nil {
		k.learnNode(p.Name, p.Node)
	}
	return err
}

func (k *Kube) ReleasePool(ctx context.Context, name, node string) error {
	return k.writePool(ctx, name, func(cur Pool, exists bool) (Pool, error) {
		p, ok := released(cur, node)
		if !exists || !ok {
			return cur, errSkip
		}
		return p, nil
	})
}

// errSkip, from a change or a conversion, leaves the record alone.
var errSkip = errors.New("nothing to do")

// writePool compare-and-swaps a pool's status on its resourceVersion, so
// two nodes claiming one pool cannot both win. A missing record is first
// created empty (a free pool), and the status written on the version the
// create returned; a create that finds the record made meanwhile reads it
// and decides again.
func (k *Kube) writePool(ctx context.Context, name string, change func(cur Pool, exists bool) (Pool, error)) error {
	for range 5 {
		cur := Pool{Name: name}
		obj, err := k.pools().Get(ctx, name, metav1.GetOptions{})
		exists := err == nil
		if exists {
			if cur, err = poolFrom(obj); err != nil {
				return err
			}
		} else if !apierrors.IsNotFound(err) {
			return wrapKube("pool", name, err)
		}
		next, err := change(cur, exists)
		if errors.Is(err, errSkip) {
			return nil
		}
		if err != nil {
			return err
		}
		if !exists {
			empty, err := poolObject(Pool{Name: name})
			if err != nil {
				return err
			}
			obj, err = k.pools().Create(ctx, empty, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return wrapKube("pool", name, err)
			}
		}
		out, err := poolObject(next)
		if err != nil {
			return err
		}
		out.SetResourceVersion(obj.GetResourceVersion())
		_, err = k.pools().UpdateStatus(ctx, out, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return wrapKube("pool", name, err)
		}
	}
	return fmt.Errorf("pool %s: %w", name, ErrConflict)
}

func (k *Kube) ListPools(ctx context.Context) ([]Pool, error) {
	out, err := list(ctx, k.pools(), "pools", poolFrom)
	for _, p := range out {
		k.learnNode(p.Name, p.Node)
	}
	return out, err
}

func (k *Kube) GetPool(ctx context.Context, name string) (Pool, error) {
	obj, err := k.pools().Get(ctx, name, metav1.GetOptions{})
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
	return deleteObject(ctx, k.pools(), "pool", name)
}

// CreateDot makes the record (the spec), then writes its status. A record
// found without a status is a create that stopped between the two (this
// one's, retried, or another's that died): it is not in the view, so this
// create completes it, and a concurrent one that completes it first wins.
func (k *Kube) CreateDot(ctx context.Context, d Dot) (Dot, error) {
	d.Version = ""
	obj, err := dotObject(d, k.masterNode(ctx, d.Master))
	if err != nil {
		return Dot{}, err
	}
	made, err := k.dots().Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		made, err = k.dots().Get(ctx, d.ID, metav1.GetOptions{})
		if err == nil && hasStatus(made) {
			return Dot{}, fmt.Errorf("dot %s: %w", d.ID, ErrExists)
		}
	}
	if err != nil {
		return Dot{}, wrapKube("dot", d.ID, err)
	}
	out, err := k.writeDot(ctx, obj, made.GetResourceVersion())
	if errors.Is(err, ErrConflict) {
		return Dot{}, fmt.Errorf("dot %s: created concurrently: %w", d.ID, ErrExists)
	}
	return out, err
}

// GetDot reads a dot's record; one whose status was never written is not
// in the view yet.
func (k *Kube) GetDot(ctx context.Context, id string) (Dot, error) {
	obj, err := k.dots().Get(ctx, id, metav1.GetOptions{})
	if err == nil && !hasStatus(obj) {
		return Dot{}, fmt.Errorf("dot %s: being created: %w", id, ErrNotFound)
	}
	if err != nil {
		return Dot{}, wrapKube("dot", id, err)
	}
	return dotFrom(obj)
}

func (k *Kube) ListDots(ctx context.Context) ([]Dot, error) {
	return list(ctx, k.dots(), "dots", func(obj *unstructured.Unstructured) (Dot, error) {
		if !hasStatus(obj) {
			return Dot{}, errSkip
		}
		return dotFrom(obj)
	})
}

func (k *Kube) UpdateDot(ctx context.Context, d Dot) (Dot, error) {
	if d.Version == "" {
		return Dot{}, fmt.Errorf("dot %s: update without a version: %w", d.ID, ErrConflict)
	}
	obj, err := dotObject(d, k.masterNode(ctx, d.Master))
	if err != nil {
		return Dot{}, err
	}
	return k.writeDot(ctx, obj, d.Version)
}

// writeDot writes obj's status, then its spec if that differs from the
// record's, each a compare-and-swap: the first on version, the second on
// the version the first left. The API server takes a status and a spec
// only in separate writes; the view's callers change one or the other (a
// resize changes the capacity alone), so one write is the rule. Should the
// second lose its compare-and-swap, the status stays written and
// ErrConflict has the caller re-read and apply its change again.
func (k *Kube) writeDot(ctx context.Context, obj *unstructured.Unstructured, version string) (Dot, error) {
	obj.SetResourceVersion(version)
	out, err := k.dots().UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	if err == nil && !reflect.DeepEqual(out.Object["spec"], obj.Object["spec"]) {
		obj.SetResourceVersion(out.GetResourceVersion())
		out, err = k.dots().Update(ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		return Dot{}, wrapKube("dot", obj.GetName(), err)
	}
	return dotFrom(out)
}

func (k *Kube) DeleteDot(ctx context.Context, id string) error {
	return deleteObject(ctx, k.dots(), "dot", id)
}

// list reads every object of res, in name order (the API server's), each
// converted by from, which answers errSkip to leave one out.
func list[T any](ctx context.Context, res dynamic.ResourceInterface, kind string, from func(*unstructured.Unstructured) (T, error)) ([]T, error) {
	objs, err := res.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, wrapKube(kind, "", err)
	}
	out := make([]T, 0, len(objs.Items))
	for i := range objs.Items {
		v, err := from(&objs.Items[i])
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// deleteObject deletes a record; one already gone is not an error.
func deleteObject(ctx context.Context, res dynamic.ResourceInterface, kind, name string) error {
	err := res.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return wrapKube(kind, name, err)
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
