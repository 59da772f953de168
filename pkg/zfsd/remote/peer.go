package remote

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// Dialer connects to zfsd APIs: over TCP with mutual TLS when it has an
// identity, and keeps one connection per address.
type Dialer struct {
	id    pki.Source // nil only for unix sockets
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewDialer returns a Dialer presenting id (nil: plaintext, unix sockets
// only). A renewed identity (pki.Holder) is presented from the next
// connection on; connections already made keep theirs.
func NewDialer(id pki.Source) *Dialer {
	return &Dialer{id: id, conns: map[string]*grpc.ClientConn{}}
}

// Client returns a client for the named pool of the zfsd at address
// (host:port, or unix:///path). An empty pool means that zfsd's only pool.
// One connection per address serves all its pools.
func (d *Dialer) Client(address, pool string) (*Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.conns[address]; ok {
		return NewPoolClient(c, pool), nil
	}
	creds := insecure.NewCredentials()
	if d.id != nil {
		creds = credentials.NewTLS(d.id.ClientTLS())
	} else if len(address) < 7 || address[:7] != "unix://" {
		return nil, fmt.Errorf("zfsd at %s: refusing to dial TCP without a certificate", address)
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("zfsd at %s: %w", address, err)
	}
	d.conns[address] = conn
	return NewPoolClient(conn, pool), nil
}

// Close closes every connection.
func (d *Dialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for a, c := range d.conns {
		c.Close()
		delete(d.conns, a)
	}
}

// Authorizer decides every call a zfsd serves, as gRPC interceptors
// (pkg/zfsd/authz's Guard).
type Authorizer interface {
	Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error)
	Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error
}

// ServerOptions are the gRPC options a zfsd serves with: mutual TLS when id
// is set, every call decided by auth, and messages large enough for stream
// chunks. With TLS and no auth every call is refused: a zfsd on the
// network never serves a caller it has not judged. Without either (a unix
// socket in tests) every call is served.
func ServerOptions(id pki.Source, auth Authorizer) []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(16 << 20), grpc.MaxSendMsgSize(16 << 20),
		grpc.ConnectionTimeout(10 * time.Second)}
	if id != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(id.ServerTLS())))
		if auth == nil {
			auth = refuseAll{}
		}
	}
	if auth != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(auth.Unary), grpc.ChainStreamInterceptor(auth.Stream))
	}
	return opts
}

// refuseAll is the authorizer of a TLS zfsd given none.
type refuseAll struct{}

func (refuseAll) Unary(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
	return nil, status.Error(codes.PermissionDenied, "zfsd: this server has no authorizer; it refuses every call")
}

func (refuseAll) Stream(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
	return status.Error(codes.PermissionDenied, "zfsd: this server has no authorizer; it refuses every call")
}
