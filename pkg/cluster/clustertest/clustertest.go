// Package clustertest is the one suite of cases a cluster.View must pass:
// the pool fence, claims, releases, compare-and-swap, tombstones and a
// rebuild's records. pkg/cluster runs it on Memory and on Kube over a fake
// API server (NewFakeDynamic); e2e/multinode runs it on Kube over a real
// one, which is the authority on what the fake must model.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
)

// Subject is one view under test, holding no records.
type Subject struct {
	View cluster.View
	// Events returns what Event recorded about a dot, as "reason: message".
	Events func(ctx context.Context, dotID string) ([]string, error)
}

// Run runs every case, each on a view from fresh.
func Run(t *testing.T, fresh func(t *testing.T) Subject) {
	cases := []struct {
		name string
		run  func(*testing.T, Subject)
	}{
		{"PoolIsHeldByOneNodeAtATime", poolFence},
		{"FirstClaimsRaceAndOneWins", firstClaimsRace},
		{"PoolRecords", poolRecords},
		{"DotRecordKeepsEveryField", dotRoundTrip},
		{"CreateClaimsTheID", createClaims},
		{"UpdateIsACompareAndSwap", compareAndSwap},
		{"OneHandoffClaimWins", handoffClaim},
		{"SpecAndStatusChangesLand", specAndStatus},
		{"TombstoneStaysUntilDeleted", tombstone},
		{"RebuildRestoresOnlyMissingRecords", rebuild},
		{"RecordsAreCopies", copies},
		{"EventIsRecorded", event},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, fresh(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// t0 has nanoseconds: the view keeps times exactly.
var t0 = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

// must(f())(t) is f's result, or a fatal error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// sameDot fails unless got is want, whatever their versions.
func sameDot(t *testing.T, what string, got, want cluster.Dot) {
	t.Helper()
	got.Version, want.Version = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// fullDot has every field set, as a dot mid-handoff after a failover.
func fullDot(id string) cluster.Dot {
	return cluster.Dot{
		ID: id, Name: "pvc-" + id, Capacity: 1 << 30, Master: "pool-a",
		Replicas: []cluster.Replica{
			{Pool: "pool-b", Commit: id + "@c2", Seq: 2, Updated: t0.Add(time.Second), LastBytes: 4096},
			{Pool: "pool-c"},
		},
		CommitInterval: 90 * time.Second, LastCommitAt: t0, NewestCommit: id + "@c3", Seq: 3,
		Loss: &cluster.Loss{CommitsLost: 1, LastReplicatedCommit: id + "@c2", LastReplicatedCommitAt: t0.Add(-time.Minute),
			At: t0.Add(-time.Second), FromPool: "pool-z", ToPool: "pool-a"},
		Moving: "pool-b", MovingSince: t0.Add(2 * time.Second),
	}
}

func poolFence(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	stale := 10 * time.Second
	claim := func(node string, at time.Time) error {
		return v.PutPool(ctx, cluster.Pool{Name: "p", Node: node, LastHeartbeat: at}, stale)
	}
	if err := claim("a", t0); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := claim("a", t0.Add(time.Second)); err != nil {
		t.Fatalf("holder's heartbeat: %v", err)
	}
	if err := claim("b", t0.Add(5*time.Second)); !errors.Is(err, cluster.ErrHeld) {
		t.Fatalf("claim while held and fresh: got %v, want ErrHeld", err)
	}
	if err := v.ReleasePool(ctx, "p", "b"); err != nil {
		t.Fatal(err)
	}
	if p := must(v.GetPool(ctx, "p"))(t); p.Node != "a" {
		t.Fatalf("a release by a node that does not hold the pool changed its holder to %q", p.Node)
	}
	if err := v.ReleasePool(ctx, "p", "a"); err != nil {
		t.Fatal(err)
	}
	if p := must(v.GetPool(ctx, "p"))(t); p.Node != "" || p.Address != "" {
		t.Fatalf("released pool still names node %q at %q", p.Node, p.Address)
	}
	if err := claim("b", t0.Add(6*time.Second)); err != nil {
		t.Fatalf("claim after a clean release: %v", err)
	}
	// b goes quiet; a may take the pool back only once b is stale.
	if err := claim("a", t0.Add(15*time.Second)); !errors.Is(err, cluster.ErrHeld) {
		t.Fatalf("claim 9s after the holder's last heartbeat: got %v, want ErrHeld", err)
	}
	if err := claim("a", t0.Add(16*time.Second)); err != nil {
		t.Fatalf("claim once the holder is stale: %v", err)
	}
	if err := claim("b", t0.Add(17*time.Second)); !errors.Is(err, cluster.ErrHeld) {
		t.Fatalf("the fenced-out node's heartbeat: got %v, want ErrHeld", err)
	}
	if p := must(v.GetPool(ctx, "p"))(t); p.Node != "a" {
		t.Fatalf("pool held by %q, want a", p.Node)
	}
}

// Two nodes claiming a pool no one has claimed yet, at once: exactly one
// holds it.
func firstClaimsRace(t *testing.T, s Subject) {
	ctx := ctxT(t)
	nodes := []string{"a", "b"}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			errs[i] = s.View.PutPool(ctx, cluster.Pool{Name: "p", Node: n, Address: n + ":1", LastHeartbeat: t0}, time.Minute)
		})
	}
	wg.Wait()
	var winners []string
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, nodes[i])
		case !errors.Is(err, cluster.ErrHeld):
			t.Fatalf("%s's claim: %v, want nil or ErrHeld", nodes[i], err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("claims won by %v, want exactly one", winners)
	}
	if p := must(s.View.GetPool(ctx, "p"))(t); p.Node != winners[0] || p.Address != winners[0]+":1" {
		t.Fatalf("pool names %s at %s; %s won the claim", p.Node, p.Address, winners[0])
	}
}

