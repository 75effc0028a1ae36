package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
)

// fakeClock is a settable clock for RevocationOptions.Now, safe to read from handshake
// goroutines.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func newFakeClock(t time.Time) *fakeClock {
	c := new(fakeClock)
	c.Set(t)
	return c
}

func (c *fakeClock) Now() time.Time      { return *c.t.Load() }
func (c *fakeClock) Set(t time.Time)     { c.t.Store(&t) }
func (c *fakeClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// crlSetup is a CA with a directory holding ca.crt, ca.key and crl.pem, as 'tunneld pki init'
// leaves it, and a Revocation enforcing that crl.pem on a fake clock.
type crlSetup struct {
	ca    *certstest.CA
	dir   string
	file  string // dir/crl.pem
	clock *fakeClock
	rev   *certs.Revocation
}

func newCRLSetup(t *testing.T) *crlSetup {
	t.Helper()
	s := &crlSetup{ca: certstest.NewCA(t), dir: t.TempDir(), clock: newFakeClock(time.Now())}
	s.ca.WriteFiles(t, s.dir)
	u, err := certs.RefreshCRL(s.dir, certs.CRLOptions{})
	if err != nil {
		t.Fatalf("RefreshCRL: %v", err)
	}
	s.file = u.File
	s.rev, err = certs.NewRevocation(s.file, s.ca.Cert, certs.RevocationOptions{Now: s.clock.Now})
	if err != nil {
		t.Fatalf("NewRevocation: %v", err)
	}
	return s
}

// revoke revokes cert in the directory's crl.pem (as 'tunneld pki revoke --serial' does).
func (s *crlSetup) revoke(t *testing.T, cert tls.Certificate) {
	t.Helper()
	if _, err := certs.Revoke(s.dir, certs.RevokeRequest{Serial: cert.Leaf.SerialNumber, Reason: 1}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

// server returns a server config for "vpn.test" that checks s.rev.
func (s *crlSetup) server(t *testing.T) *tls.Config {
	t.Helper()
	return certs.WithRevocation(s.ca.ServerConfig(t, "vpn.test"), s.rev)
}

// client returns a client config presenting cert.
func (s *crlSetup) client(cert tls.Certificate) *tls.Config {
	return certs.ClientConfigFrom(cert, s.ca.Pool(), "vpn.test")
}

func TestNewRevocationErrors(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "crl.pem")
	ca.WriteCRL(t, good, certs.CRLRequest{})
	tests := []struct {
		name    string
		path    string
		ca      *x509.Certificate
		wantErr string
	}{
		{"missing", filepath.Join(dir, "none.pem"), ca.Cert, "not found: create it with 'tunneld pki crl --dir " + dir + "'"},
		{"wrong CA", good, certstest.NewCA(t).Cert, "is not signed by the CA"},
		{"nil CA", good, nil, "CA certificate is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := certs.NewRevocation(tt.path, tt.ca, certs.RevocationOptions{})
			if err == nil || r != nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewRevocation = %v, %v; want nil and error containing %q", r, err, tt.wantErr)
			}
		})
	}
}

