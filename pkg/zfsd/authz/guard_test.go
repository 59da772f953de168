package authz_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/authz"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// fakeView holds a few records, or fails every read with err.
type fakeView struct {
	dots  map[string]cluster.Dot
	pools map[string]cluster.Pool
	err   error
}

func (v fakeView) GetDot(_ context.Context, id string) (cluster.Dot, error) {
	if v.err != nil {
		return cluster.Dot{}, v.err
	}
	d, ok := v.dots[id]
	if !ok {
		return d, cluster.ErrNotFound
	}
	return d, nil
}

func (v fakeView) GetPool(_ context.Context, name string) (cluster.Pool, error) {
	if v.err != nil {
		return cluster.Pool{}, v.err
	}
	p, ok := v.pools[name]
	if !ok {
		return p, cluster.ErrNotFound
	}
	return p, nil
}

const (
	addrA = "10.0.0.1:7455"
	addrB = "10.0.0.2:7455"
)

// theView: node a holds pools pa and pa2, node b pools pb and pb2
// (PV-per-node, after adoptions), pool gone was released. Dot moving is mastered on
// pa and claimed for pb; settled is on pa with no claim; orphan's master
// is the released pool; tomb is a tombstone without a master.
func theView() fakeView {
	return fakeView{
		pools: map[string]cluster.Pool{
			"pa":   {Name: "pa", Node: "a", Address: addrA},
			"pa2":  {Name: "pa2", Node: "a", Address: addrA},
			"pb":   {Name: "pb", Node: "b", Address: addrB},
			"pb2":  {Name: "pb2", Node: "b", Address: addrB},
			"gone": {Name: "gone"},
		},
		dots: map[string]cluster.Dot{
			"moving":  {ID: "moving", Master: "pa", Replicas: []cluster.Replica{{Pool: "pb"}}, Moving: "pb"},
			"settled": {ID: "settled", Master: "pa", Replicas: []cluster.Replica{{Pool: "pb"}}},
			"orphan":  {ID: "orphan", Master: "gone"},
			"tomb":    {ID: "tomb", Deleted: true, Replicas: []cluster.Replica{{Pool: "pb"}}},
		},
	}
}

// Callers, as the peer a call arrives from.
func tlsPeer(cn string) context.Context {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}})
}

var (
	controller = func() context.Context { return tlsPeer("controller") }
	nodeA      = func() context.Context { return tlsPeer("node:a") }
	nodeB      = func() context.Context { return tlsPeer("node:b") }
	nodeC      = func() context.Context { return tlsPeer("node:c") }
	local      = func() context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UnixAddr{Name: "@", Net: "unix"}})
	}
	stranger = func() context.Context { return tlsPeer("peer") }
	// unverified presented a certificate that TLS did not verify.
	unverified = func() context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: "controller"}}}}}})
	}
)

func forPool(ctx context.Context, pool string) context.Context {
	return metadata.NewIncomingContext(ctx, metadata.Pairs(remote.PoolHeader, pool))
}

func handoff(dot, pool, addr string) *api.PushRequest {
	return &api.PushRequest{DotId: dot, TargetPool: pool, TargetAddress: addr}
}

func receive(dot string) *api.ReceiveChunk {
	return &api.ReceiveChunk{Header: &api.ReceiveHeader{DotId: dot}}
}

const service = "/dotmesh.zfsd.v1.Zfsd/"

// matrixCase is one cell of the matrix: a caller makes a call.
type matrixCase struct {
	name   string
	method string // an RPC of the Zfsd service, or a full method name
	caller context.Context
	req    any
	view   authz.View // theView() when nil
	pools  []string   // this zfsd's pools, for calls that name none
	want   codes.Code // OK: the handler ran
	reason string     // a piece of the refusal's message
}