func poolRecords(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	b := cluster.Pool{Name: "pool-b", Node: "n2", Address: "10.0.0.2:7000", Size: 2 << 30, Available: 1 << 30, Zvols: true, LastHeartbeat: t0}
	a := cluster.Pool{Name: "pool-a", Node: "n1", Address: "10.0.0.1:7000", Size: 1 << 30, LastHeartbeat: t0.Add(time.Second)}
	for _, p := range []cluster.Pool{b, a} {
		if err := v.PutPool(ctx, p, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if got := must(v.GetPool(ctx, "pool-b"))(t); !reflect.DeepEqual(got, b) {
		t.Fatalf("GetPool:\n got %+v\nwant %+v", got, b)
	}
	if got := must(v.ListPools(ctx))(t); !reflect.DeepEqual(got, []cluster.Pool{a, b}) {
		t.Fatalf("ListPools (in name order):\n got %+v\nwant %+v", got, []cluster.Pool{a, b})
	}
	if _, err := v.GetPool(ctx, "pool-x"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("GetPool of a missing pool: %v, want ErrNotFound", err)
	}
	// A release of a pool the view does not hold records nothing.
	if err := v.ReleasePool(ctx, "pool-x", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetPool(ctx, "pool-x"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("after releasing a missing pool, GetPool: %v, want ErrNotFound", err)
	}
	for range 2 { // deleting a pool that is gone is no error
		if err := v.DeletePool(ctx, "pool-a"); err != nil {
			t.Fatal(err)
		}
	}
	if got := must(v.ListPools(ctx))(t); !reflect.DeepEqual(got, []cluster.Pool{b}) {
		t.Fatalf("ListPools after a delete: %+v, want only pool-b", got)
	}
}

func dotRoundTrip(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	want := fullDot("d2")
	made := must(v.CreateDot(ctx, want))(t)
	if made.Version == "" {
		t.Fatal("CreateDot returned no version")
	}
	sameDot(t, "CreateDot's result", made, want)
	got := must(v.GetDot(ctx, "d2"))(t)
	sameDot(t, "GetDot", got, want)
	if got.Version != made.Version {
		t.Fatalf("GetDot's version %s, CreateDot's %s", got.Version, made.Version)
	}
	bare := cluster.Dot{ID: "d1", Name: "pvc-d1", Capacity: 1, Master: "pool-a"}
	must(v.CreateDot(ctx, bare))(t)
	list := must(v.ListDots(ctx))(t)
	if len(list) != 2 {
		t.Fatalf("ListDots: %d records, want 2", len(list))
	}
	sameDot(t, "ListDots[0] (in ID order)", list[0], bare)
	sameDot(t, "ListDots[1]", list[1], want)
	if _, err := v.GetDot(ctx, "d9"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("GetDot of a missing dot: %v, want ErrNotFound", err)
	}
}

func createClaims(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	first := must(v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 10, Master: "pool-a"}))(t)
	_, err := v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 20, Master: "pool-b"})
	if !errors.Is(err, cluster.ErrExists) {
		t.Fatalf("second CreateDot: %v, want ErrExists", err)
	}
	sameDot(t, "record after a refused create", must(v.GetDot(ctx, "d1"))(t), first)
}

