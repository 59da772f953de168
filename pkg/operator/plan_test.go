package operator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// seqNames makes dotmesh-pool-000001, -000002, ...: predictable names for
// the tests, where the runtime uses random ones.
func seqNames() func() string {
	n := 0
	return func() string {
		n++
		return fmt.Sprintf("%s%06d", PVCNamePrefix, n)
	}
}

func pvPerNode(mod ...func(*Config)) Config {
	cfg := DefaultConfig()
	cfg.Mode = ModePVPerNode
	for _, m := range mod {
		m(&cfg)
	}
	return cfg
}

func nodes(names ...string) []Node {
	var out []Node
	for _, n := range names {
		out = append(out, Node{Name: n})
	}
	return out
}

func pvc(name, node string) BackingPVC { return BackingPVC{Name: name, Node: node, Auto: true} }

func orphan(name, node string, at time.Time) BackingPVC {
	p := pvc(name, node)
	p.OrphanedAt = at
	return p
}

func running(pool, node string) PoolPod {
	return PoolPod{Name: PoolPodName(pool, node), Pool: pool, Node: node, Running: true}
}

func pending(pool, node string) PoolPod {
	return PoolPod{Name: PoolPodName(pool, node), Pool: pool, Node: node}
}

func terminating(pool, node string) PoolPod {
	p := running(pool, node)
	p.Terminating = true
	return p
}

// describe is an action without its words, for comparing.
func describe(a Action) string {
	switch a.Kind {
	case CreatePVC, CreatePod:
		return fmt.Sprintf("%s %s %s", a.Kind, a.PVC, a.Node)
	case AssignPVC:
		return fmt.Sprintf("%s %s %s->%s", a.Kind, a.PVC, a.From, a.Node)
	case StampOrphaned, ClearOrphaned:
		return fmt.Sprintf("%s %s", a.Kind, a.PVC)
	case DeletePod:
		return fmt.Sprintf("%s %s", a.Kind, a.Pod)
	case Warn:
		return fmt.Sprintf("%s %s %s", a.Kind, a.Node, a.Reason)
	}
	return string(a.Kind)
}

func describeAll(acts []Action) []string {
	out := []string{}
	for _, a := range acts {
		out = append(out, describe(a))
	}
	return out
}

