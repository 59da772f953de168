package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/authz"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// fakeZfsd stands for node a's zfsd: the dots its pool holds, and what
// pushes and receives reached it.
type fakeZfsd struct {
	api.UnimplementedZfsdServer
	mu       sync.Mutex
	dots     map[string]bool
	pushed   []string
	received []string
}

func (f *fakeZfsd) Info(context.Context, *api.InfoRequest) (*api.PoolInfo, error) {
	return &api.PoolInfo{Name: "pa", Node: "a"}, nil
}

func (f *fakeZfsd) GetDot(_ context.Context, r *api.DotRef) (*api.Dot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.dots[r.GetId()] {
		return nil, status.Errorf(codes.NotFound, "dot %s", r.GetId())
	}
	return &api.Dot{Id: r.GetId(), Pool: "pa"}, nil
}

func (f *fakeZfsd) DeleteDot(_ context.Context, r *api.DotRef) (*api.Empty, error) { return f.drop(r) }

func (f *fakeZfsd) DropCopy(_ context.Context, r *api.DotRef) (*api.Empty, error) { return f.drop(r) }

func (f *fakeZfsd) drop(r *api.DotRef) (*api.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.dots, r.GetId())
	return &api.Empty{}, nil
}

func (f *fakeZfsd) Push(_ context.Context, r *api.PushRequest) (*api.PushReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pushed = append(f.pushed, r.GetDotId()+" to "+r.GetTargetAddress())
	return &api.PushReply{}, nil
}

func (f *fakeZfsd) Receive(s api.Zfsd_ReceiveServer) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.received = append(f.received, first.GetHeader().GetDotId())
	f.mu.Unlock()
	return s.SendAndClose(&api.ReceiveReply{})
}

// mtlsCluster is node a's zfsd on loopback with mutual TLS and the guard,
// over a view where pool pa (node a) is master of dot "d" and pool pb
// (node b) holds its replica; pool pc (node c) holds the master of "e".
type mtlsCluster struct {
	ca   *pki.CA
	addr string
	zfsd *fakeZfsd
}