// TestRevocationHandshake runs real handshakes against a server whose CRL goes through a
// sequence of states; each step starts from the state the previous one left.
func TestRevocationHandshake(t *testing.T) {
	s := newCRLSetup(t)
	server := s.server(t)
	good, revoked := s.ca.ClientCert(t, "laptop"), s.ca.ClientCert(t, "phone")
	s.revoke(t, revoked)
	if err := s.rev.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	crlBytes, err := os.ReadFile(s.file)
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name    string
		setup   func(t *testing.T)
		cert    tls.Certificate
		wantIs  error  // nil means the handshake succeeds
		wantErr string // substring of the server error
	}{
		{name: "good certificate", cert: good},
		{name: "revoked certificate", cert: revoked, wantIs: certs.ErrRevoked,
			wantErr: `certificate is revoked: "phone" (serial ` + certs.FormatSerial(revoked.Leaf.SerialNumber) + ") was revoked at "},
		{name: "garbage CRL fails closed", setup: func(t *testing.T) {
			writeFile(t, s.file, []byte("garbage"))
			if err := s.rev.Reload(); err == nil {
				t.Fatal("Reload(garbage) = nil, want error")
			}
		}, cert: good, wantIs: certs.ErrNoValidCRL, wantErr: "holds no PEM X509 CRL block"},
		{name: "missing CRL fails closed", setup: func(t *testing.T) {
			if err := os.Remove(s.file); err != nil {
				t.Fatal(err)
			}
			if err := s.rev.Reload(); err == nil {
				t.Fatal("Reload(missing) = nil, want error")
			}
		}, cert: good, wantIs: certs.ErrNoValidCRL, wantErr: "not found: create it with 'tunneld pki crl"},
		{name: "good CRL restored", setup: func(t *testing.T) {
			writeFile(t, s.file, crlBytes)
			if err := s.rev.Reload(); err != nil {
				t.Fatalf("Reload(restored): %v", err)
			}
		}, cert: good},
		{name: "CRL expires while loaded", setup: func(t *testing.T) {
			s.clock.Add(certs.DefaultCRLDays*24*time.Hour + time.Minute)
		}, cert: good, wantIs: certs.ErrNoValidCRL, wantErr: "expired at "},
		{name: "refreshed CRL", setup: func(t *testing.T) {
			if _, err := certs.RefreshCRL(s.dir, certs.CRLOptions{Now: s.clock.Now()}); err != nil {
				t.Fatal(err)
			}
			if err := s.rev.Reload(); err != nil {
				t.Fatalf("Reload(refreshed): %v", err)
			}
		}, cert: good},
		{name: "still revoked after refresh", cert: revoked, wantIs: certs.ErrRevoked},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.setup != nil {
				st.setup(t)
			}
			// The server's Time follows the fake clock, so chain verification agrees with
			// the checker; the certificates are valid for a year either way.
			srv := server.Clone()
			srv.Time = s.clock.Now
			res := certstest.Handshake(t, srv, s.client(st.cert))
			if st.wantIs == nil {
				if res.ServerErr != nil || res.ClientErr != nil {
					t.Fatalf("handshake: server %v, client %v; want success", res.ServerErr, res.ClientErr)
				}
				return
			}
			if !errors.Is(res.ServerErr, st.wantIs) || !strings.Contains(res.ServerErr.Error(), st.wantErr) {
				t.Errorf("server error = %v, want %v containing %q", res.ServerErr, st.wantIs, st.wantErr)
			}
			if res.ClientErr == nil || !strings.Contains(res.ClientErr.Error(), "bad certificate") {
				t.Errorf("client error = %v, want a bad certificate alert", res.ClientErr)
			}
		})
	}
}

// TestRevocationResumption enables session tickets (which the default server config
// disables), resumes a session, revokes the client certificate, reloads, and checks that the
// next resumption attempt is refused: the check lives in VerifyConnection, which crypto/tls
// runs on resumed handshakes too.
func TestRevocationResumption(t *testing.T) {
	s := newCRLSetup(t)
	cert := s.ca.ClientCert(t, "laptop")
	now := time.Now()

	server := s.server(t)
	server.SessionTicketsDisabled = false
	server.Time = func() time.Time { return now } // set, so Handshake does not clone per call
	var mu sync.Mutex
	var resumed []bool // DidResume seen by each VerifyConnection call
	verify := server.VerifyConnection
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		mu.Lock()
		resumed = append(resumed, cs.DidResume)
		mu.Unlock()
		return verify(cs)
	}
	client := s.client(cert)
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	client.Time = server.Time

	handshake := func(wantResumed bool) certstest.HandshakeResult {
		t.Helper()
		res := certstest.Handshake(t, server, client)
		mu.Lock()
		defer mu.Unlock()
		if len(resumed) == 0 || resumed[len(resumed)-1] != wantResumed {
			t.Fatalf("VerifyConnection calls saw DidResume %v, want the last to be %v", resumed, wantResumed)
		}
		return res
	}
	if res := handshake(false); res.ServerErr != nil || res.ClientErr != nil {
		t.Fatalf("first handshake: server %v, client %v", res.ServerErr, res.ClientErr)
	}
	res := handshake(true)
	if res.ServerErr != nil || res.ClientErr != nil || !res.Server.DidResume {
		t.Fatalf("second handshake: server %v, client %v, resumed %v; want a resumed session", res.ServerErr, res.ClientErr, res.Server.DidResume)
	}

	s.revoke(t, cert)
	if err := s.rev.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	res = handshake(true)
	if !errors.Is(res.ServerErr, certs.ErrRevoked) {
		t.Errorf("resumed handshake after revocation: server error = %v, want ErrRevoked", res.ServerErr)
	}
	if res.ClientErr == nil {
		t.Errorf("resumed handshake after revocation: client error = nil, want refusal")
	}
}

