package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestNew(t *testing.T) {
	p, err := New("sprites-api", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "sprites-api", "10.0.0.1"} {
		if _, err := p.Cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: p.Roots}); err != nil {
			t.Errorf("not valid for %s: %v", host, err)
		}
	}
	if _, err := p.Cert.Leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: p.Roots}); err == nil {
		t.Error("valid for a host it was not made for")
	}
	if _, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM); err != nil {
		t.Errorf("PEM pair does not load: %v", err)
	}
	if b, _ := pem.Decode(p.KeyPEM); b == nil {
		t.Error("KeyPEM is not PEM")
	}
	if p.ServerConfig().MinVersion < tls.VersionTLS12 || p.ClientConfig().MinVersion < tls.VersionTLS12 {
		t.Error("TLS below 1.2 allowed")
	}
}
