package remote

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// Dialer connects to zfsd APIs: over TCP with mutual TLS when it has an
// identity, and keeps one connection per address.
type Dialer struct {
	id    *pki.Identity // nil only for unix sockets
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewDialer returns a Dialer presenting id (nil: plaintext, unix sockets only).
func NewDialer(id *pki.Identity) *Dialer {
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

// ServerOptions are the gRPC options a zfsd serves with: mutual TLS when id
// is set, and messages large enough for stream chunks.
func ServerOptions(id *pki.Identity) []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(16 << 20), grpc.MaxSendMsgSize(16 << 20),
		grpc.ConnectionTimeout(10 * time.Second)}
	if id != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(id.ServerTLS())))
	}
	return opts
}