// TestRevocationOtherCA checks that a server trusting two CAs but holding the CRL of only one
// refuses certificates from the other: their revocation cannot be checked.
func TestRevocationOtherCA(t *testing.T) {
	s := newCRLSetup(t)
	other := certstest.NewCA(t)
	pool := s.ca.Pool()
	pool.AddCert(other.Cert)
	server := certs.WithRevocation(certs.ServerConfigFrom(s.ca.ServerCert(t, "vpn.test"), pool), s.rev)
	client := certs.ClientConfigFrom(other.ClientCert(t, "stranger"), s.ca.Pool(), "vpn.test")
	res := certstest.Handshake(t, server, client)
	if res.ServerErr == nil || !strings.Contains(res.ServerErr.Error(), "the server cannot check its revocation") {
		t.Errorf("server error = %v, want refusal of a certificate the CRL does not cover", res.ServerErr)
	}
}

func TestRevocationCheck(t *testing.T) {
	s := newCRLSetup(t)
	good := s.ca.ClientCert(t, "laptop")
	expired := s.ca.ExpiredClientCert(t, "old")
	future := s.ca.Issue(t, certs.IssueRequest{Name: "future", Client: true, Days: 1, Now: time.Now().Add(time.Hour)})
	tests := []struct {
		name    string
		leaf    *x509.Certificate
		wantErr string
	}{
		{"good", good.Leaf, ""},
		{"expired", expired.Leaf, `certificate "old" (serial ` + certs.FormatSerial(expired.Leaf.SerialNumber) + ") expired at "},
		{"not yet valid", future.Leaf, `certificate "future" (serial ` + certs.FormatSerial(future.Leaf.SerialNumber) + ") is not valid until "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.rev.Check(tt.leaf)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Check(%s) = %v, want %q", tt.name, err, tt.wantErr)
			}
		})
	}
	if s.rev.IsRevoked(good.Leaf.SerialNumber) {
		t.Errorf("IsRevoked(good) = true before revocation")
	}
	s.revoke(t, good)
	if s.rev.IsRevoked(good.Leaf.SerialNumber) {
		t.Errorf("IsRevoked(good) = true before the reload")
	}
	if err := s.rev.Reload(); err != nil {
		t.Fatal(err)
	}
	if !s.rev.IsRevoked(good.Leaf.SerialNumber) {
		t.Errorf("IsRevoked(revoked) = false after the reload")
	}
	crl, err := s.rev.Current()
	if err != nil {
		t.Fatal(err)
	}
	if next, err := s.rev.NextUpdate(); err != nil || !next.Equal(crl.List.NextUpdate) {
		t.Errorf("NextUpdate = %v, %v; want %v", next, err, crl.List.NextUpdate)
	}
	// Fail closed: with no valid CRL, every serial counts as revoked.
	s.clock.Add(365 * 24 * time.Hour)
	if !s.rev.IsRevoked(big.NewInt(12345)) {
		t.Errorf("IsRevoked with an expired CRL = false, want true (fail closed)")
	}
	if _, err := s.rev.Current(); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("Current with an expired CRL = %v, want the expiry error", err)
	}
	if _, err := s.rev.NextUpdate(); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("NextUpdate with an expired CRL = %v, want the expiry error", err)
	}
}

