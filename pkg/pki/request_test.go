package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"
)

func TestSignRequestCopiesOnlyNameAndAddresses(t *testing.T) {
	ca, _ := NewCA("test CA")
	csrPEM, _, err := NewRequest("node:a", "10.0.0.1", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseRequest(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignRequest(req, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, caPEM, err := SplitChain(append(certPEM, ca.CertPEM...), "node:a")
	if err != nil {
		t.Fatal(err)
	}
	if string(caPEM) != string(ca.CertPEM) || string(leafPEM) != string(certPEM) {
		t.Fatal("SplitChain did not return the leaf and the CA")
	}
	b, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.IsCA || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) || len(leaf.DNSNames) != 1 {
		t.Fatalf("leaf: CA %v, IPs %v, DNS %v", leaf.IsCA, leaf.IPAddresses, leaf.DNSNames)
	}
	if life := time.Until(leaf.NotAfter); life > time.Hour {
		t.Fatalf("valid for %s; asked an hour", life)
	}
}

func TestSplitChainRefusesWhatItWasNotAskedFor(t *testing.T) {
	ca, _ := NewCA("test CA")
	other, _ := NewCA("another CA")
	id, err := ca.IssueShort("node:a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pemBlock("CERTIFICATE", id.Cert.Certificate[0])
	for name, tc := range map[string]struct {
		chain []byte
		cn    string
		want  string
	}{
		"another node's":   {append(append([]byte{}, leaf...), ca.CertPEM...), "node:b", "asked for"},
		"another CA's":     {append(append([]byte{}, leaf...), other.CertPEM...), "node:a", "not from"},
		"no CA":            {leaf, "node:a", "1 certificates"},
		"a leaf as the CA": {append(append([]byte{}, leaf...), leaf...), "node:a", "not a CA"},
	} {
		if _, _, err := SplitChain(tc.chain, tc.cn); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
