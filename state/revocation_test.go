package state_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/state"
)

// TestOpenRevocation: the file-backed Revocation refuses a revoked
// certificate and passes another, reports the list's expiry, reloads a
// changed file, and fails closed when the file goes bad.
func TestOpenRevocation(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	caFile := ca.WriteFiles(t, dir)
	good, stolen := ca.ClientCert(t, "laptop"), ca.ClientCert(t, "stolen")
	path := filepath.Join(dir, "crl.pem")
	list := ca.WriteCRL(t, path, certs.CRLRequest{Revoked: []x509.RevocationListEntry{certstest.RevokedEntry(stolen, time.Now())}})
	var rev state.Revocation
	rev, err := state.OpenRevocation(caFile, path)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(c tls.Certificate) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c.Leaf, ca.Cert}}}
	}
	if err := rev.VerifyConnection(conn(good)); err != nil {
		t.Errorf("VerifyConnection(laptop) = %v, want nil", err)
	}
	if err := rev.VerifyConnection(conn(stolen)); !errors.Is(err, certs.ErrRevoked) {
		t.Errorf("VerifyConnection(stolen) = %v, want revoked", err)
	}
	if next, err := rev.NextUpdate(); err != nil || !next.Equal(list.NextUpdate) {
		t.Errorf("NextUpdate = %v, %v; want %v", next, err, list.NextUpdate)
	}
	if rev.Path() != path {
		t.Errorf("Path = %q, want %q", rev.Path(), path)
	}
	if reloaded, err := rev.ReloadIfChanged(); reloaded || err != nil {
		t.Errorf("ReloadIfChanged of an unchanged file = %v, %v", reloaded, err)
	}
	if err := os.WriteFile(path, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if reloaded, err := rev.ReloadIfChanged(); !reloaded || err == nil {
		t.Errorf("ReloadIfChanged of a broken file = %v, %v; want reloaded with an error", reloaded, err)
	}
	if err := rev.VerifyConnection(conn(good)); !errors.Is(err, certs.ErrNoValidCRL) {
		t.Errorf("VerifyConnection with a broken list = %v, want refused (fail closed)", err)
	}
	if _, err := rev.NextUpdate(); err == nil {
		t.Error("NextUpdate with a broken list = nil error")
	}
	if _, err := state.OpenRevocation(caFile, filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("OpenRevocation of a missing file: no error")
	}
}