func TestRevocationReloadIfChanged(t *testing.T) {
	s := newCRLSetup(t)
	cert := s.ca.ClientCert(t, "laptop")
	oldCRL, err := os.ReadFile(s.file)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name         string
		change       func(t *testing.T)
		wantReloaded bool
		wantErr      string // from ReloadIfChanged; "" means nil
		wantRevoked  bool   // IsRevoked(cert) afterwards
	}{
		{"unchanged", func(*testing.T) {}, false, "", false},
		{"revoked", func(t *testing.T) { s.revoke(t, cert) }, true, "", true},
		{"unchanged again", func(*testing.T) {}, false, "", true},
		{"same bytes rewritten", func(t *testing.T) {
			b, _ := os.ReadFile(s.file)
			writeFile(t, s.file, b)
		}, false, "", true},
		{"garbage", func(t *testing.T) { writeFile(t, s.file, []byte("junk")) }, true, "holds no PEM X509 CRL block", true},
		{"garbage reported once", func(*testing.T) {}, false, "", true},
		{"older CRL restored", func(t *testing.T) { writeFile(t, s.file, oldCRL) }, true,
			"has number 1, older than number 2 loaded before: an old copy replaced it", true},
		{"newer CRL", func(t *testing.T) {
			s.ca.WriteCRL(t, s.file, certs.CRLRequest{Number: big.NewInt(5)})
		}, true, "", false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change(t)
			reloaded, err := s.rev.ReloadIfChanged()
			if reloaded != st.wantReloaded || st.wantErr == "" && err != nil || st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
				t.Fatalf("ReloadIfChanged = %v, %v; want %v, %q", reloaded, err, st.wantReloaded, st.wantErr)
			}
			if got := s.rev.IsRevoked(cert.Leaf.SerialNumber); got != st.wantRevoked {
				t.Errorf("IsRevoked = %v, want %v", got, st.wantRevoked)
			}
		})
	}
}

// TestRevocationKeepsCRLWhenOutOfDescriptors: a reload that fails because the process or the
// system ran out of descriptors (or memory) keeps the CRL in force, so a busy server does not
// close every live session as revoked; a missing file still fails closed.
func TestRevocationKeepsCRLWhenOutOfDescriptors(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	ca.WriteFiles(t, dir)
	u, err := certs.RefreshCRL(dir, certs.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Pointer[error]
	rev, err := certs.NewRevocation(u.File, ca.Cert, certs.RevocationOptions{ReadFile: func(name string) ([]byte, error) {
		if e := fail.Load(); e != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: *e}
		}
		return os.ReadFile(name)
	}})
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.ClientCert(t, "laptop")
	for _, tc := range []struct {
		err      error
		failOpen bool // refuse every certificate afterwards
	}{
		{syscall.EMFILE, false},
		{syscall.ENFILE, false},
		{syscall.ENOMEM, false},
		{syscall.ENOENT, true},
	} {
		fail.Store(&tc.err)
		if err := rev.Reload(); err == nil {
			t.Fatalf("%v: Reload succeeded", tc.err)
		}
		if got := rev.IsRevoked(cert.Leaf.SerialNumber); got != tc.failOpen {
			t.Fatalf("after a reload failing with %v: IsRevoked = %v, want %v", tc.err, got, tc.failOpen)
		}
	}
}