func TestPlan(t *testing.T) {
	grace := DefaultOrphanGrace
	steady := State{
		Nodes: nodes("node1", "node2", "node3"),
		PVCs:  []BackingPVC{pvc("a", "node1"), pvc("b", "node2"), pvc("c", "node3")},
		Pods:  []PoolPod{running("a", "node1"), running("b", "node2"), running("c", "node3")},
	}
	with := func(s State, f func(*State)) State {
		s.Nodes = slices.Clone(s.Nodes)
		s.PVCs = slices.Clone(s.PVCs)
		s.Pods = slices.Clone(s.Pods)
		f(&s)
		return s
	}
	tests := []struct {
		name  string
		cfg   Config
		state State
		want  []string
	}{
		// Rule 7.
		{
			name:  "local mode does nothing, not even deleting stray pods",
			cfg:   DefaultConfig(),
			state: State{Nodes: nodes("node1"), Pods: []PoolPod{running("gone", "node9")}},
			want:  []string{},
		},
		// Rules 1 and 3c.
		{
			name:  "install on 3 nodes creates 3 PVCs and their pool pods",
			cfg:   pvPerNode(),
			state: State{Nodes: nodes("node1", "node2", "node3")},
			want: []string{
				"CreatePVC dotmesh-pool-000001 node1", "CreatePVC dotmesh-pool-000002 node2", "CreatePVC dotmesh-pool-000003 node3",
				"CreatePod dotmesh-pool-000001 node1", "CreatePod dotmesh-pool-000002 node2", "CreatePod dotmesh-pool-000003 node3",
			},
		},
		{
			name: "only nodes matching the selector get a pool",
			cfg:  pvPerNode(func(c *Config) { c.NodeSelector = labels.SelectorFromSet(labels.Set{"dotmesh.io/storage": "true"}) }),
			state: State{Nodes: []Node{
				{Name: "node1", Labels: map[string]string{"dotmesh.io/storage": "true"}},
				{Name: "node2"},
			}},
			want: []string{"CreatePVC dotmesh-pool-000001 node1", "CreatePod dotmesh-pool-000001 node1"},
		},
		{
			name:  "steady state: nothing to do",
			cfg:   pvPerNode(),
			state: steady,
			want:  []string{},
		},
		// Rules 2 and 3a.
		{
			name: "node replaced: the gone node's PVC goes to the new node, no new PVC",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node2", "node3", "node4")
			}),
			want: []string{"AssignPVC a node1->node4", "DeletePod a-node1"},
		},
		{
			name: "node replaced, old pod already gone: the pod comes up on the new node at once",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node2", "node3", "node4")
				s.Pods = s.Pods[1:]
			}),
			want: []string{"AssignPVC a node1->node4", "CreatePod a node4"},
		},
		{
			name: "re-attach happens within the grace period and takes the oldest orphan",
			cfg:  pvPerNode(),
			state: State{
				Nodes: nodes("node3", "node4"),
				PVCs:  []BackingPVC{orphan("a", "node1", t0.Add(-time.Minute)), orphan("b", "node2", t0.Add(-2*time.Minute)), pvc("c", "node3")},
				Pods:  []PoolPod{running("c", "node3")},
			},
			want: []string{"AssignPVC b node2->node4", "CreatePod b node4"},
		},
		{
			name: "an unassigned PVC made by hand is placed on a node without a pool",
			cfg:  pvPerNode(),
			state: State{
				Nodes: nodes("node1"),
				PVCs:  []BackingPVC{{Name: "by-hand"}},
			},
			want: []string{"AssignPVC by-hand ->node1", "CreatePod by-hand node1"},
		},
		{
			name: "short absence: the PVC of a gone node is stamped and its pod deleted",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node2", "node3")
			}),
			want: []string{"StampOrphaned a", "DeletePod a-node1"},
		},
		{
			name: "short absence: a node no longer selected keeps its pool pod during the grace period",
			cfg:  pvPerNode(func(c *Config) { c.NodeSelector = labels.SelectorFromSet(labels.Set{"pool": "yes"}) }),
			state: State{
				Nodes: []Node{{Name: "node1"}, {Name: "node2", Labels: map[string]string{"pool": "yes"}}},
				PVCs:  []BackingPVC{pvc("a", "node1"), pvc("b", "node2")},
				Pods:  []PoolPod{running("a", "node1"), running("b", "node2")},
			},
			want: []string{"StampOrphaned a"},
		},
		{
			name: "short absence: the node is back, the stamp goes and the pool comes back there",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.PVCs[0] = orphan("a", "node1", t0.Add(-time.Minute))
				s.Pods = s.Pods[1:]
			}),
			want: []string{"ClearOrphaned a", "CreatePod a node1"},
		},
		{
			name: "short absence: within the grace period no node adopts the orphan",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node2", "node3")
				s.PVCs[0] = orphan("a", "node1", t0.Add(-grace+time.Second))
				s.Pods = s.Pods[1:]
			}),
			want: []string{},
		},
		{
			name: "an unreadable stamp is cleared on a PVC whose node is there",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.PVCs[0].BadStamp = true
			}),
			want: []string{"ClearOrphaned a"},
		},
		{
			name: "an unreadable stamp is stamped afresh on an orphan, which is not adopted yet",
			cfg:  pvPerNode(func(c *Config) { c.OrphanGrace = time.Minute }),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node2", "node3")
				s.PVCs[0].BadStamp = true
				s.Pods = s.Pods[1:]
			}),
			want: []string{"StampOrphaned a"},
		},
		// Rule 4.
		{
			name: "orphan past grace is adopted by the node with the fewest pools",
			cfg:  pvPerNode(),
			state: State{
				Nodes: nodes("node2", "node3"),
				PVCs:  []BackingPVC{orphan("a", "node1", t0.Add(-grace)), pvc("b", "node2"), pvc("c", "node3"), pvc("d", "node2")},
				Pods:  []PoolPod{running("b", "node2"), running("c", "node3"), running("d", "node2")},
			},
			want: []string{"AssignPVC a node1->node3", "CreatePod a node3"},
		},
		{
			name: "adoption ties go to the first node by name, and one orphan per pass",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node3", "node2")
				s.PVCs[0] = orphan("a", "node1", t0.Add(-2*grace))
				s.PVCs[1] = orphan("b", "node9", t0.Add(-grace))
				s.PVCs = append(s.PVCs, pvc("d", "node3"))
				s.Pods = []PoolPod{running("c", "node3"), running("d", "node3"), running("e", "node2")}
				s.PVCs = append(s.PVCs, pvc("e", "node2"))
			}),
			want: []string{"AssignPVC a node1->node2", "CreatePod a node2"},
		},
		{
			name: "adoption waits while a pool pod is terminating",
			cfg:  pvPerNode(),
			state: State{
				Nodes: nodes("node2"),
				PVCs:  []BackingPVC{orphan("a", "node1", t0.Add(-grace)), pvc("b", "node2")},
				Pods:  []PoolPod{terminating("a", "node1"), running("b", "node2")},
			},
			want: []string{},
		},
		{
			name: "adoption waits while an assigned PVC's pool pod is not Running",
			cfg:  pvPerNode(),
			state: State{
				Nodes: nodes("node2"),
				PVCs:  []BackingPVC{orphan("a", "node1", t0.Add(-grace)), pvc("b", "node2")},
				Pods:  []PoolPod{pending("b", "node2")},
			},
			want: []string{},
		},
		{
			name: "no node selected: orphans are stamped and stay",
			cfg:  pvPerNode(),
			state: State{
				PVCs: []BackingPVC{orphan("a", "node1", t0.Add(-2*grace)), pvc("b", "node2")},
			},
			want: []string{"StampOrphaned b"},
		},
		// Rules 3b and 5.
		{
			name: "rebalance: a new node takes one extra pool from a node with two, no new PVC",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node1", "node2", "node3", "node4")
				s.PVCs = append(s.PVCs, pvc("d", "node1"))
				s.Pods = append(s.Pods, running("d", "node1"))
			}),
			want: []string{"AssignPVC d node1->node4", "DeletePod d-node1"},
		},
		{
			name: "rebalance: exactly one move per pass; a second new node gets a new PVC",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node1", "node2", "node3", "node4", "node5")
				s.PVCs = append(s.PVCs, pvc("d", "node1"))
				s.Pods = append(s.Pods, running("d", "node1"))
			}),
			want: []string{"CreatePVC dotmesh-pool-000001 node5", "AssignPVC d node1->node4", "DeletePod d-node1", "CreatePod dotmesh-pool-000001 node5"},
		},
		{
			name: "rebalance: two donors, two new nodes, still one move",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node1", "node2", "node3", "node4", "node5")
				s.PVCs = append(s.PVCs, pvc("d", "node1"), pvc("e", "node2"))
				s.Pods = append(s.Pods, running("d", "node1"), running("e", "node2"))
			}),
			want: []string{"AssignPVC d node1->node4", "DeletePod d-node1"},
		},
		{
			name: "rebalance waits while a move is in flight, and no PVC is created meanwhile",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node1", "node2", "node3", "node4", "node5")
				s.PVCs = append(s.PVCs, pvc("d", "node1"), pvc("e", "node4"), pvc("f", "node1"))
				s.Pods = append(s.Pods, running("d", "node1"), terminating("e", "node2"), running("f", "node1"))
			}),
			want: []string{},
		},
		{
			name: "rebalance waits for the moved pool's pod to be Running",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node1", "node2", "node3", "node4", "node5")
				s.PVCs = append(s.PVCs, pvc("d", "node1"), pvc("e", "node4"), pvc("f", "node1"))
				s.Pods = append(s.Pods, running("d", "node1"), pending("e", "node4"), running("f", "node1"))
			}),
			want: []string{},
		},
		{
			name: "a re-attach is no move: it goes ahead while a pod is terminating",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node2", "node3", "node4")
				s.Pods[0] = terminating("a", "node1")
			}),
			want: []string{"AssignPVC a node1->node4"},
		},
		// Rule 3d.
		{
			name: "cap reached: no new PVC, an event for the node",
			cfg:  pvPerNode(func(c *Config) { c.MaxAutoPVCs = 3 }),
			state: with(steady, func(s *State) {
				s.Nodes = nodes("node1", "node2", "node3", "node4")
			}),
			want: []string{"Warn node4 BackingPVCCapReached"},
		},
		{
			name:  "cap of 0 creates none",
			cfg:   pvPerNode(func(c *Config) { c.MaxAutoPVCs = 0 }),
			state: State{Nodes: nodes("node1")},
			want:  []string{"Warn node1 BackingPVCCapReached"},
		},
		{
			name: "PVCs made by hand do not count towards the cap",
			cfg:  pvPerNode(func(c *Config) { c.MaxAutoPVCs = 1 }),
			state: State{
				Nodes: nodes("node1", "node2"),
				PVCs:  []BackingPVC{{Name: "by-hand", Node: "node1"}},
				Pods:  []PoolPod{running("by-hand", "node1")},
			},
			want: []string{"CreatePVC dotmesh-pool-000001 node2", "CreatePod dotmesh-pool-000001 node2"},
		},
		{
			name:  "the cap counts within a pass",
			cfg:   pvPerNode(func(c *Config) { c.MaxAutoPVCs = 1 }),
			state: State{Nodes: nodes("node1", "node2")},
			want:  []string{"CreatePVC dotmesh-pool-000001 node1", "CreatePod dotmesh-pool-000001 node1", "Warn node2 BackingPVCCapReached"},
		},
		// Rule 6.
		{
			name: "pool pods of gone PVCs, or PVCs being deleted, are deleted",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.PVCs[2].Deleting = true
				s.Pods = append(s.Pods, running("x", "node1"))
			}),
			want: []string{"CreatePVC dotmesh-pool-000001 node3", "DeletePod c-node3", "DeletePod x-node1", "CreatePod dotmesh-pool-000001 node3"},
		},
		{
			name: "a node whose PVC is being deleted gets a new one without waiting for the old pool to go",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.PVCs[2].Deleting = true
				s.Pods[2] = terminating("c", "node3")
			}),
			want: []string{"CreatePVC dotmesh-pool-000001 node3", "CreatePod dotmesh-pool-000001 node3"},
		},
		{
			name: "a second pool pod of one pool on its node is deleted, the Running one stays",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				extra := pending("a", "node1")
				extra.Name = "a-node1-extra"
				s.Pods = append(s.Pods, extra)
			}),
			want: []string{"DeletePod a-node1-extra"},
		},
		{
			name: "a second pool pod of one pool on its node is deleted, the Running one stays, whatever the names",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				extra := pending("a", "node1")
				extra.Name = "a-0"
				s.Pods = append(s.Pods, extra)
			}),
			want: []string{"DeletePod a-0"},
		},
		{
			name: "a pool pod on the wrong node is deleted and the new one waits",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Pods[0] = running("a", "node2")
			}),
			want: []string{"DeletePod a-node2"},
		},
		{
			name: "no new pool pod while the old one terminates",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Pods[0] = terminating("a", "node2")
			}),
			want: []string{},
		},
		{
			name: "a finished pool pod is deleted so it can be made again",
			cfg:  pvPerNode(),
			state: with(steady, func(s *State) {
				s.Pods[0].Running, s.Pods[0].Finished = false, true
			}),
			want: []string{"DeletePod a-node1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := describeAll(Plan(tt.cfg, tt.state, t0, seqNames()))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Plan:\n got  %s\n want %s", strings.Join(got, "; "), strings.Join(tt.want, "; "))
			}
		})
	}
}

