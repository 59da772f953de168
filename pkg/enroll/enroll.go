// Package enroll gets a node plugin its zfsd certificate through the
// Kubernetes CertificateSigningRequest API. The node makes its key, which
// never leaves it, and asks the signer pki.SignerName for a certificate
// naming it; the controller approves and signs the request only once it
// has checked, from what the API server recorded about who created the
// request, that the requester is the node plugin's pod on that node
// (pkg/signer). The node holds no CA key and can issue nothing itself.
package enroll

import (
	"context"
	"fmt"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// Config says which node asks, for which addresses.
type Config struct {
	Client kubernetes.Interface
	Node   string   // this node's name; the certificate is for pki.NodeName(Node)
	Hosts  []string // the IPs and DNS names peers dial this node's zfsd at
	// Poll is how often the request is read until it is signed or denied;
	// default one second.
	Poll time.Duration
}

// Usages are what a zfsd certificate is for: serving peers and dialing
// them.
var Usages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment,
	certv1.UsageServerAuth, certv1.UsageClientAuth}

// Request asks for a certificate and waits until it is signed, denied or
// failed, or ctx ends. It returns the identity to present: the new key,
// the signed leaf, and the CA certificate the signer returned with it,
// which is trusted because only the holder of the signer's "sign"
// permission (the controller) can write a CSR's certificate.
func Request(ctx context.Context, cfg Config) (*pki.Identity, error) {
	name := pki.NodeName(cfg.Node)
	csrPEM, key, err := pki.NewRequest(name, cfg.Hosts...)
	if err != nil {
		return nil, err
	}
	csr := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "dotmesh-node-" + cfg.Node + "-"},
		Spec:       certv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: pki.SignerName, Usages: Usages},
	}
	csrs := cfg.Client.CertificatesV1().CertificateSigningRequests()
	csr, err = csrs.Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %s: creating a CertificateSigningRequest for %s: %w", cfg.Node, pki.SignerName, err)
	}
	klog.InfoS("asked for a zfsd certificate", "node", cfg.Node, "csr", csr.Name, "hosts", cfg.Hosts)
	poll := cfg.Poll
	if poll <= 0 {
		poll = time.Second
	}
	for {
		if chain, err := outcome(csr); err != nil || chain != nil {
			if err != nil {
				return nil, fmt.Errorf("node %s: %w", cfg.Node, err)
			}
			leaf, ca, err := pki.SplitChain(chain, name)
			if err != nil {
				return nil, fmt.Errorf("node %s: CertificateSigningRequest %s: %w", cfg.Node, csr.Name, err)
			}
			return pki.NewIdentity(ca, leaf, key)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s: CertificateSigningRequest %s not signed: %w", cfg.Node, csr.Name, ctx.Err())
		case <-time.After(poll):
		}
		if got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{}); err == nil {
			csr = got
		} else {
			klog.V(2).InfoS("reading the CertificateSigningRequest; retrying", "node", cfg.Node, "csr", csr.Name, "err", err)
		}
	}
}

// outcome is the signed chain, an error if the request was denied or
// failed, or neither while it waits.
func outcome(csr *certv1.CertificateSigningRequest) ([]byte, error) {
	for _, c := range csr.Status.Conditions {
		if (c.Type == certv1.CertificateDenied || c.Type == certv1.CertificateFailed) && c.Status == corev1.ConditionTrue {
			return nil, fmt.Errorf("CertificateSigningRequest %s %s: %s: %s", csr.Name, c.Type, c.Reason, c.Message)
		}
	}
	if len(csr.Status.Certificate) > 0 {
		return csr.Status.Certificate, nil
	}
	return nil, nil
}