func compareAndSwap(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	read := must(v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 10, Master: "pool-a"}))(t)
	a := read
	a.Seq, a.NewestCommit, a.LastCommitAt = 1, "d1@c1", t0
	wrote := must(v.UpdateDot(ctx, a))(t)
	if wrote.Version == read.Version {
		t.Fatalf("UpdateDot kept version %s", read.Version)
	}
	b := read // read before a's write
	b.Master = "pool-b"
	if _, err := v.UpdateDot(ctx, b); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("UpdateDot on a stale version: %v, want ErrConflict", err)
	}
	b.Version = ""
	if _, err := v.UpdateDot(ctx, b); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("UpdateDot with no version: %v, want ErrConflict", err)
	}
	got := must(v.GetDot(ctx, "d1"))(t)
	sameDot(t, "record after a lost compare-and-swap", got, a)
	if got.Version != wrote.Version {
		t.Fatalf("version %s after a lost compare-and-swap, want %s", got.Version, wrote.Version)
	}
	gone := a
	gone.ID = "d9"
	if _, err := v.UpdateDot(ctx, gone); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("UpdateDot of a missing dot: %v, want ErrNotFound", err)
	}
}

// Two nodes read the dot and both claim to move it: the first write wins,
// the second learns of it, and the record names the winner's target.
func handoffClaim(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	rec := must(v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 10, Master: "pool-a",
		Replicas: []cluster.Replica{{Pool: "pool-b"}, {Pool: "pool-c"}}}))(t)
	toB, toC := rec, rec
	toB.Moving, toB.MovingSince = "pool-b", t0
	toC.Moving, toC.MovingSince = "pool-c", t0
	must(v.UpdateDot(ctx, toB))(t)
	if _, err := v.UpdateDot(ctx, toC); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("second claim: %v, want ErrConflict", err)
	}
	got := must(v.GetDot(ctx, "d1"))(t)
	if got.Moving != "pool-b" || !got.MovingSince.Equal(t0) {
		t.Fatalf("claim names %q since %s, want pool-b since %s", got.Moving, got.MovingSince, t0)
	}
	// The handoff done: the target is master, the claim cleared.
	got.Master, got.Moving, got.MovingSince = "pool-b", "", time.Time{}
	got.Replicas = []cluster.Replica{{Pool: "pool-a"}, {Pool: "pool-c"}}
	done := must(v.UpdateDot(ctx, got))(t)
	sameDot(t, "record after the handoff", must(v.GetDot(ctx, "d1"))(t), done)
	if done.Moving != "" || done.Master != "pool-b" {
		t.Fatalf("after the handoff: master %s, moving %q", done.Master, done.Moving)
	}
}

// A resize changes the capacity (Kube: the spec) alone; status changes
// follow on the version it left; and both at once land too.
func specAndStatus(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	d := must(v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 10, Master: "pool-a"}))(t)
	d.Capacity = 20
	d = must(v.UpdateDot(ctx, d))(t)
	d.Seq, d.NewestCommit = 1, "d1@c1"
	d = must(v.UpdateDot(ctx, d))(t)
	d.Capacity, d.Seq, d.CommitInterval = 30, 2, time.Minute
	d = must(v.UpdateDot(ctx, d))(t)
	got := must(v.GetDot(ctx, "d1"))(t)
	sameDot(t, "record after a resize and commits", got, d)
	if got.Capacity != 30 || got.Seq != 2 || got.CommitInterval != time.Minute {
		t.Fatalf("capacity %d, seq %d, interval %s; want 30, 2, 1m", got.Capacity, got.Seq, got.CommitInterval)
	}
	if got.Version != d.Version {
		t.Fatalf("version %s, UpdateDot returned %s", got.Version, d.Version)
	}
	stale := d
	stale.Version = must(v.CreateDot(ctx, cluster.Dot{ID: "d2", Name: "pvc-2", Capacity: 1}))(t).Version
	stale.Capacity = 40
	if _, err := v.UpdateDot(ctx, stale); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("resize on a stale version: %v, want ErrConflict", err)
	}
}

