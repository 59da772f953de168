//go:build zfs

package multinode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// Issue 12, on the harness's real API server and real zfsd's: a node's
// certificate gets no DeleteDot, DropCopy or Push of a dot whose master
// another node holds, and the dot is left as it was; a certificate of
// another CA, and an expired one of the cluster's CA, are refused at the
// handshake, before any call is judged.
func TestTrustNodeCertificateGetsOnlyWhatItIsEntitledTo(t *testing.T) {
	h, ctrl := up(t, 2)
	n0, n1 := h.Nodes[0], h.Nodes[1]
	master, other := "pool-"+n0.Name, "pool-"+n1.Name
	c0 := h.Dial(n0.Socket())
	id := createOn(t, ctrl, n0, "entitled", map[string]string{"replicas": "2"})
	dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := n0.Write(ctxT(t, time.Minute), data, 16); err != nil {
		t.Fatal(err)
	}
	sum, err := n0.Sum(ctxT(t, time.Minute), data)
	if err != nil {
		t.Fatal(err)
	}
	commit := snapshot(t, ctrl, id, "entitled-base")
	h.WaitDot(id, 2*time.Minute, func(d cluster.Dot) bool {
		return d.Master == master && len(d.Replicas) == 1 && d.Replicas[0].Pool == other && d.Replicas[0].Commit == commit
	})

	ctx := ctxT(t, 3*time.Minute)
	ca, err := h.ClusterCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	view := h.View()
	masterPool, err := view.GetPool(ctx, master)
	if err != nil {
		t.Fatal(err)
	}
	otherPool, err := view.GetPool(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	// dial reaches the master's zfsd at the address the view gives it,
	// from the control plane's namespace, naming the master's pool.
	dial := func(cfg *tls.Config) *remote.Client {
		conn, err := grpc.NewClient(masterPool.Address, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dialIn(h.CPNetns)(ctx, "tcp", a) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return remote.NewPoolClient(conn, master)
	}
	issue := func(ca *pki.CA, name string, hosts ...string) *pki.Identity {
		cert, key, err := ca.Issue(name, hosts...)
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity(ca.CertPEM, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}

	// What "intact" is measured against: the master's snapshots with their
	// GUIDs (read by the controller's identity, which may), the dataset's
	// GUID on the master's pool, and the data's sha256.
	controller := dial(issue(ca, pki.ControllerName).ClientTLS())
	ds := master + "/dots/" + id
	evidence := func() (snaps []string, guid string) {
		t.Helper()
		list, err := controller.Snapshots(ctxT(t, time.Minute), id)
		if err != nil {
			t.Fatalf("the controller listing dot %s's snapshots on its master: %v", id, err)
		}
		for _, s := range list {
			snaps = append(snaps, s.GetName()+" "+s.GetGuid())
		}
		out, err := n0.Exec(ctxT(t, time.Minute), "zfs", "get", "-H", "-o", "value", "guid", ds)
		if err != nil {
			t.Fatalf("%s: %v", ds, err)
		}
		return snaps, strings.TrimSpace(out)
	}
	snapsBefore, guidBefore := evidence()
	if !strings.Contains(strings.Join(snapsBefore, "\n"), strings.Split(commit, "@")[1]) {
		t.Fatalf("the master's snapshots %q lack commit %s", snapsBefore, commit)
	}
	intact := func(after string) {
		t.Helper()
		snaps, guid := evidence()
		if guid != guidBefore || !reflect.DeepEqual(snaps, snapsBefore) {
			t.Fatalf("after %s, dot %s on %s: dataset guid %s, snapshots %q; before: %s, %q", after, id, master, guid, snaps, guidBefore, snapsBefore)
		}
		if got, err := n0.Sum(ctxT(t, time.Minute), data); err != nil || got != sum {
			t.Fatalf("after %s, the data's sha256 is %s (%v); written %s", after, got, err, sum)
		}
		rec, err := view.GetDot(ctxT(t, time.Minute), id)
		if err != nil || rec.Master != master || len(rec.Replicas) != 1 || rec.Replicas[0].Commit != commit {
			t.Fatalf("after %s, dot %s's record: %+v, %v", after, id, rec, err)
		}
	}

	// node1, which holds the replica, with a certificate for itself from
	// the cluster CA: a member, so it may read, but nothing more.
	node1 := dial(issue(ca, pki.NodeName(n1.Name), n1.IP).ClientTLS())
	if _, err := node1.Info(ctx); err != nil {
		t.Fatalf("%s reading Info from %s's zfsd: %v", n1.Name, n0.Name, err)
	}
	err = node1.DeleteDot(ctx, id)
	wantStatus(t, n1.Name+" deleting dot "+id, err, codes.PermissionDenied)
	err = node1.DropCopy(ctx, id)
	wantStatus(t, n1.Name+" dropping the master's copy of dot "+id, err, codes.PermissionDenied)
	// Reading the dot out by asking its master to push it to oneself.
	_, err = node1.Push(ctx, id, otherPool.Address, other)
	wantStatus(t, n1.Name+" pushing dot "+id+" to its own pool", err, codes.PermissionDenied)
	intact("the node's calls")

	// Certificates the handshake refuses. Both name the controller, which
	// may delete: were either accepted, DeleteDot would succeed.
	stranger, err := pki.NewCA("not the cluster's CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   *pki.Identity
		says string
	}{
		{"a certificate from another CA", issue(stranger, pki.ControllerName), "unknown certificate authority"},
		{"an expired certificate from the cluster CA", expiredIdentity(t, ca, pki.ControllerName), "expired certificate"},
	} {
		cfg := presentAnyway(tc.id, ca)
		err := dial(cfg).DeleteDot(ctxT(t, time.Minute), id)
		wantStatus(t, tc.name+": DeleteDot", err, codes.Unavailable)
		t.Logf("%s: %v", tc.name, err)
		// The gRPC client may see the server's alert or only the closed
		// connection, whichever comes first; a bare TLS client reads the
		// alert, which says why the handshake failed.
		raw, err := dialIn(h.CPNetns)(ctx, "tcp", masterPool.Address)
		if err != nil {
			t.Fatal(err)
		}
		bare := cfg.Clone()
		bare.NextProtos, bare.ServerName = []string{"h2"}, n0.IP
		conn := tls.Client(raw, bare)
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Fatalf("%s: the handshake's refusal %v does not say %q", tc.name, err, tc.says)
		}
		intact(tc.name)
	}
}

func wantStatus(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

// presentAnyway trusts the cluster CA for the server and presents id's
// certificate whatever CAs the server asks for, as an attacker would (a
// client otherwise sends none the server's CA did not sign).
func presentAnyway(id *pki.Identity, clusterCA *pki.CA) *tls.Config {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(clusterCA.CertPEM)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &id.Cert, nil }}
}

// expiredIdentity is an identity whose certificate ca signed for name but
// which expired an hour ago (pkg/zfsd/authz's tls_test mints it alike).
func expiredIdentity(t *testing.T, ca *pki.CA, name string) *pki.Identity {
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
