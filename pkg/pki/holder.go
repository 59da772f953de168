package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Source gives the TLS configurations zfsd serves and dials with: a fixed
// Identity (certificate files), or a Holder whose identity is renewed.
type Source interface {
	ServerTLS() *tls.Config
	ClientTLS() *tls.Config
}

// Holder holds the identity a process presents now. Every TLS handshake
// reads it afresh, so a renewed certificate is used from the next
// connection on, and connections already made (streams in flight) go on
// with the one they began with.
type Holder struct {
	mu sync.RWMutex
	id *Identity
}

// Set replaces the identity presented from the next handshake on.
func (h *Holder) Set(id *Identity) {
	h.mu.Lock()
	h.id = id
	h.mu.Unlock()
}

// Current is the identity presented now, or nil before the first.
func (h *Holder) Current() *Identity {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.id
}

var errNoIdentity = errors.New("no zfsd certificate yet: the signer has not issued one")

func (h *Holder) current() (*Identity, error) {
	if id := h.Current(); id != nil {
		return id, nil
	}
	return nil, errNoIdentity
}

// ServerTLS serves with the identity held at each handshake, and requires
// a client certificate from its CA.
func (h *Holder) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			id, err := h.current()
			if err != nil {
				return nil, err
			}
			return id.ServerTLS(), nil
		},
	}
}

// ClientTLS presents the identity held at each handshake, and verifies the
// server against the CA held then. The standard verification needs its
// roots when the config is made, before the first identity may have
// arrived, so it is off and VerifyConnection does the same checks (chain
// to the CA, the name dialled, server usage) with the roots of the moment.
func (h *Holder) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // VerifyConnection verifies, against the CA held at the handshake
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			id, err := h.current()
			if err != nil {
				return nil, err
			}
			return &id.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := h.current()
			if err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: id.CA, Intermediates: inter,
				DNSName: cs.ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
}

// Obtain gets a new identity: issued locally by a process that holds the
// CA, or signed through the Kubernetes API for one that does not.
type Obtain func(ctx context.Context) (*Identity, error)

// Keep keeps h holding a valid identity until ctx ends: it obtains one
// (now, unless h already holds one), and a new one when two thirds of the
// time the current one had left when it came have passed. A failure is
// retried, from one second up to a minute apart, while the current
// identity, if any, stays in use.
func Keep(ctx context.Context, h *Holder, name string, obtain Obtain) {
	renewAt := time.Now()
	if id := h.Current(); id != nil {
		renewAt = RenewAt(id, time.Now())
	}
	retry := time.Second
	for {
		if !sleepUntil(ctx, renewAt) {
			return
		}
		id, err := obtain(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			klog.ErrorS(err, "obtaining a zfsd certificate; retrying", "name", name, "in", retry)
			renewAt = time.Now().Add(retry)
			retry = min(2*retry, time.Minute)
			continue
		}
		retry = time.Second
		h.Set(id)
		// Not sooner than a second on: certificate times are whole seconds,
		// and one that came with no time left must not make a busy loop.
		renewAt = RenewAt(id, time.Now())
		if soonest := time.Now().Add(time.Second); renewAt.Before(soonest) {
			renewAt = soonest
		}
		klog.InfoS("zfsd certificate renewed", "name", name, "notAfter", id.Cert.Leaf.NotAfter, "renewAt", renewAt)
	}
}

// RenewAt is when an identity received at got is renewed: at two thirds
// of the time it then had left.
func RenewAt(id *Identity, got time.Time) time.Time {
	left := id.Cert.Leaf.NotAfter.Sub(got)
	if left <= 0 {
		return got
	}
	return got.Add(left * 2 / 3)
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