// cases is the matrix of docs/design.md, row by row.
func cases() []matrixCase {
	dot := &api.DotRef{Id: "settled"}
	var out []matrixCase
	// Reads: any cluster member.
	for _, m := range []struct {
		method string
		req    any
	}{
		{"Info", &api.InfoRequest{}}, {"ListDots", &api.ListRequest{}}, {"GetDot", dot}, {"GetDotByName", &api.NameRef{Name: "n"}},
		{"ListCommits", &api.ListRequest{}}, {"GetCommit", &api.CommitRef{Id: "settled@c1"}}, {"GetCommitByName", &api.NameRef{Name: "c"}},
	} {
		out = append(out,
			matrixCase{name: m.method + " by the controller", method: m.method, caller: controller(), req: m.req},
			matrixCase{name: m.method + " by a node", method: m.method, caller: nodeC(), req: m.req},
			matrixCase{name: m.method + " by the local host", method: m.method, caller: local(), req: m.req},
			matrixCase{name: m.method + " by a CA certificate of no known role", method: m.method, caller: stranger(), req: m.req,
				want: codes.PermissionDenied, reason: `"peer" names neither`},
			matrixCase{name: m.method + " by a peer with no verified certificate", method: m.method, caller: unverified(), req: m.req,
				want: codes.Unauthenticated},
		)
	}
	// Changes: the controller only, even the master's own node is refused.
	for _, m := range []struct {
		method string
		req    any
	}{
		{"CreateDot", &api.DotSpec{Id: "new"}}, {"DeleteDot", dot}, {"ResizeDot", &api.ResizeRequest{Id: "settled", Capacity: 1 << 30}},
		{"CreateCommit", &api.CommitRequest{DotId: "settled"}}, {"DeleteCommit", &api.CommitRef{Id: "settled@c1"}},
		{"Push", handoff("settled", "pa", addrA)},
	} {
		out = append(out,
			matrixCase{name: m.method + " by the controller", method: m.method, caller: controller(), req: m.req},
			matrixCase{name: m.method + " by the local host", method: m.method, caller: local(), req: m.req},
			matrixCase{name: m.method + " by the master's node", method: m.method, caller: nodeA(), req: m.req,
				want: codes.PermissionDenied, reason: "only the controller may"},
			matrixCase{name: m.method + " by another node", method: m.method, caller: nodeB(), req: m.req,
				want: codes.PermissionDenied, reason: "node:b may not call " + m.method},
		)
	}
	// Mounts: the local host only.
	for _, m := range []string{"MountDot", "UnmountDot"} {
		out = append(out,
			matrixCase{name: m + " by the local host", method: m, caller: local(), req: dot},
			matrixCase{name: m + " by the controller", method: m, caller: controller(), req: dot,
				want: codes.PermissionDenied, reason: "only the local host"},
			matrixCase{name: m + " by the master's node", method: m, caller: nodeA(), req: dot,
				want: codes.PermissionDenied, reason: "only the local host"},
		)
	}
	// The receiving side of a push.
	for _, m := range []string{"Snapshots", "DropCopy"} {
		out = append(out,
			matrixCase{name: m + " by the controller", method: m, caller: controller(), req: dot},
			matrixCase{name: m + " by the local host", method: m, caller: local(), req: dot},
			matrixCase{name: m + " by the master's node", method: m, caller: forPool(nodeA(), "pb"), req: dot},
			matrixCase{name: m + " by a replica's node", method: m, caller: nodeB(), req: dot,
				want: codes.PermissionDenied, reason: `pool pa, held by node "a"`},
			matrixCase{name: m + " of a dot the view does not hold", method: m, caller: nodeA(), req: &api.DotRef{Id: "unknown"},
				want: codes.PermissionDenied, reason: "not in the cluster view"},
			matrixCase{name: m + " of a tombstone with no master", method: m, caller: nodeB(), req: &api.DotRef{Id: "tomb"},
				want: codes.PermissionDenied, reason: "no master"},
			matrixCase{name: m + " of a dot whose master pool was released", method: m, caller: nodeA(), req: &api.DotRef{Id: "orphan"},
				want: codes.PermissionDenied, reason: `held by node ""`},
			matrixCase{name: m + " naming no dot", method: m, caller: nodeA(), req: &api.DotRef{},
				want: codes.PermissionDenied, reason: "names no dot"},
			matrixCase{name: m + " when the view cannot be read", method: m, caller: nodeA(), req: dot,
				view: fakeView{err: errors.New("connection refused")}, want: codes.Unavailable},
			matrixCase{name: m + " on a zfsd with no view", method: m, caller: nodeA(), req: dot,
				view: noView{}, want: codes.Unavailable},
		)
	}
	out = append(out,
		matrixCase{name: "Receive by the master's node", method: "Receive", caller: forPool(nodeA(), "pb"), req: receive("settled")},
		matrixCase{name: "Receive by the master's node into another pool of its own (a handoff between its pools)", method: "Receive", caller: forPool(nodeA(), "pa2"), req: receive("moving")},
		matrixCase{name: "Receive by the local host", method: "Receive", caller: local(), req: receive("settled")},
		matrixCase{name: "Receive by a replica's node", method: "Receive", caller: nodeB(), req: receive("settled"),
			want: codes.PermissionDenied, reason: "the node of the dot's master pool"},
		matrixCase{name: "Receive by the controller", method: "Receive", caller: controller(), req: receive("settled"),
			want: codes.PermissionDenied, reason: "makes it the controller"},
		matrixCase{name: "Receive with no header", method: "Receive", caller: nodeA(), req: &api.ReceiveChunk{Data: []byte("x")},
			want: codes.PermissionDenied, reason: "names no dot"},
		matrixCase{name: "Receive when the view cannot be read", method: "Receive", caller: nodeA(), req: receive("settled"),
			view: fakeView{err: context.DeadlineExceeded}, want: codes.Unavailable},
	)
	out = append(out,
		matrixCase{name: "Handoff by the claim's node", method: "Handoff", caller: forPool(nodeB(), "pa"), req: handoff("moving", "pb", addrB)},
		matrixCase{name: "Handoff naming no pool, of a zfsd with only the master", method: "Handoff", caller: nodeB(),
			req: handoff("moving", "pb", addrB), pools: []string{"pa"}},
		matrixCase{name: "Handoff by the local host", method: "Handoff", caller: local(), req: handoff("moving", "pb", addrB)},
		matrixCase{name: "Handoff by a node without the claim", method: "Handoff", caller: forPool(nodeC(), "pa"), req: handoff("moving", "pb", addrB),
			want: codes.PermissionDenied, reason: `claimed for pool pb, held by node "b"`},
		matrixCase{name: "Handoff by the master's node", method: "Handoff", caller: forPool(nodeA(), "pa"), req: handoff("moving", "pa", addrA),
			want: codes.PermissionDenied, reason: `held by node "b"`},
		matrixCase{name: "Handoff to a pool other than the claimed one", method: "Handoff", caller: forPool(nodeB(), "pa"), req: handoff("moving", "pb2", addrB),
			want: codes.PermissionDenied, reason: `not pool "pb2"`},
		matrixCase{name: "Handoff to an address other than the claimed pool's", method: "Handoff", caller: forPool(nodeB(), "pa"), req: handoff("moving", "pb", "10.9.9.9:7455"),
			want: codes.PermissionDenied, reason: "at 10.9.9.9:7455"},
		matrixCase{name: "Handoff asked of a pool that is not the master", method: "Handoff", caller: forPool(nodeB(), "pb2"), req: handoff("moving", "pb", addrB),
			want: codes.PermissionDenied, reason: `this call is for pool "pb2"`},
		matrixCase{name: "Handoff naming no pool, of a zfsd with two", method: "Handoff", caller: nodeB(), req: handoff("moving", "pb", addrB),
			pools: []string{"pa", "px"}, want: codes.PermissionDenied, reason: `this call is for pool ""`},
		matrixCase{name: "Handoff of a dot nobody claimed", method: "Handoff", caller: forPool(nodeB(), "pa"), req: handoff("settled", "pb", addrB),
			want: codes.PermissionDenied, reason: "no node has claimed"},
		matrixCase{name: "Handoff by the controller", method: "Handoff", caller: controller(), req: handoff("moving", "pb", addrB),
			want: codes.PermissionDenied, reason: "only the node whose pool holds the dot's move claim"},
		matrixCase{name: "Handoff when the view cannot be read", method: "Handoff", caller: forPool(nodeB(), "pa"), req: handoff("moving", "pb", addrB),
			view: fakeView{err: errors.New("etcd timeout")}, want: codes.Unavailable},
	)
	// Whatever the matrix does not name.
	out = append(out,
		matrixCase{name: "an RPC not in the matrix, by the controller", method: "Format", caller: controller(), req: dot,
			want: codes.PermissionDenied, reason: "not in the matrix"},
		matrixCase{name: "an RPC not in the matrix, by the local host", method: "Format", caller: local(), req: dot},
		matrixCase{name: "another service, by the controller", method: "/other.v1.Admin/Info", caller: controller(), req: dot,
			want: codes.PermissionDenied},
	)
	return out
}