// A dot deleted while a copy could not be dropped stays as a tombstone:
// listed, and refusing a create (so no rebuild brings it back), until the
// record is deleted.
func tombstone(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	d := must(v.CreateDot(ctx, fullDot("d1")))(t)
	d.Deleted, d.Master, d.Moving, d.MovingSince = true, "", "", time.Time{}
	d.Replicas = d.Replicas[:1]
	d = must(v.UpdateDot(ctx, d))(t)
	sameDot(t, "tombstone", must(v.GetDot(ctx, "d1"))(t), d)
	if list := must(v.ListDots(ctx))(t); len(list) != 1 || !list[0].Deleted {
		t.Fatalf("ListDots: %+v, want the tombstone", list)
	}
	if _, err := v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-d1", Capacity: 1, Master: "pool-b"}); !errors.Is(err, cluster.ErrExists) {
		t.Fatalf("CreateDot over a tombstone: %v, want ErrExists", err)
	}
	for range 2 { // deleting a record that is gone is no error
		if err := v.DeleteDot(ctx, "d1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.GetDot(ctx, "d1"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("GetDot after delete: %v, want ErrNotFound", err)
	}
	if list := must(v.ListDots(ctx))(t); len(list) != 0 {
		t.Fatalf("ListDots after delete: %+v", list)
	}
}

// A rebuild (a view lost, its records read back from the pools) creates a
// missing record whole, status and all, and leaves one that is there.
func rebuild(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	kept := must(v.CreateDot(ctx, cluster.Dot{ID: "d1", Name: "pvc-1", Capacity: 10, Master: "pool-a", Seq: 5}))(t)
	for _, id := range []string{"d1", "d2"} {
		if _, err := v.GetDot(ctx, id); id == "d2" && !errors.Is(err, cluster.ErrNotFound) {
			t.Fatalf("GetDot of the lost record: %v, want ErrNotFound", err)
		}
		rec := cluster.Dot{ID: id, Name: "pvc-" + id, Capacity: 10, Master: "pool-b", Seq: 3, NewestCommit: id + "@c3",
			Replicas: []cluster.Replica{{Pool: "pool-a", Commit: id + "@c2", Seq: 2, Updated: t0}}}
		_, err := v.CreateDot(ctx, rec)
		switch {
		case id == "d1" && !errors.Is(err, cluster.ErrExists):
			t.Fatalf("rebuilding a record that is there: %v, want ErrExists", err)
		case id == "d2" && err != nil:
			t.Fatal(err)
		case id == "d2":
			sameDot(t, "rebuilt record", must(v.GetDot(ctx, id))(t), rec)
		}
	}
	sameDot(t, "record the rebuild found", must(v.GetDot(ctx, "d1"))(t), kept)
}

func copies(t *testing.T, s Subject) {
	ctx, v := ctxT(t), s.View
	want := fullDot("d1")
	made := must(v.CreateDot(ctx, want))(t)
	made.Replicas[0].Seq, made.Loss.CommitsLost = 99, 99
	got := must(v.GetDot(ctx, "d1"))(t)
	sameDot(t, "record after changing CreateDot's result", got, want)
	got.Replicas[0].Seq, got.Loss.CommitsLost = 99, 99
	sameDot(t, "record after changing GetDot's result", must(v.GetDot(ctx, "d1"))(t), want)
}

func event(t *testing.T, s Subject) {
	ctx := ctxT(t)
	s.View.Event(ctx, "d1", "FailedOver", "moved from pool-a to pool-b; 1 commit lost")
	got := must(s.Events(ctx, "d1"))(t)
	if want := "FailedOver: moved from pool-a to pool-b; 1 commit lost"; !slices.Contains(got, want) {
		t.Fatalf("events %q, want %q among them", got, want)
	}
}

// KubeSubject is a Kube view (made by newView) on the API server dyn
// reaches, after deleting every DotPool and Dot there. Its events are read
// back from "default", where Kube records them.
func KubeSubject(t *testing.T, dyn dynamic.Interface, newView func() cluster.View) Subject {
	ctx := ctxT(t)
	for _, r := range []dynamic.NamespaceableResourceInterface{dyn.Resource(v1alpha1.DotsResource), dyn.Resource(v1alpha1.DotPoolsResource)} {
		if err := r.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return Subject{View: newView(), Events: func(ctx context.Context, dotID string) ([]string, error) {
		list, err := dyn.Resource(corev1.SchemeGroupVersion.WithResource("events")).Namespace(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, u := range list.Items {
			var ev corev1.Event
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ev); err != nil {
				return nil, fmt.Errorf("event %s: %w", u.GetName(), err)
			}
			if ev.InvolvedObject.Kind == "Dot" && ev.InvolvedObject.Name == dotID {
				out = append(out, ev.Reason+": "+ev.Message)
			}
		}
		return out, nil
	}}
}