func TestPlanStampsAtNow(t *testing.T) {
	s := State{Nodes: nodes("node2"), PVCs: []BackingPVC{pvc("a", "node1"), pvc("b", "node2")}, Pods: []PoolPod{running("b", "node2")}}
	for _, a := range Plan(pvPerNode(), s, t0, seqNames()) {
		if a.Kind == StampOrphaned && !a.At.Equal(t0) {
			t.Errorf("stamped %s at %v, want %v", a.PVC, a.At, t0)
		}
	}
}

func TestPlanSkipsTakenNames(t *testing.T) {
	names := []string{"a", "a", "dotmesh-pool-fresh1"}
	gen := func() string { n := names[0]; names = names[1:]; return n }
	s := State{Nodes: nodes("node1", "node2"), PVCs: []BackingPVC{pvc("a", "node1")}, Pods: []PoolPod{running("a", "node1")}}
	got := describeAll(Plan(pvPerNode(), s, t0, gen))
	want := []string{"CreatePVC dotmesh-pool-fresh1 node2", "CreatePod dotmesh-pool-fresh1 node2"}
	if !slices.Equal(got, want) {
		t.Errorf("Plan: got %v, want %v", got, want)
	}
}

func TestPlanGivesEveryActionAReason(t *testing.T) {
	s := State{
		Nodes: nodes("node2", "node3"),
		PVCs:  []BackingPVC{pvc("a", "node1"), pvc("b", "node2")},
		Pods:  []PoolPod{running("a", "node1"), running("x", "node2")},
	}
	for _, a := range Plan(pvPerNode(func(c *Config) { c.MaxAutoPVCs = 0 }), s, t0, seqNames()) {
		if a.Why == "" {
			t.Errorf("%s has no words for the log", describe(a))
		}
	}
}

func TestPoolPodName(t *testing.T) {
	long := "ip-10-0-1-2.eu-west-1.compute.internal-and-then-some-more-words"
	a, b := PoolPodName("dotmesh-pool-abcdef", long+"1"), PoolPodName("dotmesh-pool-abcdef", long+"2")
	for _, n := range []string{a, b} {
		if len(n) > 63 || strings.HasSuffix(n, "-") || !strings.HasPrefix(n, "dotmesh-pool-abcdef-ip-10") {
			t.Errorf("PoolPodName gave %q", n)
		}
	}
	if a == b {
		t.Errorf("two nodes share pool pod name %q", a)
	}
	if got := PoolPodName("dotmesh-pool-abcdef", "node1"); got != "dotmesh-pool-abcdef-node1" {
		t.Errorf("PoolPodName = %q", got)
	}
}
