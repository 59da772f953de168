package operator

import (
	"fmt"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// maxNameTries bounds how often Plan asks for a fresh PVC name when the
// generator returns taken ones; past it the node waits for the next pass.
const maxNameTries = 8

// Plan says what to change so that every selected node has a pool. It is
// pure: the same inputs give the same actions, and newName (which makes new
// backing PVC names) is its only seam. The rules, numbered as the code and
// tests refer to them:
//
//  1. A node is selected when it exists and matches the node selector.
//  2. A PVC whose node is not selected is orphaned: stamped with now if it
//     is not yet. If the node is selected again, the stamp goes and the
//     pool comes back there.
//  3. A selected node without a pool gets (a) the oldest orphan, even within
//     its grace period (the node was replaced: same PVC, same pool); else
//     (b) one pool from the node holding the most, if that is two or more
//     (a move; while another is in flight the node waits, since a new PVC
//     would leave the extra pool where it is); else (c) a new PVC, if the
//     operator has created fewer than
//     maxAutoPVCs; else (d) a Warning Event saying why it has none.
//  4. An orphan past its grace period that no node without a pool took is
//     adopted by the node with fewest pools (ties by name), as its second.
//  5. One move at a time: no move (3b) or adoption (4) starts while a pool
//     pod is terminating or an assigned PVC's pool pod is not Running.
//  6. Each PVC assigned to a selected node has one pool pod, on that node.
//     Pool pods elsewhere, of PVCs gone or going, or on nodes gone, are
//     deleted, and a pool's new pod is created only once all its other
//     pods are gone: never two pods of one pool.
//  7. In local mode there are no actions at all.
//
// Actions come in the order they are safe to apply: new PVCs, then changes
// to PVCs' annotations, then pod deletions, then pod creations, then Events.
// A pod action about a PVC whose own action failed should be skipped.
func Plan(cfg Config, s State, now time.Time, newName func() string) []Action {
	if cfg.Mode != ModePVPerNode {
		return nil
	}
	p := newPlanner(cfg, s, now, newName)
	p.noticeOrphans()
	p.fillNodes()
	p.adoptOrphan()
	p.stampOrphans()
	p.keepPods()
	return p.actions()
}

// claim is a backing PVC as the plan goes along.
type claim struct {
	BackingPVC
	node   string    // assignment, as planned so far
	orphan bool      // its node is not selected
	since  time.Time // orphaned since (now if not yet stamped)
}

type planner struct {
	cfg     Config
	now     time.Time
	newName func() string

	exists   map[string]bool
	selected map[string]bool
	nodes    []string // selected nodes, by name

	claims []*claim // by name; PVCs being deleted are left out
	byName map[string]*claim
	taken  map[string]bool // every PVC name, new and being deleted too
	pods   map[string][]PoolPod
	auto   int

	// settled is rule 5: no pool pod terminating, and every assigned PVC's
	// pool pod Running. Without it no rebalance or adoption starts.
	settled bool
	// moved is true once this pass has reassigned a PVC, which puts a move
	// in flight as surely as a terminating pod would.
	moved bool

	newPVCs, meta, deletes, creates, warns []Action
}

func newPlanner(cfg Config, s State, now time.Time, newName func() string) *planner {
	sel := cfg.NodeSelector
	if sel == nil {
		sel = labels.Everything()
	}
	p := &planner{
		cfg: cfg, now: now, newName: newName,
		exists: map[string]bool{}, selected: map[string]bool{},
		byName: map[string]*claim{}, taken: map[string]bool{},
		pods: map[string][]PoolPod{},
	}
	for _, n := range s.Nodes {
		p.exists[n.Name] = true
		if sel.Matches(labels.Set(n.Labels)) {
			p.selected[n.Name] = true
			p.nodes = append(p.nodes, n.Name)
		}
	}
	sort.Strings(p.nodes)
	for _, pvc := range s.PVCs {
		p.taken[pvc.Name] = true
		if pvc.Auto {
			// A PVC being deleted still counts until it is gone: the cap
			// is on what exists.
			p.auto++
		}
		if pvc.Deleting {
			continue
		}
		c := &claim{BackingPVC: pvc, node: pvc.Node}
		p.claims = append(p.claims, c)
		p.byName[pvc.Name] = c
	}
	sort.Slice(p.claims, func(i, j int) bool { return p.claims[i].Name < p.claims[j].Name })
	for _, pod := range s.Pods {
		p.pods[pod.Pool] = append(p.pods[pod.Pool], pod)
	}
	for _, pods := range p.pods {
		sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	}
	p.settled = p.isSettled()
	return p
}

func (p *planner) isSettled() bool {
	for _, pods := range p.pods {
		for _, pod := range pods {
			if pod.Terminating {
				return false
			}
		}
	}
	for _, c := range p.claims {
		if !p.selected[c.node] {
			continue
		}
		running := false
		for _, pod := range p.pods[c.Name] {
			running = running || (pod.Node == c.node && pod.Running)
		}
		if !running {
			return false
		}
	}
	return true
}

// noticeOrphans is rule 2's first half: a PVC whose node is selected again
// loses its stamp; any other is an orphan.
func (p *planner) noticeOrphans() {
	for _, c := range p.claims {
		if p.selected[c.node] {
			if !c.OrphanedAt.IsZero() || c.BadStamp {
				p.meta = append(p.meta, Action{Kind: ClearOrphaned, PVC: c.Name, Node: c.node,
					Why: "node of orphaned backing PVC is back; keeping the PVC there"})
			}
			continue
		}
		c.orphan = true
		c.since = c.OrphanedAt
		if c.since.IsZero() {
			c.since = p.now
		}
	}
}

// fillNodes is rule 3: each selected node without a pool gets an orphan, a
// pool moved off a node that has several, or a new PVC, in that order.
func (p *planner) fillNodes() {
	for _, node := range p.nodes {
		if p.count(node) > 0 {
			continue
		}
		if c := p.oldestOrphan(); c != nil {
			// Node replacement: the same PVC, so the same pool, comes
			// back, whether or not the grace period is over.
			p.assign(c, node, "re-attaching orphaned backing PVC to a node without a pool")
			continue
		}
		if donor := p.busiestNode(); donor != "" {
			if p.settled && !p.moved {
				c := p.claimsOn(donor)
				p.assign(c[len(c)-1], node, "rebalancing: moving an extra pool off a node that holds several onto a node without one")
			}
			// Otherwise this node waits for the move in flight to finish;
			// a new PVC now would leave the extra pool where it is.
			continue
		}
		if p.auto < p.cfg.MaxAutoPVCs {
			p.create(node)
			continue
		}
		p.warns = append(p.warns, Action{Kind: Warn, Node: node, Reason: ReasonCapReached,
			Why: fmt.Sprintf("no backing PVC created for node %s: the operator has already created %d, the %s cap set in its ConfigMap",
				node, p.auto, KeyMaxAutoPVCs)})
	}
}

// adoptOrphan is rule 4: an orphan past its grace period, with no node free
// to take it, becomes a second pool of the node with fewest. One at a time,
// and only when nothing else is moving (rule 5).
func (p *planner) adoptOrphan() {
	c := p.oldestOrphan()
	if c == nil || len(p.nodes) == 0 || !p.settled || p.moved {
		return
	}
	if p.now.Sub(c.since) < p.cfg.OrphanGrace {
		return
	}
	target := p.nodes[0]
	for _, n := range p.nodes[1:] {
		if p.count(n) < p.count(target) {
			target = n
		}
	}
	p.assign(c, target, "adopting orphaned backing PVC onto node")
}

// stampOrphans is rule 2's second half, for orphans this pass has not
// placed.
func (p *planner) stampOrphans() {
	for _, c := range p.claims {
		// A stamp that is no time is stamped afresh: it must neither make
		// the PVC adoptable at once nor keep it from ever being adopted.
		if c.orphan && (c.OrphanedAt.IsZero() || c.BadStamp) {
			p.meta = append(p.meta, Action{Kind: StampOrphaned, PVC: c.Name, Node: c.node, At: p.now,
				Why: "node of backing PVC is gone or not selected; marking the PVC orphaned"})
		}
	}
}

// keepPods is rule 6: exactly one pool pod per placed PVC, on its node, and
// never two pods of one pool at once, counting those still terminating.
func (p *planner) keepPods() {
	pools := make([]string, 0, len(p.pods))
	for pool := range p.pods {
		pools = append(pools, pool)
	}
	sort.Strings(pools)
	for _, pool := range pools {
		c := p.byName[pool]
		keep := p.keeper(c, p.pods[pool])
		for _, pod := range p.pods[pool] {
			if pod.Terminating || pod.Name == keep {
				continue
			}
			why := ""
			switch {
			case c == nil:
				why = "backing PVC of pool pod is gone or being deleted; deleting the pod"
			case !p.exists[pod.Node]:
				why = "node of pool pod is gone; deleting the pod"
			case pod.Node != c.node:
				why = "backing PVC is now assigned to another node; deleting the pool pod so the pool can move"
			case pod.Finished:
				why = "pool pod has stopped for good; deleting it so it is made again"
			default:
				why = "a second pool pod of one pool on the node; deleting it"
			}
			p.deletes = append(p.deletes, Action{Kind: DeletePod, Pod: pod.Name, PVC: pool, Node: pod.Node, Why: why})
		}
	}
	for _, c := range p.claims {
		if p.selected[c.node] && len(p.pods[c.Name]) == 0 {
			p.creates = append(p.creates, Action{Kind: CreatePod, PVC: c.Name, Node: c.node, Pod: PoolPodName(c.Name, c.node),
				Why: "creating pool pod to hold backing PVC on its node"})
		}
	}
}

// keeper names the one pod of c's pool that may stay: on c's node, which
// exists, and not stopped; a Running one before any other, since deleting
// it would take the pool away from its node.
func (p *planner) keeper(c *claim, pods []PoolPod) string {
	if c == nil {
		return ""
	}
	best := -1
	for i, pod := range pods {
		if pod.Terminating || pod.Finished || pod.Node != c.node || !p.exists[pod.Node] {
			continue
		}
		if best < 0 || (pod.Running && !pods[best].Running) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return pods[best].Name
}

func (p *planner) actions() []Action {
	var out []Action
	for _, group := range [][]Action{p.newPVCs, p.meta, p.deletes, p.creates, p.warns} {
		out = append(out, group...)
	}
	return out
}

func (p *planner) assign(c *claim, node, why string) {
	p.meta = append(p.meta, Action{Kind: AssignPVC, PVC: c.Name, From: c.node, Node: node, Why: why})
	c.node, c.orphan = node, false
	p.moved = true
}

func (p *planner) create(node string) {
	for range maxNameTries {
		name := p.newName()
		if p.taken[name] {
			continue
		}
		p.taken[name] = true
		p.auto++
		c := &claim{BackingPVC: BackingPVC{Name: name, Node: node, Auto: true}, node: node}
		p.claims = append(p.claims, c)
		p.byName[name] = c
		p.newPVCs = append(p.newPVCs, Action{Kind: CreatePVC, PVC: name, Node: node,
			Why: "creating backing PVC for a node without a pool"})
		return
	}
}

// count is how many pools node holds, as planned so far.
func (p *planner) count(node string) int { return len(p.claimsOn(node)) }

// claimsOn lists node's PVCs by name.
func (p *planner) claimsOn(node string) []*claim {
	var out []*claim
	for _, c := range p.claims {
		if c.node == node {
			out = append(out, c)
		}
	}
	return out
}

// busiestNode is the selected node holding the most pools, if it holds two
// or more; ties go to the first by name.
func (p *planner) busiestNode() string {
	best, most := "", 1
	for _, n := range p.nodes {
		if k := p.count(n); k > most {
			best, most = n, k
		}
	}
	return best
}

// oldestOrphan is the orphan stamped first (ties by name), or nil.
func (p *planner) oldestOrphan() *claim {
	var best *claim
	for _, c := range p.claims {
		if c.orphan && (best == nil || c.since.Before(best.since)) {
			best = c
		}
	}
	return best
}
