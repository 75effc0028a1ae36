package certstest_test

import (
	"path/filepath"
	"testing"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
)

func TestExpiredClientCert(t *testing.T) {
	ca := certstest.NewCA(t)
	c := ca.ExpiredClientCert(t, "old")
	if !c.Leaf.NotAfter.Before(time.Now()) {
		t.Errorf("NotAfter = %v, want in the past", c.Leaf.NotAfter)
	}
}

func TestWriteFilesUsableByCerts(t *testing.T) {
	for _, alg := range []certs.Algorithm{certs.ECDSA, certs.Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			ca := certstest.NewCAAlgorithm(t, alg)
			dir := t.TempDir()
			caFile := ca.WriteFiles(t, dir)
			if want := filepath.Join(dir, "ca.crt"); caFile != want {
				t.Errorf("WriteFiles = %q, want %q", caFile, want)
			}
			loaded, err := certs.LoadCA(dir)
			if err != nil {
				t.Fatalf("LoadCA after WriteFiles: %v", err)
			}
			if !loaded.Cert.Equal(ca.Cert) {
				t.Errorf("LoadCA returned a different certificate")
			}
			srv, err := certs.Issue(dir, certs.IssueRequest{Name: "vpn.test", Server: true})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			cliCert, cliKey := certstest.WriteCert(t, dir, "laptop", ca.ClientCert(t, "laptop"))
			scfg, err := certs.ServerConfig(srv.CertFile, srv.KeyFile, caFile)
			if err != nil {
				t.Fatalf("ServerConfig: %v", err)
			}
			ccfg, err := certs.ClientConfig(cliCert, cliKey, caFile, "vpn.test")
			if err != nil {
				t.Fatalf("ClientConfig: %v", err)
			}
			if res := certstest.Handshake(t, scfg, ccfg); res.ServerErr != nil || res.ClientErr != nil {
				t.Fatalf("Handshake: server %v, client %v", res.ServerErr, res.ClientErr)
			}
		})
	}
}
