package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// SignerName is the Kubernetes signer that issues zfsd certificates: node
// plugins send CertificateSigningRequests for it, and only the controller,
// which holds the CA, approves and signs them.
const SignerName = "dotmesh.io/zfsd"

// ControllerName is the common name of the controller's certificate; a
// node's is NodeName(node).
const ControllerName = "controller"

// NodeName is the common name of the certificate of the node plugin on
// node.
func NodeName(node string) string { return "node:" + node }

// backdate is how far before its issue a certificate is valid, so a peer
// whose clock is a little behind still accepts it (Kubernetes' own signer
// backdates by as much).
const backdate = 5 * time.Minute

// NewRequest makes a key and a PKCS#10 certificate request for name, valid
// for the given IPs and DNS names, both in PEM. The key never leaves the
// process that made it; only the request goes to the signer.
func NewRequest(name string, hosts ...string) (csrPEM, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), keyPEM(k), nil
}

// ParseRequest reads a PEM certificate request and checks its signature,
// so the requester holds the key it asks a certificate for.
func ParseRequest(csrPEM []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request's signature: %w", err)
	}
	return req, nil
}

// SignRequest issues a leaf for a checked request: its subject, IPs and
// DNS names as asked (the caller has decided they are allowed), usable as
// server and client, valid for validity from now. Nothing else of the
// request is copied.
func (ca *CA) SignRequest(req *x509.CertificateRequest, validity time.Duration) ([]byte, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("validity %s: must be above zero", validity)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: req.Subject.CommonName},
		NotBefore: now.Add(-backdate), NotAfter: now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: req.IPAddresses, DNSNames: req.DNSNames,
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, req.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// IssueShort makes a key and a leaf for name from this CA, valid for
// validity: the controller's own identity, which it issues itself since it
// holds the CA.
func (ca *CA) IssueShort(name string, validity time.Duration, hosts ...string) (*Identity, error) {
	csrPEM, key, err := NewRequest(name, hosts...)
	if err != nil {
		return nil, err
	}
	req, err := ParseRequest(csrPEM)
	if err != nil {
		return nil, err
	}
	cert, err := ca.SignRequest(req, validity)
	if err != nil {
		return nil, err
	}
	return NewIdentity(ca.CertPEM, cert, key)
}

// SplitChain splits what a signer returned, the leaf followed by the CA
// certificate that issued it, and checks that the one issued the other
// and that the leaf is for name.
func SplitChain(chain []byte, name string) (leafPEM, caPEM []byte, err error) {
	var blocks []*pem.Block
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) != 2 {
		return nil, nil, fmt.Errorf("signed chain has %d certificates; want the leaf and its CA", len(blocks))
	}
	leaf, err := x509.ParseCertificate(blocks[0].Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("signed leaf: %w", err)
	}
	ca, err := x509.ParseCertificate(blocks[1].Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("signed chain's CA: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("signed chain's second certificate is not a CA")
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, nil, fmt.Errorf("signed leaf is not from the chain's CA: %w", err)
	}
	if leaf.Subject.CommonName != name {
		return nil, nil, fmt.Errorf("signed leaf names %q; asked for %q", leaf.Subject.CommonName, name)
	}
	return pem.EncodeToMemory(blocks[0]), pem.EncodeToMemory(blocks[1]), nil
}
