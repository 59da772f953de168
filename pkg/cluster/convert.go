package cluster

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
)

// The view's records are plain Go (Pool, Dot); Kube keeps them as the
// API's DotPool and Dot objects (api/v1alpha1), which the dynamic client
// carries unstructured. This file is the one place that maps between them.

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: kind}
}

func toUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// hasStatus says whether the record's status was ever written: the API
// server drops the status of an object being created, so each record is
// made in two writes and has none in between.
func hasStatus(u *unstructured.Unstructured) bool {
	_, ok := u.Object["status"]
	return ok
}

func poolObject(p Pool) (*unstructured.Unstructured, error) {
	return toUnstructured(&v1alpha1.DotPool{
		TypeMeta:   typeMeta("DotPool"),
		ObjectMeta: metav1.ObjectMeta{Name: p.Name},
		Status: v1alpha1.DotPoolStatus{Node: p.Node, Address: p.Address, Size: p.Size, Available: p.Available,
			Zvols: p.Zvols, LastHeartbeat: v1alpha1.NewTimestamp(p.LastHeartbeat)},
	})
}

// poolFrom reads a DotPool; one whose status was never written is a free
// pool, as one released is.
func poolFrom(u *unstructured.Unstructured) (Pool, error) {
	var o v1alpha1.DotPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o); err != nil {
		return Pool{}, fmt.Errorf("DotPool %s: %w", u.GetName(), err)
	}
	s := o.Status
	return Pool{Name: o.Name, Node: s.Node, Address: s.Address, Size: s.Size, Available: s.Available,
		Zvols: s.Zvols, LastHeartbeat: v1alpha1.TimeOf(s.LastHeartbeat)}, nil
}

// dotObject is d as a Dot object; masterNode only shows in `kubectl get
// dots`.
func dotObject(d Dot, masterNode string) (*unstructured.Unstructured, error) {
	o := &v1alpha1.Dot{
		TypeMeta:   typeMeta("Dot"),
		ObjectMeta: metav1.ObjectMeta{Name: d.ID, ResourceVersion: d.Version},
		Spec:       v1alpha1.DotSpec{Name: d.Name, Capacity: d.Capacity},
		Status: v1alpha1.DotStatus{Master: d.Master, MasterNode: masterNode, NewestCommit: d.NewestCommit, Seq: d.Seq,
			LastCommitAt: v1alpha1.NewTimestamp(d.LastCommitAt), Moving: d.Moving,
			MovingSince: v1alpha1.NewTimestamp(d.MovingSince), Deleted: d.Deleted},
	}
	if d.CommitInterval > 0 {
		o.Spec.CommitInterval = &metav1.Duration{Duration: d.CommitInterval}
	}
	for _, r := range d.Replicas {
		o.Status.Replicas = append(o.Status.Replicas, v1alpha1.Replica{Pool: r.Pool, Commit: r.Commit, Seq: r.Seq,
			Updated: v1alpha1.NewTimestamp(r.Updated), LastBytes: r.LastBytes})
	}
	if l := d.Loss; l != nil {
		o.Status.Loss = &v1alpha1.Loss{CommitsLost: l.CommitsLost, LastReplicatedCommit: l.LastReplicatedCommit,
			LastReplicatedCommitAt: v1alpha1.NewTimestamp(l.LastReplicatedCommitAt), At: v1alpha1.NewTimestamp(l.At),
			FromPool: l.FromPool, ToPool: l.ToPool}
	}
	return toUnstructured(o)
}

func dotFrom(u *unstructured.Unstructured) (Dot, error) {
	var o v1alpha1.Dot
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o); err != nil {
		return Dot{}, fmt.Errorf("Dot %s: %w", u.GetName(), err)
	}
	s := o.Status
	d := Dot{ID: o.Name, Name: o.Spec.Name, Capacity: o.Spec.Capacity, Master: s.Master, NewestCommit: s.NewestCommit,
		Seq: s.Seq, LastCommitAt: v1alpha1.TimeOf(s.LastCommitAt), Moving: s.Moving,
		MovingSince: v1alpha1.TimeOf(s.MovingSince), Deleted: s.Deleted, Version: o.ResourceVersion}
	// An interval that is not positive is none, as dotObject writes it; a
	// negative one in an edited object would otherwise be kept here and
	// vanish on the next write (found by FuzzDotFrom).
	if ci := o.Spec.CommitInterval; ci != nil && ci.Duration > 0 {
		d.CommitInterval = ci.Duration
	}
	for _, r := range s.Replicas {
		d.Replicas = append(d.Replicas, Replica{Pool: r.Pool, Commit: r.Commit, Seq: r.Seq,
			Updated: v1alpha1.TimeOf(r.Updated), LastBytes: r.LastBytes})
	}
	if l := s.Loss; l != nil {
		d.Loss = &Loss{CommitsLost: l.CommitsLost, LastReplicatedCommit: l.LastReplicatedCommit,
			LastReplicatedCommitAt: v1alpha1.TimeOf(l.LastReplicatedCommitAt), At: v1alpha1.TimeOf(l.At),
			FromPool: l.FromPool, ToPool: l.ToPool}
	}
	return d, nil
}
