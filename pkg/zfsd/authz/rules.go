package authz

import (
	"context"
	"fmt"
	"strings"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// rule is one row of the matrix: who may make a call, and how that is
// checked. docs/design.md has the same table for people.
type rule struct {
	// who says in words who may call; refusals quote it.
	who string
	// roles may call outright. Local is in every row: see FromContext.
	roles []Role
	// scoped, when set, lets a node call too if it passes this check of
	// the call against the cluster view. It returns a denial, or an
	// Unavailable status when the view cannot be read.
	scoped func(g *Guard, ctx context.Context, c call) error
}

// call is what a rule judges.
type call struct {
	id     Identity
	method string // the RPC's name, without the service
	dot    string // the dot the request names, "" for none
	req    any
}

// matrix is every RPC of the Zfsd service and its rule. A method missing
// here is refused to everyone but the local host.
func matrix() map[string]rule {
	member := rule{who: "any cluster member", roles: []Role{Local, Controller, Node}}
	controller := rule{who: "the controller", roles: []Role{Local, Controller}}
	local := rule{who: "the local host (a dot is mounted by its own node's plugin, never over the network)", roles: []Role{Local}}
	return map[string]rule{
		"Info":            member,
		"ListDots":        member,
		"GetDot":          member,
		"GetDotByName":    member,
		"ListCommits":     member,
		"GetCommit":       member,
		"GetCommitByName": member,

		"CreateDot":    controller,
		"DeleteDot":    controller,
		"ResizeDot":    controller,
		"CreateCommit": controller,
		"DeleteCommit": controller,
		// Push reads a dot out to any address: only the controller, which
		// keeps the replica sets, asks for one.
		"Push": controller,

		"MountDot":   local,
		"UnmountDot": local,

		// The receiving side of a push: the sender asks what this pool
		// holds, drops a diverged copy, and streams. The controller also
		// lists snapshots (rebuilding the view) and drops copies (replicas
		// of a deleted dot); it never streams.
		"Snapshots": {who: "the controller, or the node of the dot's master pool", roles: []Role{Local, Controller}, scoped: (*Guard).holdsMaster},
		"DropCopy":  {who: "the controller, or the node of the dot's master pool", roles: []Role{Local, Controller}, scoped: (*Guard).holdsMaster},
		"Receive":   {who: "the node of the dot's master pool", roles: []Role{Local}, scoped: (*Guard).holdsMaster},

		"Handoff": {who: "the node whose pool holds the dot's move claim", roles: []Role{Local}, scoped: (*Guard).holdsMoveClaim},
	}
}

// denial is a rule's reason to refuse; it becomes PermissionDenied.
type denial string

func (d denial) Error() string { return string(d) }

func deny(format string, args ...any) error { return denial(fmt.Sprintf(format, args...)) }

// holdsMaster: the caller is the node that holds the pool which is the
// dot's master, as the view has it. That node is the only sender of the
// dot's streams: pushes to replicas, and a handoff to a new master (whose
// record flips only after the stream).
func (g *Guard) holdsMaster(ctx context.Context, c call) error {
	rec, err := g.dot(ctx, c.dot)
	if err != nil {
		return err
	}
	_, err = g.callersPool(ctx, c, rec.Master,
		fmt.Sprintf("dot %s has no master in the cluster view", c.dot),
		fmt.Sprintf("the master of dot %s is", c.dot))
	return err
}

// holdsMoveClaim: a handoff is asked for by the node that claimed the
// move in the view (mesh's handoff: Moving names the pool it takes the
// dot to), to that pool at the address the view has for it, and of the
// pool that is the dot's master now.
func (g *Guard) holdsMoveClaim(ctx context.Context, c call) error {
	req, ok := c.req.(*api.PushRequest)
	if !ok {
		return deny("%s without a push request", c.method)
	}
	rec, err := g.dot(ctx, c.dot)
	if err != nil {
		return err
	}
	p, err := g.callersPool(ctx, c, rec.Moving,
		fmt.Sprintf("no node has claimed a move of dot %s", c.dot),
		fmt.Sprintf("the move of dot %s is claimed for", c.dot))
	if err != nil {
		return err
	}
	if req.GetTargetPool() != rec.Moving || req.GetTargetAddress() != p.Address {
		return deny("the move of dot %s is claimed for pool %s at %s, not pool %q at %s", c.dot, rec.Moving, p.Address, req.GetTargetPool(), req.GetTargetAddress())
	}
	if serving := g.servingPool(ctx); serving != rec.Master {
		return deny("dot %s's master is pool %s; this call is for pool %q", c.dot, rec.Master, serving)
	}
	return nil
}

// callersPool reads the pool a dot's record names, and denies unless the
// view puts it on the caller's node: with none when the record names no
// pool, and otherwise with what says whose pool it is.
func (g *Guard) callersPool(ctx context.Context, c call, pool, none, what string) (cluster.Pool, error) {
	if pool == "" {
		return cluster.Pool{}, deny("%s", none)
	}
	p, err := g.pool(ctx, pool)
	if err != nil {
		return p, err
	}
	if p.Node != c.id.Node {
		return p, deny("%s pool %s, held by node %q", what, pool, p.Node)
	}
	return p, nil
}

// dotOf is the dot a request names, "" for none.
func dotOf(req any) string {
	switch r := req.(type) {
	case *api.DotRef:
		return r.GetId()
	case *api.DotSpec:
		return r.GetId()
	case *api.ResizeRequest:
		return r.GetId()
	case *api.CommitRequest:
		return r.GetDotId()
	case *api.CommitRef:
		dot, _, _ := strings.Cut(r.GetId(), "@")
		return dot
	case *api.PushRequest:
		return r.GetDotId()
	case *api.ReceiveChunk:
		return r.GetHeader().GetDotId()
	}
	return ""
}
