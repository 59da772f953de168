package cluster_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster/clustertest"
)

// seed writes a record as raw JSON, in the two writes the API server
// wants: the object, then its status (none for a nil status).
func seed(t *testing.T, dyn dynamic.Interface, res schema.GroupVersionResource, kind, name string, spec, status map[string]any) {
	t.Helper()
	ctx := context.Background()
	obj := map[string]any{"apiVersion": "dotmesh.io/v1alpha1", "kind": kind, "metadata": map[string]any{"name": name}}
	if spec != nil {
		obj["spec"] = spec
	}
	made, err := dyn.Resource(res).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if status != nil {
		made.Object["status"] = status
		if _, err := dyn.Resource(res).UpdateStatus(ctx, made, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// The records the view wrote before api/v1alpha1 (times as Go writes
// them, to the nanosecond, zero times written out) read back unchanged.
func TestKubeReadsRecordsOfTheEarlierFormat(t *testing.T) {
	ctx := context.Background()
	dyn := clustertest.NewFakeDynamic()
	seed(t, dyn, v1alpha1.DotPoolsResource, "DotPool", "pool-a", nil, map[string]any{
		"node": "n1", "address": "10.0.0.1:7000", "size": int64(100), "available": int64(50), "zvols": true,
		"lastHeartbeat": "2026-11-27T10:00:00.123456789Z"})
	seed(t, dyn, v1alpha1.DotsResource, "Dot", "d1", map[string]any{"name": "pvc-1", "capacity": int64(10), "commitInterval": "1m30s"},
		map[string]any{"master": "pool-a", "masterNode": "n1", "seq": int64(2), "newestCommit": "d1@c2",
			"replicas": []any{map[string]any{"pool": "pool-b", "seq": int64(1), "commit": "d1@c1",
				"updated": "2026-11-27T10:00:01Z", "lastBytes": int64(7)}},
			"loss": map[string]any{"commitsLost": int64(1), "lastReplicatedCommitAt": "0001-01-01T00:00:00Z",
				"at": "2026-11-27T10:00:02.5Z", "fromPool": "pool-z", "toPool": "pool-a"},
			"lastCommitAt": "2026-11-27T10:00:00Z"})
	v := cluster.NewKubeOn(dyn)
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	p, err := v.GetPool(ctx, "pool-a")
	if err != nil {
		t.Fatal(err)
	}
	if want := (cluster.Pool{Name: "pool-a", Node: "n1", Address: "10.0.0.1:7000", Size: 100, Available: 50, Zvols: true,
		LastHeartbeat: t0.Add(123456789)}); p != want {
		t.Fatalf("pool:\n got %+v\nwant %+v", p, want)
	}
	d, err := v.GetDot(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	d.Version = ""
	want := cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 10, CommitInterval: 90 * time.Second, Master: "pool-a", Seq: 2,
		NewestCommit: "d1@c2", LastCommitAt: t0,
		Replicas: []cluster.Replica{{Pool: "pool-b", Commit: "d1@c1", Seq: 1, Updated: t0.Add(time.Second), LastBytes: 7}},
		Loss:     &cluster.Loss{CommitsLost: 1, At: t0.Add(2500 * time.Millisecond), FromPool: "pool-z", ToPool: "pool-a"}}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("dot:\n got %+v\nwant %+v", d, want)
	}
}

// A create stopped between its two writes (the record made, its status
// not) leaves a record the view does not show; the next create of that ID
// completes it.
func TestKubeCompletesAnInterruptedCreate(t *testing.T) {
	ctx := context.Background()
	dyn := clustertest.NewFakeDynamic()
	seed(t, dyn, v1alpha1.DotsResource, "Dot", "d1", map[string]any{"name": "pvc-1", "capacity": int64(10)}, nil)
	v := cluster.NewKubeOn(dyn)
	if _, err := v.GetDot(ctx, "d1"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("GetDot of a half-made record: %v, want ErrNotFound", err)
	}
	if list, err := v.ListDots(ctx); err != nil || len(list) != 0 {
		t.Fatalf("ListDots with a half-made record: %+v, %v; want none", list, err)
	}
	want := cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 20, Master: "pool-a", Seq: 1}
	if _, err := v.CreateDot(ctx, want); err != nil {
		t.Fatalf("CreateDot over a half-made record: %v", err)
	}
	got, err := v.GetDot(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	got.Version = ""
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("completed record:\n got %+v\nwant %+v", got, want)
	}
}

// `kubectl get dots` shows the master's node, learnt from the pool records.
func TestKubeDotNamesItsMastersNode(t *testing.T) {
	ctx := context.Background()
	dyn := clustertest.NewFakeDynamic()
	v := cluster.NewKubeOn(dyn)
	if err := v.PutPool(ctx, cluster.Pool{Name: "pool-a", Node: "n1", LastHeartbeat: time.Now()}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 1, Master: "pool-a"}); err != nil {
		t.Fatal(err)
	}
	obj, err := dyn.Resource(v1alpha1.DotsResource).Get(ctx, "d1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node, _, _ := unstructured.NestedString(obj.Object, "status", "masterNode"); node != "n1" {
		t.Fatalf("status.masterNode %q, want n1", node)
	}
}
