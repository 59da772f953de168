package signer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/dotmesh-io/dotmesh-csi/pkg/enroll"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

const ns = "dotmesh-system"

// world is a pod of the node plugin's DaemonSet on node "a" (10.0.0.10),
// and node "b" (10.0.0.11).
func world() []runtime.Object {
	ctl := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "dotmesh-node-x", Namespace: ns, UID: "pod-uid",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "dotmesh-node", UID: "ds", Controller: &ctl}}},
		Spec: corev1.PodSpec{NodeName: "a", ServiceAccountName: "dotmesh-node"}}
	node := func(name, ip string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}}}
	}
	return []runtime.Object{pod, node("a", "10.0.0.10"), node("b", "10.0.0.11"), &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "dotmesh-node", Namespace: ns}}}
}

// request is what the API server records for the node plugin's pod on
// node a asking for cn with hosts; edit changes it.
func request(t *testing.T, cn string, hosts []string, edit func(*certv1.CertificateSigningRequest)) *certv1.CertificateSigningRequest {
	t.Helper()
	csrPEM, _, err := pki.NewRequest(cn, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	csr := &certv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: "csr"},
		Spec: certv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: pki.SignerName, Usages: enroll.Usages,
			Username: "system:serviceaccount:dotmesh-system:dotmesh-node",
			Extra:    map[string]certv1.ExtraValue{podNameKey: {"dotmesh-node-x"}, podUIDKey: {"pod-uid"}, nodeNameKey: {"a"}}}}
	if edit != nil {
		edit(csr)
	}
	return csr
}

func TestHandleSignsOnlyTheNodePluginPodsOwnNode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cn     string
		hosts  []string
		edit   func(*certv1.CertificateSigningRequest)
		denied string // the reason, or "" when signed
	}{
		{name: "own node", cn: "node:a", hosts: []string{"10.0.0.10", "a"}},
		{name: "another node", cn: "node:b", hosts: []string{"10.0.0.11"}, denied: "WrongNode"},
		{name: "the controller", cn: "controller", denied: "WrongNode"},
		{name: "another node's address", cn: "node:a", hosts: []string{"10.0.0.11"}, denied: "BadName"},
		{name: "a name that is not the node's", cn: "node:a", hosts: []string{"evil.example"}, denied: "BadName"},
		{name: "a group in the subject", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) {
			c.Spec.Request = mustRequest(t, "node:a", "system:masters")
		}, denied: "WrongNode"},
		{name: "another user", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) { c.Spec.Username = "admin" }, denied: "NotTheNodePlugin"},
		{name: "a token bound to no pod", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) { c.Spec.Extra = nil }, denied: "NoBoundPod"},
		{name: "a pod since replaced", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) {
			c.Spec.Extra[podUIDKey] = certv1.ExtraValue{"old-uid"}
		}, denied: "PodGone"},
		{name: "a pod that is gone", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) {
			c.Spec.Extra[podNameKey] = certv1.ExtraValue{"gone"}
		}, denied: "PodGone"},
		{name: "a token naming another node", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) {
			c.Spec.Extra[nodeNameKey] = certv1.ExtraValue{"b"}
		}, denied: "WrongNode"},
		{name: "a usage beyond serving and dialing", cn: "node:a", edit: func(c *certv1.CertificateSigningRequest) {
			c.Spec.Usages = append(c.Spec.Usages, certv1.UsageCertSign)
		}, denied: "BadUsage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkOutcome(t, handle(t, world(), request(t, tc.cn, tc.hosts, tc.edit)), tc.cn, tc.denied)
		})
	}
}

func TestHandleDeniesAPodOfAnotherOwner(t *testing.T) {
	objs := world()
	objs[0].(*corev1.Pod).OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "dotmesh-node", UID: types.UID("rs")}}
	checkOutcome(t, handle(t, objs, request(t, "node:a", nil, nil)), "node:a", "NotTheNodePlugin")
}

func TestHandleFailsWhatOthersApprovedWithoutProof(t *testing.T) {
	csr := request(t, "node:b", nil, nil)
	csr.Status.Conditions = []certv1.CertificateSigningRequestCondition{{Type: certv1.CertificateApproved, Status: corev1.ConditionTrue}}
	got := handle(t, world(), csr)
	if len(got.Status.Certificate) > 0 || !has(got, certv1.CertificateFailed) {
		t.Fatalf("a request approved by someone else for another node: certificate %d bytes, conditions %+v", len(got.Status.Certificate), got.Status.Conditions)
	}
}

func TestHandleCapsValidity(t *testing.T) {
	short := int32(600)
	got := handle(t, world(), request(t, "node:a", nil, func(c *certv1.CertificateSigningRequest) { c.Spec.ExpirationSeconds = &short }))
	leaf := parseLeaf(t, got)
	if life := time.Until(leaf.NotAfter); life > 10*time.Minute || life < 9*time.Minute {
		t.Fatalf("asked for 10 minutes, got a certificate valid until %s", leaf.NotAfter)
	}
	got = handle(t, world(), request(t, "node:a", nil, nil))
	if life := time.Until(parseLeaf(t, got).NotAfter); life > time.Hour {
		t.Fatalf("the signer's validity is one hour; the certificate lasts %s", life)
	}
}

func handle(t *testing.T, objs []runtime.Object, csr *certv1.CertificateSigningRequest) *certv1.CertificateSigningRequest {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(objs...)
	ctx := context.Background()
	if _, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Client: cs, CA: ca, Namespace: ns, ServiceAccount: "dotmesh-node", DaemonSet: "dotmesh-node", Validity: time.Hour})
	if err := s.Handle(ctx, csr); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func checkOutcome(t *testing.T, got *certv1.CertificateSigningRequest, cn, denied string) {
	t.Helper()
	if denied == "" {
		if !has(got, certv1.CertificateApproved) || len(got.Status.Certificate) == 0 {
			t.Fatalf("not signed: %+v", got.Status.Conditions)
		}
		leaf, _, err := pki.SplitChain(got.Status.Certificate, cn)
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf) == 0 {
			t.Fatal("empty leaf")
		}
		return
	}
	if len(got.Status.Certificate) > 0 || has(got, certv1.CertificateApproved) {
		t.Fatalf("signed or approved a request that should be denied (%s)", denied)
	}
	for _, c := range got.Status.Conditions {
		if c.Type == certv1.CertificateDenied && c.Reason == denied {
			return
		}
	}
	t.Fatalf("want Denied %s, got %+v", denied, got.Status.Conditions)
}

func parseLeaf(t *testing.T, csr *certv1.CertificateSigningRequest) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(csr.Status.Certificate)
	if b == nil {
		t.Fatal("no certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mustRequest is a request for cn with a group (O) besides.
func mustRequest(t *testing.T, cn, org string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{org}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