// startZfsd serves the fake zfsd guarded, or (guarded false) given no
// authorizer at all.
func startZfsd(t *testing.T, guarded bool) *mtlsCluster {
	t.Helper()
	ca, err := pki.NewCA("test cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mc := &mtlsCluster{ca: ca, addr: l.Addr().String(), zfsd: &fakeZfsd{dots: map[string]bool{"d": true, "e": true}}}
	view := cluster.NewMemory()
	ctx := context.Background()
	for _, p := range []cluster.Pool{{Name: "pa", Node: "a", Address: mc.addr}, {Name: "pb", Node: "b", Address: "127.0.0.2:7455"},
		{Name: "pc", Node: "c", Address: "127.0.0.3:7455"}} {
		p.LastHeartbeat = time.Now()
		if err := view.PutPool(ctx, p, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []cluster.Dot{{ID: "d", Master: "pa", Replicas: []cluster.Replica{{Pool: "pb"}}}, {ID: "e", Master: "pc"}} {
		if _, err := view.CreateDot(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	var auth remote.Authorizer
	if guarded {
		auth = authz.New(authz.Config{View: view, Pools: func() []string { return []string{"pa"} }})
	}
	srv := grpc.NewServer(remote.ServerOptions(mc.identity(t, ca, "node:a"), auth)...)
	api.RegisterZfsdServer(srv, mc.zfsd)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return mc
}

func (mc *mtlsCluster) identity(t *testing.T, ca *pki.CA, name string) *pki.Identity {
	t.Helper()
	cert, key, err := ca.Issue(name, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(mc.ca.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// client dials node a's zfsd presenting tlsCfg, naming pool pa.
func (mc *mtlsCluster) client(t *testing.T, tlsCfg *tls.Config) api.ZfsdClient {
	t.Helper()
	conn, err := grpc.NewClient(mc.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewZfsdClient(conn)
}

func (mc *mtlsCluster) as(t *testing.T, name string) api.ZfsdClient {
	return mc.client(t, mc.identity(t, mc.ca, name).ClientTLS())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// intact fails the test unless node a still holds dot d, and nothing was
// pushed out of it or received into it.
func (mc *mtlsCluster) intact(t *testing.T) {
	t.Helper()
	if _, err := mc.as(t, "controller").GetDot(ctxT(t), &api.DotRef{Id: "d"}); err != nil {
		t.Fatalf("dot d is gone: %v", err)
	}
	mc.zfsd.mu.Lock()
	defer mc.zfsd.mu.Unlock()
	if len(mc.zfsd.pushed) > 0 || len(mc.zfsd.received) > 0 {
		t.Fatalf("pushed %q, received %q", mc.zfsd.pushed, mc.zfsd.received)
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

// A node's certificate over real mutual TLS: the changes and streams it
// is not entitled to are PermissionDenied, and the dot is untouched.
func TestNodeCertificateOverMutualTLS(t *testing.T) {
	mc := startZfsd(t, true)
	b := mc.as(t, "node:b")
	if _, err := b.Info(ctxT(t), &api.InfoRequest{}); err != nil {
		t.Fatalf("a node reading Info: %v", err)
	}
	_, err := b.DeleteDot(ctxT(t), &api.DotRef{Id: "d"})
	wantCode(t, "node b deleting dot d", err, codes.PermissionDenied)
	_, err = b.DropCopy(ctxT(t), &api.DotRef{Id: "d"})
	wantCode(t, "node b dropping node a's copy of dot d", err, codes.PermissionDenied)
	// The attack the guard is for: read a dot out by asking its master to
	// push it to oneself.
	_, err = b.Push(ctxT(t), &api.PushRequest{DotId: "d", TargetAddress: "127.0.0.2:7455", TargetPool: "pb"})
	wantCode(t, "node b pushing dot d to itself", err, codes.PermissionDenied)
	// A stream into node a's pool of a dot whose master node c holds, by
	// node b.
	stream, err := b.Receive(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&api.ReceiveChunk{Header: &api.ReceiveHeader{DotId: "e"}, Data: []byte("not a stream")}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	_, err = stream.CloseAndRecv()
	wantCode(t, "node b streaming dot e into pool pa", err, codes.PermissionDenied)
	mc.intact(t)

	// The node that holds e's master may stream it; the controller may
	// delete.
	stream, err = mc.as(t, "node:c").Receive(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&api.ReceiveChunk{Header: &api.ReceiveHeader{DotId: "e"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("node c streaming dot e, whose master it holds: %v", err)
	}
	if _, err := mc.as(t, "controller").DeleteDot(ctxT(t), &api.DotRef{Id: "d"}); err != nil {
		t.Fatalf("the controller deleting dot d: %v", err)
	}
}

// The handshake refuses a certificate of another CA and an expired one of
// this CA, before any call is judged.
func TestHandshakeRefusals(t *testing.T) {
	mc := startZfsd(t, true)
	other, err := pki.NewCA("someone else's CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		says string
	}{
		{"a certificate from another CA", insist(mc.identity(t, other, "controller")), "unknown certificate authority"},
		{"an expired certificate", insist(expired(t, mc.ca, "controller")), "expired certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mc.client(t, tc.cfg).DeleteDot(ctxT(t), &api.DotRef{Id: "d"})
			wantCode(t, "DeleteDot", err, codes.Unavailable)
			mc.intact(t)
			// Why: the gRPC client may see the alert or only the closed
			// connection, whichever comes first; a bare TLS client reads
			// the server's alert.
			cfg := tc.cfg.Clone()
			cfg.NextProtos = []string{"h2"}
			conn, err := tls.Dial("tcp", mc.addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = conn.Read(make([]byte, 1))
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("handshake refusal %v does not say %q", err, tc.says)
			}
		})
	}
}

// insist presents id's certificate whatever CAs the server asks for, as
// an attacker would (a client otherwise sends none that the server's CA
// did not sign).
func insist(id *pki.Identity) *tls.Config {
	cfg := id.ClientTLS()
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &id.Cert, nil }
	return cfg
}

// A zfsd on TLS given no authorizer refuses every call.
func TestTLSWithoutAnAuthorizerRefusesAll(t *testing.T) {
	mc := startZfsd(t, false)
	_, err := mc.as(t, "controller").Info(ctxT(t), &api.InfoRequest{})
	wantCode(t, "Info", err, codes.PermissionDenied)
}

// expired is an identity whose certificate ca signed but which expired
// an hour ago.
func expired(t *testing.T, ca *pki.CA, name string) *pki.Identity {
	t.Helper()
	pair, err := tls.X509KeyPair(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// On the unix socket the caller is the local host: no certificate, and
// every call served.
func TestUnixSocketIsTheLocalHost(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "zfsd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	zfsd := &fakeZfsd{dots: map[string]bool{"d": true}}
	srv := grpc.NewServer(remote.ServerOptions(nil, authz.New(authz.Config{}))...)
	api.RegisterZfsdServer(srv, zfsd)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := api.NewZfsdClient(conn).DeleteDot(ctxT(t), &api.DotRef{Id: "d"}); err != nil {
		t.Fatalf("the local host deleting dot d: %v", err)
	}
	zfsd.mu.Lock()
	defer zfsd.mu.Unlock()
	if zfsd.dots["d"] {
		t.Fatal("dot d is still there")
	}
}
