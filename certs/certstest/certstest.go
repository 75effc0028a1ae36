// Package certstest mints throwaway PKI material for tests: an in-memory CA, server and client
// certificates (including expired ones, and ones from unrelated CAs), CRLs and revocation
// checkers, tls.Configs built by package certs, helpers to write them as files, and an
// in-memory TLS handshake.
//
// Nothing here is for production: keys live only in memory or in t.TempDir() files.
package certstest

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tlsvpn/certs"
)

// CA is a throwaway certificate authority. It embeds the production [certs.CA], so Cert, Key,
// Pool and IssueCert are available, and every certificate is made by the same code that
// 'tunneld pki issue' uses.
type CA struct {
	*certs.CA
}

// NewCA returns a fresh ECDSA P-256 CA (the production default). Two calls return unrelated
// CAs, which is how tests get "another CA".
func NewCA(t testing.TB) *CA {
	t.Helper()
	return NewCAAlgorithm(t, certs.ECDSA)
}

// NewCAAlgorithm returns a fresh CA whose key, and the keys of the certificates it issues
// through the helpers below, use alg.
func NewCAAlgorithm(t testing.TB, alg certs.Algorithm) *CA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{Algorithm: alg, CommonName: "certstest CA"})
	if err != nil {
		t.Fatalf("certs.NewCA(%q): %v", alg, err)
	}
	return &CA{CA: ca}
}

// Issue issues a certificate for req, defaulting req.Algorithm to the CA's key algorithm.
func (ca *CA) Issue(t testing.TB, req certs.IssueRequest) tls.Certificate {
	t.Helper()
	if req.Algorithm == "" {
		req.Algorithm = ca.algorithm()
	}
	cert, err := ca.IssueCert(req)
	if err != nil {
		t.Fatalf("IssueCert(%+v): %v", req, err)
	}
	return cert
}

// algorithm returns the CA's own key algorithm.
func (ca *CA) algorithm() certs.Algorithm {
	if _, ok := ca.Cert.PublicKey.(ed25519.PublicKey); ok {
		return certs.Ed25519
	}
	return certs.ECDSA
}

// ServerCert issues a server certificate named name whose SANs are ips. With no ips, name is
// the SAN: as an IP address if it parses as one, else as a DNS name.
func (ca *CA) ServerCert(t testing.TB, name string, ips ...net.IP) tls.Certificate {
	t.Helper()
	if ip := net.ParseIP(name); len(ips) == 0 && ip != nil {
		ips = []net.IP{ip}
	}
	return ca.Issue(t, certs.IssueRequest{Name: name, Server: true, IPs: ips})
}

// ClientCert issues a client certificate whose identity (CommonName) is name.
func (ca *CA) ClientCert(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, certs.IssueRequest{Name: name, Client: true})
}

// ExpiredClientCert issues a client certificate for name that expired a day ago.
func (ca *CA) ExpiredClientCert(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, certs.IssueRequest{Name: name, Client: true, Days: 1, Now: time.Now().AddDate(0, 0, -2)})
}

// ServerConfig returns a server config (via [certs.ServerConfigFrom]) presenting
// ServerCert(t, name) and trusting only this CA for client certificates.
func (ca *CA) ServerConfig(t testing.TB, name string) *tls.Config {
	t.Helper()
	return certs.ServerConfigFrom(ca.ServerCert(t, name), ca.Pool())
}

// ClientConfig returns a client config (via [certs.ClientConfigFrom]) presenting
// ClientCert(t, name), trusting only this CA, and expecting the server to be serverName.
func (ca *CA) ClientConfig(t testing.TB, name, serverName string) *tls.Config {
	t.Helper()
	return certs.ClientConfigFrom(ca.ClientCert(t, name), ca.Pool(), serverName)
}

// WriteFiles writes the CA to dir as ca.crt and ca.key, as 'tunneld pki init' would, so
// [certs.Issue] and [certs.LoadCA] work on dir. It returns the path of ca.crt.
func (ca *CA) WriteFiles(t testing.TB, dir string) (caFile string) {
	t.Helper()
	certFile, _ := WriteCert(t, dir, "ca", tls.Certificate{
		Certificate: [][]byte{ca.Cert.Raw},
		PrivateKey:  ca.Key,
	})
	return certFile
}

// WriteCert writes cert to dir as NAME.crt (mode 0644) and its key as NAME.key (mode 0600),
// in the formats 'tunneld pki issue' uses, and returns their paths.
func WriteCert(t testing.TB, dir, name string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatalf("MarshalPKCS8PrivateKey(%T): %v", cert.PrivateKey, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// WriteCRL signs a CRL for req with this CA (see [certs.CA.SignCRL]) and writes it to path as
// 'tunneld pki' does (PEM "X509 CRL", mode 0644), replacing any file there. It returns the list.
func (ca *CA) WriteCRL(t testing.TB, path string, req certs.CRLRequest) *x509.RevocationList {
	t.Helper()
	list, err := ca.SignCRL(req)
	if err != nil {
		t.Fatalf("SignCRL(%+v): %v", req, err)
	}
	if err := os.WriteFile(path, certs.EncodeCRL(list), 0o644); err != nil {
		t.Fatal(err)
	}
	return list
}

// RevokedEntry returns a CRL entry revoking cert at time at, with reason unspecified.
func RevokedEntry(cert tls.Certificate, at time.Time) x509.RevocationListEntry {
	return x509.RevocationListEntry{SerialNumber: cert.Leaf.SerialNumber, RevocationTime: at}
}

// Revocation writes a fresh CRL (number 1, valid for [certs.DefaultCRLDays]) revoking the
// given certificates to a file in t.TempDir(), and returns a checker enforcing it. Its clock
// is frozen at the real time of this call, so it agrees with certificates from this CA even
// when handshakes run inside a testing/synctest bubble (see [Handshake]). Call it outside a
// bubble. Use [certs.WithRevocation] to put it into a server config.
func (ca *CA) Revocation(t testing.TB, revoked ...tls.Certificate) *certs.Revocation {
	t.Helper()
	now := time.Now()
	req := certs.CRLRequest{Number: big.NewInt(1), Now: now}
	for _, c := range revoked {
		req.Revoked = append(req.Revoked, RevokedEntry(c, now))
	}
	path := filepath.Join(t.TempDir(), certs.CRLFile)
	ca.WriteCRL(t, path, req)
	r, err := certs.NewRevocation(path, ca.Cert, certs.RevocationOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("NewRevocation(%s): %v", path, err)
	}
	return r
}