// TestRevocationWatch runs Watch in a synctest bubble, so its ticker fires in bubble time: it
// reports a reload after the file changes, a failure once, and expiry once.
func TestRevocationWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := certstest.NewCA(t)
		path := filepath.Join(t.TempDir(), "crl.pem")
		// Inside the bubble time.Now is the bubble's clock, which Revocation uses by default.
		ca.WriteCRL(t, path, certs.CRLRequest{Number: big.NewInt(1), Days: 2})
		r, err := certs.NewRevocation(path, ca.Cert, certs.RevocationOptions{})
		if err != nil {
			t.Fatal(err)
		}
		reportc := make(chan string, 10)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.Watch(ctx, time.Hour, func(err error) {
				if err == nil {
					reportc <- "reloaded"
				} else {
					reportc <- err.Error()
				}
			})
		}()
		var reports []string
		tick := func() {
			time.Sleep(time.Hour)
			synctest.Wait()
			for len(reportc) > 0 {
				reports = append(reports, <-reportc)
			}
		}
		want := func(step string, w ...string) {
			t.Helper()
			if strings.Join(reports, "|") != strings.Join(w, "|") {
				t.Fatalf("%s: reports = %q, want %q", step, reports, w)
			}
			reports = nil
		}

		tick()
		want("unchanged")
		cert := ca.ClientCert(t, "laptop")
		ca.WriteCRL(t, path, certs.CRLRequest{Number: big.NewInt(2), Days: 2, Revoked: []x509.RevocationListEntry{certstest.RevokedEntry(cert, time.Now())}})
		tick()
		want("changed", "reloaded")
		if !r.IsRevoked(cert.Leaf.SerialNumber) {
			t.Errorf("IsRevoked after Watch reloaded = false")
		}
		writeFile(t, path, []byte("junk"))
		tick()
		tick()
		if len(reports) != 1 || !strings.Contains(reports[0], "holds no PEM X509 CRL block") {
			t.Fatalf("broken: reports = %q, want one parse error", reports)
		}
		reports = nil
		ca.WriteCRL(t, path, certs.CRLRequest{Number: big.NewInt(3), Days: 2})
		tick()
		want("fixed", "reloaded")
		time.Sleep(2 * 24 * time.Hour)
		tick()
		if len(reports) != 1 || !strings.Contains(reports[0], "expired at") {
			t.Fatalf("expired: reports = %q, want the expiry reported once", reports)
		}
		cancel()
		<-done
	})
}

func TestLoadCACert(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	caFile := ca.WriteFiles(t, dir)
	got, err := certs.LoadCACert(caFile)
	if err != nil || !got.Equal(ca.Cert) {
		t.Fatalf("LoadCACert = %v, %v; want the CA", got, err)
	}
	leafFile, _ := certstest.WriteCert(t, dir, "laptop", ca.ClientCert(t, "laptop"))
	if _, err := certs.LoadCACert(leafFile); err == nil || !strings.Contains(err.Error(), "must hold exactly one CA certificate") {
		t.Errorf("LoadCACert(leaf) = %v, want refusal", err)
	}
}

func TestWithRevocationKeepsIdentityCheck(t *testing.T) {
	ca := certstest.NewCA(t)
	base := ca.ServerConfig(t, "vpn.test")
	cfg := certs.WithRevocation(base, ca.Revocation(t))
	if cfg == base || base.VerifyConnection == nil {
		t.Fatal("WithRevocation modified its argument instead of cloning it")
	}
	res := certstest.Handshake(t, cfg, certs.ClientConfigFrom(emptyCNClientCert(t, ca), ca.Pool(), "vpn.test"))
	if res.ServerErr == nil || !strings.Contains(res.ServerErr.Error(), "empty common name") {
		t.Errorf("server error = %v, want the identity check to still run first", res.ServerErr)
	}
	good := ca.ClientCert(t, "laptop")
	cfg = certs.WithRevocation(base, ca.Revocation(t, good))
	if res := certstest.Handshake(t, cfg, certs.ClientConfigFrom(good, ca.Pool(), "vpn.test")); !errors.Is(res.ServerErr, certs.ErrRevoked) {
		t.Errorf("certstest.Revocation(good): server error = %v, want ErrRevoked", res.ServerErr)
	}
}

// writeFile replaces path with data.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
