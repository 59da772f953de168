//go:build zfs

package multinode

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/enroll"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// pluginClient is the API as node n's plugin sees it: its ServiceAccount's
// token bound to its pod.
func pluginClient(t *testing.T, n *Node) kubernetes.Interface {
	t.Helper()
	_, cfg := n.PluginConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// The CA key never leaves the controller: a node plugin can neither read
// the CA's Secret nor make Secrets of its own.
func TestTrustNodeCannotReadTheCASecret(t *testing.T) {
	h := New(t, Options{Nodes: 1})
	h.StartController()
	ctx := ctxT(t, time.Minute)
	if _, err := h.ClusterCA(ctx); err != nil {
		t.Fatalf("the controller made no CA Secret: %v", err)
	}
	node := pluginClient(t, h.Nodes[0])
	_, err := node.CoreV1().Secrets(Namespace).Get(ctx, "dotmesh-ca", metav1.GetOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("the node plugin reading the CA Secret: %v, want Forbidden", err)
	}
	_, err = node.CoreV1().Secrets(Namespace).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("the node plugin listing Secrets: %v, want Forbidden", err)
	}
	_, err = node.CoreV1().Secrets(Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dotmesh-ca-2"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("the node plugin creating a Secret: %v, want Forbidden", err)
	}
}

// A node plugin gets a certificate for its own node, with its own
// address, and nothing else; nor does anyone but the node plugin's pod.
func TestTrustSignsOnlyTheRequestersOwnNode(t *testing.T) {
	h := New(t, Options{Nodes: 2})
	n0, n1 := h.Nodes[0], h.Nodes[1]
	h.StartController()
	ctx := ctxT(t, 3*time.Minute)
	ca, err := h.ClusterCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node0 := pluginClient(t, n0)
	ask := func(cs kubernetes.Interface, node string, hosts ...string) (*pki.Identity, error) {
		return enroll.Request(ctx, enroll.Config{Client: cs, Node: node, Hosts: hosts, Poll: 100 * time.Millisecond})
	}
	for _, tc := range []struct {
		name, node, reason string
		hosts              []string
		cs                 kubernetes.Interface
	}{
		{"another node's name", n1.Name, "WrongNode", []string{n1.IP}, node0},
		{"another node's address", n0.Name, "BadName", []string{n1.IP}, node0},
		{"a name that is not the node's", n0.Name, "BadName", []string{"kubernetes.default"}, node0},
		{"not the node plugin (admin)", n0.Name, "NotTheNodePlugin", []string{n0.IP}, h.Client},
	} {
		_, err := ask(tc.cs, tc.node, tc.hosts...)
		if err == nil || !strings.Contains(err.Error(), "Denied") || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: %v; want Denied %s", tc.name, err, tc.reason)
		}
	}
	// Nor the controller's name, which no node may hold.
	csrPEM, _, err := pki.NewRequest(pki.ControllerName)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := node0.CertificatesV1().CertificateSigningRequests().Create(ctx, &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "as-controller-"},
		Spec:       certv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: pki.SignerName, Usages: enroll.Usages}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		c, err := node0.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		if len(c.Status.Certificate) > 0 {
			t.Fatal("node0's plugin got a certificate for the controller")
		}
		return decided(*c)
	})

	id, err := ask(node0, n0.Name, n0.IP, n0.Name)
	if err != nil {
		t.Fatalf("node0's plugin asking for node0: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	leaf := id.Cert.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: n0.IP}); err != nil {
		t.Fatalf("node0's certificate does not chain to the cluster CA for its address: %v", err)
	}
	if leaf.Subject.CommonName != "node:"+n0.Name || len(leaf.IPAddresses) != 1 || len(leaf.DNSNames) != 1 {
		t.Fatalf("node0's certificate: CN %q, IPs %v, DNS %v", leaf.Subject.CommonName, leaf.IPAddresses, leaf.DNSNames)
	}
	if life := time.Until(leaf.NotAfter); life > 6*time.Hour {
		t.Fatalf("certificate valid for %s; the default is 6 h", life)
	}
	// Every request for the signer was decided: none is left pending.
	list, err := h.Client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Items {
		if c.Spec.SignerName == pki.SignerName && len(c.Status.Certificate) == 0 && !decided(c) {
			t.Errorf("request %s (%s) undecided", c.Name, c.Spec.Username)
		}
	}
}

func decided(c certv1.CertificateSigningRequest) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == certv1.CertificateDenied || cond.Type == certv1.CertificateFailed {
			return true
		}
	}
	return false
}

