package operator

import (
	"slices"
	"testing"
	"time"
)

// world plays the cluster for Plan over many passes: it applies the actions
// as the API would, then lets time pass as kubelets would (terminating pods
// go, pending pods on live nodes start). It checks, after every pass, that
// no pool ever has two pods.
type world struct {
	t     *testing.T
	cfg   Config
	now   time.Time
	s     State
	names func() string
	// moves counts reassignments, to check a scenario moved as few pools
	// as it should.
	moves int
}

func newWorld(t *testing.T, nodeNames ...string) *world {
	return &world{t: t, cfg: pvPerNode(), now: t0, s: State{Nodes: nodes(nodeNames...)}, names: seqNames()}
}

func (w *world) pass() []Action {
	w.t.Helper()
	acts := Plan(w.cfg, w.s, w.now, w.names)
	for _, a := range acts {
		w.apply(a)
	}
	per := map[string]int{}
	for _, p := range w.s.Pods {
		per[p.Pool]++
		if per[p.Pool] > 1 {
			w.t.Fatalf("at %v pool %s has two pods: %+v (after %v)", w.now, p.Pool, w.s.Pods, describeAll(acts))
		}
	}
	w.tick()
	return acts
}

func (w *world) apply(a Action) {
	pvc := func() *BackingPVC {
		for i := range w.s.PVCs {
			if w.s.PVCs[i].Name == a.PVC {
				return &w.s.PVCs[i]
			}
		}
		w.t.Fatalf("%s: no PVC %s", describe(a), a.PVC)
		return nil
	}
	switch a.Kind {
	case CreatePVC:
		w.s.PVCs = append(w.s.PVCs, BackingPVC{Name: a.PVC, Node: a.Node, Auto: true})
	case AssignPVC:
		p := pvc()
		p.Node, p.OrphanedAt = a.Node, time.Time{}
		w.moves++
	case StampOrphaned:
		pvc().OrphanedAt = a.At
	case ClearOrphaned:
		pvc().OrphanedAt = time.Time{}
	case CreatePod:
		w.s.Pods = append(w.s.Pods, PoolPod{Name: a.Pod, Pool: a.PVC, Node: a.Node})
	case DeletePod:
		for i := range w.s.Pods {
			if w.s.Pods[i].Name == a.Pod {
				w.s.Pods[i].Terminating = true
			}
		}
	}
}

func (w *world) tick() {
	w.now = w.now.Add(2 * time.Second)
	live := map[string]bool{}
	for _, n := range w.s.Nodes {
		live[n.Name] = true
	}
	w.s.Pods = slices.DeleteFunc(w.s.Pods, func(p PoolPod) bool { return p.Terminating })
	for i := range w.s.Pods {
		if live[w.s.Pods[i].Node] {
			w.s.Pods[i].Running = true
		}
	}
}

// settle runs passes until Plan has nothing left to do.
func (w *world) settle() {
	w.t.Helper()
	for range 50 {
		if len(w.pass()) == 0 {
			return
		}
	}
	w.t.Fatalf("no steady state after 50 passes: %+v", w.s)
}

// check says each node holds the pools named, each with one Running pod.
func (w *world) check(want map[string][]string) {
	w.t.Helper()
	got := map[string][]string{}
	for _, p := range w.s.PVCs {
		got[p.Node] = append(got[p.Node], p.Name)
		if !p.OrphanedAt.IsZero() {
			w.t.Errorf("PVC %s still orphaned", p.Name)
		}
	}
	for node, pools := range want {
		slices.Sort(got[node])
		if !slices.Equal(got[node], pools) {
			w.t.Errorf("node %s holds %v, want %v", node, got[node], pools)
		}
	}
	if len(got) != len(want) {
		w.t.Errorf("pools by node %v, want %v", got, want)
	}
	if len(w.s.Pods) != len(w.s.PVCs) {
		w.t.Errorf("%d pool pods for %d PVCs", len(w.s.Pods), len(w.s.PVCs))
	}
	for _, p := range w.s.Pods {
		if !p.Running {
			w.t.Errorf("pool pod %s is not Running", p.Name)
		}
	}
}

func (w *world) setNodes(names ...string) { w.s.Nodes = nodes(names...) }

func TestPlanLifecycle(t *testing.T) {
	w := newWorld(t, "node1", "node2", "node3")
	w.settle()
	w.check(map[string][]string{"node1": {"dotmesh-pool-000001"}, "node2": {"dotmesh-pool-000002"}, "node3": {"dotmesh-pool-000003"}})

	t.Log("node1 replaced by node4: its pool follows, nothing new")
	w.setNodes("node2", "node3", "node4")
	w.settle()
	w.check(map[string][]string{"node4": {"dotmesh-pool-000001"}, "node2": {"dotmesh-pool-000002"}, "node3": {"dotmesh-pool-000003"}})

	t.Log("node2 reboots within the grace period: its pool waits for it")
	w.setNodes("node3", "node4")
	w.pass()
	w.now = w.now.Add(time.Minute)
	w.pass()
	w.setNodes("node2", "node3", "node4")
	w.settle()
	w.check(map[string][]string{"node4": {"dotmesh-pool-000001"}, "node2": {"dotmesh-pool-000002"}, "node3": {"dotmesh-pool-000003"}})

	t.Log("node3 goes for good: after the grace period node2 adopts its pool (node2 and node4 tie at one; node2 is first by name)")
	w.setNodes("node2", "node4")
	w.pass()
	w.now = w.now.Add(w.cfg.OrphanGrace)
	w.settle()
	w.check(map[string][]string{"node2": {"dotmesh-pool-000002", "dotmesh-pool-000003"}, "node4": {"dotmesh-pool-000001"}})

	t.Log("the cluster grows again: the extra pool moves to the new node")
	before := w.moves
	w.setNodes("node2", "node4", "node5")
	w.settle()
	w.check(map[string][]string{"node2": {"dotmesh-pool-000002"}, "node4": {"dotmesh-pool-000001"}, "node5": {"dotmesh-pool-000003"}})
	if w.moves-before != 1 {
		t.Errorf("%d moves to rebalance one pool", w.moves-before)
	}
}

func TestPlanAdoptsOneAtATime(t *testing.T) {
	w := newWorld(t, "node1", "node2", "node3", "node4")
	w.settle()
	w.setNodes("node1")
	w.pass()
	w.now = w.now.Add(w.cfg.OrphanGrace)
	for range 50 {
		acts := w.pass()
		assigns := 0
		for _, a := range acts {
			if a.Kind == AssignPVC {
				assigns++
			}
		}
		if assigns > 1 {
			t.Fatalf("two adoptions in one pass: %v", describeAll(acts))
		}
		if len(acts) == 0 {
			break
		}
	}
	w.check(map[string][]string{"node1": {"dotmesh-pool-000001", "dotmesh-pool-000002", "dotmesh-pool-000003", "dotmesh-pool-000004"}})
}
