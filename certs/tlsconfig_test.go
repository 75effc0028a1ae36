package certs_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
)

// checkStrict checks the settings both sides must have.
func checkStrict(t *testing.T, cfg *tls.Config) {
	t.Helper()
	if cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != tls.VersionTLS13 {
		t.Errorf("versions = %#x..%#x, want TLS 1.3 only", cfg.MinVersion, cfg.MaxVersion)
	}
	if want := []tls.CurveID{tls.X25519MLKEM768, tls.X25519}; !slices.Equal(cfg.CurvePreferences, want) {
		t.Errorf("CurvePreferences = %v, want %v", cfg.CurvePreferences, want)
	}
	if !cfg.DynamicRecordSizingDisabled {
		t.Errorf("DynamicRecordSizingDisabled = false, want true")
	}
	if len(cfg.Certificates) != 1 || cfg.Certificates[0].Leaf == nil {
		t.Errorf("Certificates = %d entries, want 1 with a parsed Leaf", len(cfg.Certificates))
	}
	if cfg.InsecureSkipVerify {
		t.Errorf("InsecureSkipVerify = true")
	}
}

func TestConfigFromFiles(t *testing.T) {
	dir, ca := newPKI(t, certs.CAOptions{})
	srv, err := certs.Issue(dir, certs.IssueRequest{Name: "vpn.test", Server: true, Days: 30})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := certs.Issue(dir, certs.IssueRequest{Name: "laptop", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")

	scfg, err := certs.ServerConfig(srv.CertFile, srv.KeyFile, caFile)
	if err != nil {
		t.Fatalf("ServerConfig: %v", err)
	}
	checkStrict(t, scfg)
	if scfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("ClientAuth = %v, want RequireAndVerifyClientCert", scfg.ClientAuth)
	}
	if scfg.ClientCAs == nil || !scfg.ClientCAs.Equal(ca.Pool()) {
		t.Errorf("ClientCAs is not a pool of only the project CA")
	}
	if scfg.VerifyConnection == nil {
		t.Errorf("VerifyConnection = nil, want the identity (and later revocation) check")
	}
	if got := certs.LeafExpiry(scfg); !got.Equal(srv.Cert.NotAfter) {
		t.Errorf("LeafExpiry(server) = %v, want %v", got, srv.Cert.NotAfter)
	}

	ccfg, err := certs.ClientConfig(cli.CertFile, cli.KeyFile, caFile, "vpn.test")
	if err != nil {
		t.Fatalf("ClientConfig: %v", err)
	}
	checkStrict(t, ccfg)
	if ccfg.RootCAs == nil || !ccfg.RootCAs.Equal(ca.Pool()) {
		t.Errorf("RootCAs is not a pool of only the project CA")
	}
	if ccfg.ServerName != "vpn.test" {
		t.Errorf("ServerName = %q, want vpn.test", ccfg.ServerName)
	}
	if got := certs.LeafExpiry(ccfg); !got.Equal(cli.Cert.NotAfter) {
		t.Errorf("LeafExpiry(client) = %v, want %v", got, cli.Cert.NotAfter)
	}
	if got := certs.LeafExpiry(&tls.Config{}); !got.IsZero() {
		t.Errorf("LeafExpiry(empty) = %v, want zero", got)
	}

	res := certstest.Handshake(t, scfg, ccfg)
	if res.ServerErr != nil || res.ClientErr != nil {
		t.Fatalf("handshake: server %v, client %v", res.ServerErr, res.ClientErr)
	}
	if id, err := certs.PeerIdentity(res.Server); id != "laptop" || err != nil {
		t.Errorf("PeerIdentity(server side) = %q, %v, want laptop", id, err)
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir, _ := newPKI(t, certs.CAOptions{})
	otherDir, _ := newPKI(t, certs.CAOptions{})
	issue := func(dir string, req certs.IssueRequest) certs.Files {
		t.Helper()
		f, err := certs.Issue(dir, req)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	srv := issue(dir, certs.IssueRequest{Name: "vpn.test", Server: true})
	cli := issue(dir, certs.IssueRequest{Name: "laptop", Client: true})
	foreign := issue(otherDir, certs.IssueRequest{Name: "vpn.test", Server: true})
	caFile := filepath.Join(dir, "ca.crt")

	ca := certstest.NewCA(t)
	expiredDir := t.TempDir()
	caFileExpired := ca.WriteFiles(t, expiredDir)
	expCert, expKey := certstest.WriteCert(t, expiredDir, "old", ca.Issue(t, certs.IssueRequest{
		Name: "old.test", Server: true, Days: 1, Now: time.Now().AddDate(0, 0, -3),
	}))
	missing := filepath.Join(dir, "nope.crt")

	tests := []struct {
		name                  string
		client                bool
		cert, key, ca, server string
		wantErr               string
	}{
		{"missing cert", false, missing, srv.KeyFile, caFile, "", "server certificate " + missing + " not found: create it with 'tunneld pki issue --dir DIR --server --name NAME'"},
		{"missing client cert", true, missing, cli.KeyFile, caFile, "vpn.test", "client certificate " + missing + " not found: create it with 'tunneld pki issue --dir DIR --client --name NAME'"},
		{"missing CA", false, srv.CertFile, srv.KeyFile, missing, "", "CA certificate " + missing + " not found"},
		{"key mismatch", false, srv.CertFile, cli.KeyFile, caFile, "", "key " + cli.KeyFile + " does not match certificate " + srv.CertFile},
		{"key as cert", false, srv.KeyFile, srv.KeyFile, caFile, "", "holds a private key, not a certificate"},
		{"cert as key", false, srv.CertFile, srv.CertFile, caFile, "", "holds a certificate, not a private key"},
		{"leaf as CA", false, srv.CertFile, srv.KeyFile, srv.CertFile, "", "not a CA certificate"},
		{"client cert for server", false, cli.CertFile, cli.KeyFile, caFile, "", "is not a server certificate"},
		{"server cert for client", true, srv.CertFile, srv.KeyFile, caFile, "vpn.test", "is not a client certificate"},
		{"other CA", false, foreign.CertFile, foreign.KeyFile, caFile, "", "was not issued by the CA in " + caFile},
		{"expired", false, expCert, expKey, caFileExpired, "", "expired at"},
		{"no server name", true, cli.CertFile, cli.KeyFile, caFile, "", "server name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.client {
				_, err = certs.ClientConfig(tt.cert, tt.key, tt.ca, tt.server)
			} else {
				_, err = certs.ServerConfig(tt.cert, tt.key, tt.ca)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("config(%s, %s, %s) = %v, want error containing %q", tt.cert, tt.key, tt.ca, err, tt.wantErr)
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	ca := certstest.NewCA(t)
	edCA := certstest.NewCAAlgorithm(t, certs.Ed25519)
	other := certstest.NewCA(t)
	server := ca.ServerConfig(t, "vpn.test")

	tls12 := ca.ClientConfig(t, "laptop", "vpn.test")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	noCert := ca.ClientConfig(t, "laptop", "vpn.test")
	noCert.Certificates = nil
	noCN := certs.ClientConfigFrom(ca.ClientCert(t, "x"), ca.Pool(), "vpn.test")
	noCN.Certificates[0] = emptyCNClientCert(t, ca)

	tests := []struct {
		name          string
		server        *tls.Config
		client        *tls.Config
		wantID        string // on success
		wantServerErr string // substring; "" means success expected on both ends
		wantClientErr string
	}{
		{name: "ecdsa", server: server, client: ca.ClientConfig(t, "laptop", "vpn.test"), wantID: "laptop"},
		{name: "ed25519", server: edCA.ServerConfig(t, "vpn.test"), client: edCA.ClientConfig(t, "alice", "vpn.test"), wantID: "alice"},
		{name: "server IP SAN", server: ca.ServerConfig(t, "192.0.2.1"), client: ca.ClientConfig(t, "phone", "192.0.2.1"), wantID: "phone"},
		{name: "client from another CA", server: server, client: certs.ClientConfigFrom(other.ClientCert(t, "mallory"), ca.Pool(), "vpn.test"),
			wantServerErr: "certificate signed by unknown authority", wantClientErr: "unknown certificate authority"},
		{name: "server from another CA", server: other.ServerConfig(t, "vpn.test"), client: ca.ClientConfig(t, "laptop", "vpn.test"),
			wantServerErr: "bad certificate", wantClientErr: "certificate signed by unknown authority"},
		{name: "expired client", server: server, client: certs.ClientConfigFrom(ca.ExpiredClientCert(t, "old"), ca.Pool(), "vpn.test"),
			wantServerErr: "certificate has expired", wantClientErr: "expired certificate"},
		{name: "server cert as client cert", server: server, client: certs.ClientConfigFrom(ca.ServerCert(t, "evil.test"), ca.Pool(), "vpn.test"),
			wantServerErr: "incompatible key usage", wantClientErr: "bad certificate"},
		{name: "wrong server name", server: server, client: ca.ClientConfig(t, "laptop", "other.test"),
			wantServerErr: "bad certificate", wantClientErr: "not other.test"},
		{name: "TLS 1.2 client", server: server, client: tls12,
			wantServerErr: "client offered only unsupported versions", wantClientErr: "protocol version"},
		{name: "no client certificate", server: server, client: noCert,
			wantServerErr: "didn't provide a certificate", wantClientErr: "certificate required"},
		{name: "empty common name", server: server, client: noCN,
			wantServerErr: "empty common name", wantClientErr: "bad certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := certstest.Handshake(t, tt.server, tt.client)
			if tt.wantServerErr == "" {
				if res.ServerErr != nil || res.ClientErr != nil {
					t.Fatalf("handshake: server %v, client %v; want success", res.ServerErr, res.ClientErr)
				}
				if res.Client.Version != tls.VersionTLS13 {
					t.Errorf("Version = %#x, want TLS 1.3", res.Client.Version)
				}
				if res.Client.CurveID != tls.X25519MLKEM768 || res.Server.CurveID != tls.X25519MLKEM768 {
					t.Errorf("CurveID = %v (client), %v (server), want X25519MLKEM768", res.Client.CurveID, res.Server.CurveID)
				}
				if res.Client.DidResume {
					t.Errorf("DidResume = true")
				}
				if id, err := certs.PeerIdentity(res.Server); id != tt.wantID || err != nil {
					t.Errorf("PeerIdentity(server side) = %q, %v, want %q", id, err, tt.wantID)
				}
				return
			}
			if res.ServerErr == nil || !strings.Contains(res.ServerErr.Error(), tt.wantServerErr) {
				t.Errorf("server error = %v, want one containing %q", res.ServerErr, tt.wantServerErr)
			}
			if res.ClientErr == nil || !strings.Contains(res.ClientErr.Error(), tt.wantClientErr) {
				t.Errorf("client error = %v, want one containing %q", res.ClientErr, tt.wantClientErr)
			}
		})
	}
}

// emptyCNClientCert returns a clientAuth certificate from ca with no CommonName, which the
// production issuer refuses to make.
func emptyCNClientCert(t *testing.T, ca *certstest.CA) tls.Certificate {
	t.Helper()
	c := ca.ClientCert(t, "placeholder")
	tmpl := *c.Leaf
	tmpl.Subject.CommonName = ""
	tmpl.Subject.Names = nil
	tmpl.RawSubject = nil // CreateCertificate prefers RawSubject over Subject
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, c.Leaf.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: c.PrivateKey}
}

func TestPeerIdentityErrors(t *testing.T) {
	_, err := certs.PeerIdentity(tls.ConnectionState{})
	if !errors.Is(err, certs.ErrNoPeerCertificate) {
		t.Errorf("PeerIdentity(no chains) = %v, want ErrNoPeerCertificate", err)
	}
}
