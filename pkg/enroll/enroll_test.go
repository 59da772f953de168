package enroll_test

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/dotmesh-io/dotmesh-csi/pkg/enroll"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/signer"
)

// cluster is a fake API server where every request is created by the
// node plugin's pod on node a, as the real one records it, and a signer
// handles them.
func cluster(t *testing.T) (*fake.Clientset, *pki.CA) {
	t.Helper()
	ctl := true
	cs := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ds", Controller: &ctl}}},
			Spec: corev1.PodSpec{NodeName: "a", ServiceAccountName: "sa"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.10"}}}})
	cs.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		csr := a.(k8stesting.CreateAction).GetObject().(*certv1.CertificateSigningRequest)
		csr.Name = csr.GenerateName + "x" // the fake names nothing
		csr.Spec.Username = "system:serviceaccount:ns:sa"
		csr.Spec.Extra = map[string]certv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"p"}, "authentication.kubernetes.io/pod-uid": {"u"}}
		return false, nil, nil
	})
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	s := signer.New(signer.Config{Client: cs, CA: ca, Namespace: "ns", ServiceAccount: "sa", DaemonSet: "ds", Validity: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Run(ctx, time.Second)
	return cs, ca
}

func TestRequestGetsACertificateForItsNode(t *testing.T) {
	cs, ca := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := enroll.Request(ctx, enroll.Config{Client: cs, Node: "a", Hosts: []string{"10.0.0.10"}, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if cn := id.Cert.Leaf.Subject.CommonName; cn != "node:a" {
		t.Fatalf("certificate for %q", cn)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	if _, err := id.Cert.Leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Fatalf("the certificate does not chain to the cluster CA: %v", err)
	}
}

func TestRequestReportsADenial(t *testing.T) {
	cs, _ := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := enroll.Request(ctx, enroll.Config{Client: cs, Node: "b", Poll: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "Denied") || !strings.Contains(err.Error(), "WrongNode") {
		t.Fatalf("node a's pod asking as node b: %v", err)
	}
}