// noView stands for a Guard made without one.
type noView struct{}

func (noView) GetDot(context.Context, string) (cluster.Dot, error)   { panic("not used") }
func (noView) GetPool(context.Context, string) (cluster.Pool, error) { panic("not used") }

func TestMatrix(t *testing.T) {
	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			view := tc.view
			if view == nil {
				view = theView()
			}
			cfg := authz.Config{View: view, Pools: func() []string { return tc.pools }}
			if _, ok := view.(noView); ok {
				cfg.View = nil
			}
			ran, err := invoke(tc.caller, authz.New(cfg), tc.method, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if ran != (tc.want == codes.OK) {
				t.Fatalf("handler ran: %v, with code %v", ran, tc.want)
			}
			if tc.reason != "" && !strings.Contains(status.Convert(err).Message(), tc.reason) {
				t.Fatalf("refusal %q does not say %q", status.Convert(err).Message(), tc.reason)
			}
		})
	}
}

// Every RPC of the service has cells that allow it and cells that refuse
// it, and a row in docs/design.md.
func TestMatrixCoversEveryRPC(t *testing.T) {
	allowed, refused := map[string]bool{}, map[string]bool{}
	for _, tc := range cases() {
		if tc.want == codes.OK {
			allowed[tc.method] = true
		} else {
			refused[tc.method] = true
		}
	}
	doc, err := os.ReadFile("../../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, m := range api.Zfsd_ServiceDesc.Methods {
		methods = append(methods, m.MethodName)
	}
	for _, s := range api.Zfsd_ServiceDesc.Streams {
		methods = append(methods, s.StreamName)
	}
	for _, m := range methods {
		if !allowed[m] || !refused[m] {
			t.Errorf("%s: the matrix test has no case that allows it (%v) or none that refuses it (%v)", m, allowed[m], refused[m])
		}
		if !strings.Contains(string(doc), "| `"+m+"`") {
			t.Errorf("%s: docs/design.md has no row for it", m)
		}
	}
}