// Certificates of a minute, renewed at two thirds: a replication stream
// under way when the sender's certificate is renewed completes, nothing
// is lost, and zfsd serves the renewed certificate from then on.
func TestTrustRenewalUnderReplication(t *testing.T) {
	h := New(t, Options{Nodes: 2})
	n0, n1 := h.Nodes[0], h.Nodes[1]
	for _, n := range h.Nodes {
		n.StartPlugin()
	}
	_, sock := h.StartController("--unreachable-after=3s", "--replication-resync=1s", "--cert-validity=1m")
	h.WaitPools(2)
	ctrl := h.Dial(sock)
	c0 := h.Dial(n0.Socket())
	id := createOn(t, ctrl, n0, "renewed", map[string]string{"replicas": "2"})
	dir, err := n0.Stage(ctxT(t, time.Minute), c0, id)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "data")
	// The stream must still run when the certificate is renewed, however
	// fast this machine is: node0's link carries 48 Mbit/s, so each
	// round's 192 MiB takes over 30 s to send, and the commit comes 10 s
	// before the renewal is due.
	shape := func(args ...string) {
		if _, err := n0.Exec(ctxT(t, time.Minute), append([]string{"tc", "qdisc"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	shape("add", "dev", "eth0", "root", "tbf", "rate", "48mbit", "burst", "256kb", "latency", "500ms")
	landed := false
	for round := 0; round < 2 && !landed; round++ {
		ctx := ctxT(t, 3*time.Minute)
		before, err := n0.ZfsdCertificate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The sender renews at two thirds of what its certificate had left
		// when it came (it came five minutes after NotBefore, backdated).
		got := before.NotBefore.Add(5 * time.Minute)
		renewAt := got.Add(before.NotAfter.Sub(got) * 2 / 3)
		// Rewritten each round: the stream carries it all again.
		if _, err := n0.Exec(ctx, "rm", "-f", f); err != nil {
			t.Fatal(err)
		}
		if err := n0.Write(ctx, f, 192); err != nil {
			t.Fatal(err)
		}
		// Commit before the renewal, so the stream is under way then.
		if wait := time.Until(renewAt.Add(-10 * time.Second)); wait > 0 {
			time.Sleep(wait)
		}
		committed := time.Now()
		c := snapshot(t, ctrl, id, "round"+itoa(int64(round)))
		h.WaitDot(id, 3*time.Minute, func(d cluster.Dot) bool { return len(d.Replicas) == 1 && d.Replicas[0].Commit == c })
		streamed := time.Now()
		after, err := n0.ZfsdCertificate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		renewed := after.SerialNumber.Cmp(before.SerialNumber) != 0
		renewal := after.NotBefore.Add(5 * time.Minute)
		landed = renewed && renewal.After(committed) && renewal.Before(streamed)
		t.Logf("round %d: commit %s replicated; sender renewed %v (new certificate from %s), stream done %s",
			round, c, renewed, after.NotBefore.Add(5*time.Minute).Format(time.TimeOnly), streamed.Format(time.TimeOnly))
		if time.Now().After(before.NotAfter) && !renewed {
			t.Fatalf("%s still serves a certificate that expired at %s", n0.Name, before.NotAfter)
		}
	}
	if !landed {
		t.Fatal("no renewal of the sender's certificate fell within a stream in two rounds")
	}
	shape("del", "dev", "eth0", "root")
	// Nothing lost: the replica, staged on node1 by a handoff, holds the
	// data as written.
	want, err := n0.Sum(ctxT(t, time.Minute), f)
	if err != nil {
		t.Fatal(err)
	}
	if err := n0.Unstage(ctxT(t, time.Minute), c0, id); err != nil {
		t.Fatal(err)
	}
	dir1, err := n1.Stage(ctxT(t, 2*time.Minute), h.Dial(n1.Socket()), id)
	if err != nil {
		t.Fatalf("handoff to %s after the renewals: %v", n1.Name, err)
	}
	if got, err := n1.Sum(ctxT(t, time.Minute), filepath.Join(dir1, "data")); err != nil || got != want {
		t.Errorf("data on %s: sha256 %s (%v), written %s", n1.Name, got, err, want)
	}
	if err := n1.Unstage(ctxT(t, time.Minute), h.Dial(n1.Socket()), id); err != nil {
		t.Fatal(err)
	}
	// Both nodes renewed: each has signed requests beyond its first.
	list, err := h.Client.CertificatesV1().CertificateSigningRequests().List(ctxT(t, time.Minute), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signed := map[string]int{}
	for _, c := range list.Items {
		if len(c.Status.Certificate) > 0 {
			if v := c.Spec.Extra["authentication.kubernetes.io/node-name"]; len(v) == 1 {
				signed[v[0]]++
			}
		}
	}
	for _, n := range h.Nodes {
		if signed[n.Name] < 2 {
			t.Errorf("%s: %d certificates signed; renewals make more than one (%v)", n.Name, signed[n.Name], signed)
		}
	}
}
