// Package authz decides every call a zfsd serves by who makes it: the
// caller's identity comes from its verified certificate (or the unix
// socket), and one table, the matrix, says which identity may make which
// call and what is checked against the cluster view. docs/design.md has
// the table and its reasons.
package authz

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// View is what the rules read of the cluster view (cluster.View has it).
type View interface {
	GetDot(ctx context.Context, id string) (cluster.Dot, error)
	GetPool(ctx context.Context, name string) (cluster.Pool, error)
}

// Config wires a Guard.
type Config struct {
	// View is the cluster view; nil where there is none (a zfsd serving
	// only its unix socket), and then a node's scoped call is Unavailable.
	View View
	// Pools names the pools this zfsd serves: a call that names none (no
	// remote.PoolHeader) is for the only one. Nil serves none.
	Pools func() []string
	// LookupTimeout bounds the view reads of one decision (default 5s), so
	// a view that hangs refuses the call instead of holding it.
	LookupTimeout time.Duration
}

// Guard is the one interceptor in front of a zfsd's API.
//
// Only the calls of a node that a scoped rule covers read the view: two
// reads (the dot's record, then a pool's) for each Snapshots, DropCopy,
// Receive or Handoff, beside a stream that costs far more. Nothing is
// cached: a cached view would let a node that lost a dot's master keep
// streaming it.
type Guard struct {
	cfg   Config
	rules map[string]rule
}

// New returns a Guard.
func New(cfg Config) *Guard {
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = 5 * time.Second
	}
	return &Guard{cfg: cfg, rules: matrix()}
}

// PoolNames lists the pools of set, for Config.Pools.
func PoolNames(set *zfsd.Set) func() []string {
	return func() []string {
		var names []string
		for _, p := range set.List() {
			names = append(names, p.Name())
		}
		return names
	}
}

// Unary is the unary server interceptor.
func (g *Guard) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := g.authorize(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor. A rule that needs the request
// (a Receive names its dot in its first message) is decided when the
// handler reads that message; until then the handler may not send.
func (g *Guard) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	r, known := g.rule(info.FullMethod)
	if !known || r.scoped == nil {
		if err := g.authorize(ss.Context(), info.FullMethod, nil); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return handler(srv, &guardedStream{ServerStream: ss, decide: func(m any) error {
		return g.authorize(ss.Context(), info.FullMethod, m)
	}})
}

// guardedStream decides its call on the first message it receives.
type guardedStream struct {
	grpc.ServerStream
	decide  func(m any) error
	decided bool
	refused error
}

func (s *guardedStream) RecvMsg(m any) error {
	if s.refused != nil {
		return s.refused
	}
	if err := s.ServerStream.RecvMsg(m); err != nil || s.decided {
		return err
	}
	s.decided = true
	s.refused = s.decide(m)
	return s.refused
}

func (s *guardedStream) SendMsg(m any) error {
	if s.refused != nil {
		return s.refused
	}
	if !s.decided {
		return status.Error(codes.PermissionDenied, "zfsd: a reply before the call's request was authorized")
	}
	return s.ServerStream.SendMsg(m)
}

// rule is the matrix's row for a full method name.
func (g *Guard) rule(fullMethod string) (rule, bool) {
	name, ok := strings.CutPrefix(fullMethod, "/"+api.Zfsd_ServiceDesc.ServiceName+"/")
	if !ok {
		return rule{}, false
	}
	r, ok := g.rules[name]
	return r, ok
}

// authorize decides one call. A refusal is PermissionDenied (the caller
// may not), Unauthenticated (no verified identity) or Unavailable (the
// view could not be read: never allowed on an unanswered question), and
// is logged.
func (g *Guard) authorize(ctx context.Context, fullMethod string, req any) error {
	method := fullMethod[strings.LastIndex(fullMethod, "/")+1:]
	dot := dotOf(req)
	id, err := FromContext(ctx)
	if err != nil {
		klog.InfoS("zfsd call refused", "caller", "unidentified", "method", method, "dot", dot, "err", err)
		return err
	}
	r, known := g.rule(fullMethod)
	if !known {
		// Everything on the local socket; nothing unknown from the network.
		r = rule{who: "the local host (the call is not in the matrix)", roles: []Role{Local}}
	}
	c := call{id: id, method: method, dot: dot, req: req}
	err = g.decide(ctx, r, c)
	if err == nil {
		return nil
	}
	var d denial
	if errors.As(err, &d) {
		on := ""
		if dot != "" {
			on = " on dot " + dot
		}
		err = status.Errorf(codes.PermissionDenied, "zfsd: %s may not call %s%s: only %s may (%s)", id, method, on, r.who, d)
	}
	klog.InfoS("zfsd call refused", "caller", id.String(), "method", method, "dot", dot, "rule", r.who, "err", err)
	return err
}

// decide applies a rule to a call: nil allows it.
func (g *Guard) decide(ctx context.Context, r rule, c call) error {
	if slices.Contains(r.roles, c.id.Role) {
		return nil
	}
	if r.scoped == nil || c.id.Role != Node {
		return deny("its certificate makes it %s", roleName(c.id.Role))
	}
	if c.dot == "" {
		return deny("the call names no dot")
	}
	if g.cfg.View == nil {
		return status.Errorf(codes.Unavailable, "zfsd: %s on dot %s: this zfsd has no cluster view to check %s against", c.method, c.dot, c.id)
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.LookupTimeout)
	defer cancel()
	return r.scoped(g, ctx, c)
}

func roleName(r Role) string {
	switch r {
	case Controller:
		return "the controller"
	case Node:
		return "a node"
	}
	return "the local host"
}

// dot reads a dot's record: a dot the view does not hold is a denial, a
// view that does not answer Unavailable.
func (g *Guard) dot(ctx context.Context, id string) (cluster.Dot, error) {
	return fromView(ctx, "dot", id, g.cfg.View.GetDot)
}

// pool reads a pool's record, as dot does a dot's.
func (g *Guard) pool(ctx context.Context, name string) (cluster.Pool, error) {
	return fromView(ctx, "pool", name, g.cfg.View.GetPool)
}

func fromView[T any](ctx context.Context, kind, name string, get func(context.Context, string) (T, error)) (T, error) {
	rec, err := get(ctx, name)
	if errors.Is(err, cluster.ErrNotFound) {
		return rec, deny("%s %s is not in the cluster view", kind, name)
	}
	if err != nil {
		return rec, status.Errorf(codes.Unavailable, "zfsd: reading %s %s from the cluster view to authorize the call: %v", kind, name, err)
	}
	return rec, nil
}

// servingPool is the pool a call is for, as remote.Server routes it: the
// one its metadata names, else this zfsd's only pool; "" when neither.
func (g *Guard) servingPool(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(remote.PoolHeader); len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	if g.cfg.Pools != nil {
		if names := g.cfg.Pools(); len(names) == 1 {
			return names[0]
		}
	}
	return ""
}