// invoke runs a call through the guard as gRPC would, unary or stream,
// and says whether the handler got past the guard.
func invoke(ctx context.Context, g *authz.Guard, method string, req any) (bool, error) {
	full := method
	if !strings.HasPrefix(method, "/") {
		full = service + method
	}
	for _, s := range api.Zfsd_ServiceDesc.Streams {
		if s.StreamName == method {
			ran := false
			ss := &fakeStream{ctx: ctx, first: req}
			err := g.Stream(nil, ss, &grpc.StreamServerInfo{FullMethod: full, IsClientStream: true},
				func(_ any, ss grpc.ServerStream) error {
					if err := ss.RecvMsg(new(api.ReceiveChunk)); err != nil {
						return err
					}
					ran = true
					return ss.SendMsg(&api.ReceiveReply{})
				})
			return ran, err
		}
	}
	ran := false
	_, err := g.Unary(ctx, req, &grpc.UnaryServerInfo{FullMethod: full}, func(context.Context, any) (any, error) {
		ran = true
		return &api.Empty{}, nil
	})
	return ran, err
}

// fakeStream delivers one request message.
type fakeStream struct {
	grpc.ServerStream
	ctx   context.Context
	first any
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func (s *fakeStream) RecvMsg(m any) error {
	chunk, ok := s.first.(*api.ReceiveChunk)
	if !ok {
		return status.Error(codes.Internal, "fake stream: no request")
	}
	*m.(*api.ReceiveChunk) = api.ReceiveChunk{Header: chunk.GetHeader(), Data: chunk.GetData()}
	return nil
}

func (s *fakeStream) SendMsg(any) error { return nil }

// A stream handler that replies before reading the request is refused.
func TestStreamRepliesOnlyAfterTheDecision(t *testing.T) {
	g := authz.New(authz.Config{View: theView()})
	ss := &fakeStream{ctx: nodeA(), first: receive("settled")}
	err := g.Stream(nil, ss, &grpc.StreamServerInfo{FullMethod: service + "Receive", IsClientStream: true},
		func(_ any, ss grpc.ServerStream) error { return ss.SendMsg(&api.ReceiveReply{}) })
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a reply before the request: %v, want PermissionDenied", err)
	}
}
