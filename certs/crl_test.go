package certs_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
)

// checkCRLValidity checks that list was issued at about issuedAfter and is valid for days days.
func checkCRLValidity(t *testing.T, list *x509.RevocationList, issuedAfter time.Time, days int) {
	t.Helper()
	if d := list.ThisUpdate.Sub(issuedAfter); d < -time.Second || d > time.Minute {
		t.Errorf("ThisUpdate = %v, want about %v", list.ThisUpdate, issuedAfter)
	}
	if got := list.NextUpdate.Sub(list.ThisUpdate); got != time.Duration(days)*24*time.Hour {
		t.Errorf("NextUpdate - ThisUpdate = %v, want %d days", got, days)
	}
}

func TestInitCAWritesCRL(t *testing.T) {
	tests := []struct {
		name     string
		opts     certs.CAOptions
		wantDays int
	}{
		{"default validity", certs.CAOptions{}, certs.DefaultCRLDays},
		{"crl days", certs.CAOptions{CRLDays: 7}, 7},
		{"ed25519", certs.CAOptions{Algorithm: certs.Ed25519}, certs.DefaultCRLDays},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			before := time.Now()
			f, err := certs.InitCA(dir, tt.opts)
			if err != nil {
				t.Fatalf("InitCA(%+v): %v", tt.opts, err)
			}
			if want := filepath.Join(dir, "crl.pem"); f.CRLFile != want {
				t.Errorf("CRLFile = %q, want %q", f.CRLFile, want)
			}
			if got := fileMode(t, f.CRLFile); got != 0o644 {
				t.Errorf("mode of %s = %v, want 0644", f.CRLFile, got)
			}
			b, err := os.ReadFile(f.CRLFile)
			if err != nil {
				t.Fatal(err)
			}
			if block, _ := pem.Decode(b); block == nil || block.Type != "X509 CRL" {
				t.Fatalf("%s holds no PEM X509 CRL block:\n%s", f.CRLFile, b)
			}
			crl, err := certs.LoadCRL(f.CRLFile, f.Cert)
			if err != nil {
				t.Fatalf("LoadCRL: %v", err)
			}
			if crl.List.Number.Cmp(big.NewInt(1)) != 0 || len(crl.List.RevokedCertificateEntries) != 0 {
				t.Errorf("CRL number %v with %d entries, want number 1 and none", crl.List.Number, len(crl.List.RevokedCertificateEntries))
			}
			if err := crl.List.CheckSignatureFrom(f.Cert); err != nil {
				t.Errorf("CRL does not verify against the CA: %v", err)
			}
			checkCRLValidity(t, crl.List, before, tt.wantDays)
		})
	}
}

func TestInitCARefusesExistingCRL(t *testing.T) {
	dir := t.TempDir()
	crlFile := filepath.Join(dir, "crl.pem")
	if err := os.WriteFile(crlFile, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := certs.InitCA(dir, certs.CAOptions{})
	if err == nil || !strings.Contains(err.Error(), "CRL "+crlFile+" already exists: refusing to overwrite") {
		t.Fatalf("InitCA with existing crl.pem = %v, want refusal naming it", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %d entries after refusal, want only crl.pem", len(entries))
	}
}

// pkiDir returns a directory holding a CA (with crl.pem), a server certificate "vpn.test"
// and client certificates "laptop" and "phone".
func pkiDir(t *testing.T) (string, *certs.CA) {
	t.Helper()
	dir, ca := newPKI(t, certs.CAOptions{})
	for _, req := range []certs.IssueRequest{
		{Name: "vpn.test", Server: true},
		{Name: "laptop", Client: true},
		{Name: "phone", Client: true},
	} {
		if _, err := certs.Issue(dir, req); err != nil {
			t.Fatalf("Issue(%+v): %v", req, err)
		}
	}
	return dir, ca
}

// readCert returns the certificate dir/name.crt.
func readCert(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	for _, ic := range mustListCerts(t, dir) {
		if ic.Name == name {
			return ic.Cert
		}
	}
	t.Fatalf("no %s.crt in %s", name, dir)
	return nil
}

func mustListCerts(t *testing.T, dir string) []certs.IssuedCert {
	t.Helper()
	list, err := certs.ListCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestRevoke(t *testing.T) {
	dir, ca := pkiDir(t)
	crlFile := filepath.Join(dir, "crl.pem")
	laptop, phone := readCert(t, dir, "laptop"), readCert(t, dir, "phone")
	unknown := big.NewInt(0xC0FFEE)
	at := time.Now().Add(-time.Hour).Truncate(time.Second)

	// Each step runs on the directory the previous one left.
	steps := []struct {
		name        string
		req         certs.RevokeRequest
		wantAlready bool
		wantSerial  *big.Int
		wantCert    string // file the serial was found in; "" for none
		wantReason  int
		wantNumber  int64
		wantEntries int
	}{
		{"by name", certs.RevokeRequest{Name: "laptop", Reason: 1, Now: at}, false, laptop.SerialNumber, "laptop.crt", 1, 2, 1},
		{"by serial", certs.RevokeRequest{Serial: phone.SerialNumber, Reason: 4}, false, phone.SerialNumber, "phone.crt", 4, 3, 2},
		{"serial without file", certs.RevokeRequest{Serial: unknown}, false, unknown, "", 0, 4, 3},
		{"twice by name", certs.RevokeRequest{Name: "laptop", Reason: 5}, true, laptop.SerialNumber, "laptop.crt", 1, 4, 3},
		{"twice by serial", certs.RevokeRequest{Serial: unknown}, true, unknown, "", 0, 4, 3},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before, err := os.ReadFile(crlFile)
			if err != nil {
				t.Fatal(err)
			}
			u, err := certs.Revoke(dir, st.req)
			if err != nil {
				t.Fatalf("Revoke(%+v): %v", st.req, err)
			}
			if u.AlreadyRevoked != st.wantAlready || u.Created || u.File != crlFile {
				t.Errorf("Revoke: AlreadyRevoked=%v Created=%v File=%q, want %v false %q", u.AlreadyRevoked, u.Created, u.File, st.wantAlready, crlFile)
			}
			if u.Entry.SerialNumber.Cmp(st.wantSerial) != 0 || u.Entry.ReasonCode != st.wantReason {
				t.Errorf("Entry = serial %v reason %d, want %v reason %d", u.Entry.SerialNumber, u.Entry.ReasonCode, st.wantSerial, st.wantReason)
			}
			if gotCert := filepath.Base(u.CertFile); st.wantCert != "" && (gotCert != st.wantCert || u.Cert == nil) || st.wantCert == "" && u.CertFile != "" {
				t.Errorf("CertFile = %q, want %q", u.CertFile, st.wantCert)
			}
			after, err := os.ReadFile(crlFile)
			if err != nil {
				t.Fatal(err)
			}
			if st.wantAlready != bytes.Equal(before, after) {
				t.Errorf("crl.pem changed = %v, want %v", !bytes.Equal(before, after), !st.wantAlready)
			}
			if got := fileMode(t, crlFile); got != 0o644 {
				t.Errorf("mode of crl.pem = %v, want 0644", got)
			}
			if _, err := os.Stat(crlFile + ".tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("crl.pem.tmp left behind (stat: %v)", err)
			}
			crl, err := certs.LoadCRL(crlFile, ca.Cert)
			if err != nil {
				t.Fatalf("LoadCRL after revoke: %v", err)
			}
			if crl.List.Number.Cmp(big.NewInt(st.wantNumber)) != 0 || len(crl.List.RevokedCertificateEntries) != st.wantEntries {
				t.Errorf("CRL number %v with %d entries, want %d with %d", crl.List.Number, len(crl.List.RevokedCertificateEntries), st.wantNumber, st.wantEntries)
			}
			if !crl.IsRevoked(st.wantSerial) {
				t.Errorf("CRL does not list serial %v", st.wantSerial)
			}
		})
	}
	crl, err := certs.LoadCRL(crlFile, ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := crl.Lookup(laptop.SerialNumber); !e.RevocationTime.Equal(at) {
		t.Errorf("laptop revoked at %v, want %v (kept across later revocations)", e.RevocationTime, at)
	}
	if crl.IsRevoked(readCert(t, dir, "vpn.test").SerialNumber) {
		t.Errorf("CRL lists the server certificate, which was never revoked")
	}
}

func TestRevokeCreatesMissingCRL(t *testing.T) {
	dir, ca := pkiDir(t)
	crlFile := filepath.Join(dir, "crl.pem")
	if err := os.Remove(crlFile); err != nil {
		t.Fatal(err)
	}
	u, err := certs.Revoke(dir, certs.RevokeRequest{Name: "laptop"})
	if err != nil {
		t.Fatalf("Revoke without crl.pem: %v", err)
	}
	if !u.Created || u.CRL.Number.Cmp(big.NewInt(1)) != 0 {
		t.Errorf("Created=%v Number=%v, want true 1", u.Created, u.CRL.Number)
	}
	crl, err := certs.LoadCRL(crlFile, ca.Cert)
	if err != nil {
		t.Fatalf("LoadCRL: %v", err)
	}
	if !crl.IsRevoked(readCert(t, dir, "laptop").SerialNumber) {
		t.Errorf("new CRL does not list laptop")
	}
}

func TestRefreshCRL(t *testing.T) {
	dir, ca := pkiDir(t)
	crlFile := filepath.Join(dir, "crl.pem")
	if _, err := certs.Revoke(dir, certs.RevokeRequest{Name: "laptop", Reason: 1}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(48 * time.Hour)
	u, err := certs.RefreshCRL(dir, certs.CRLOptions{Days: 3, Now: later})
	if err != nil {
		t.Fatalf("RefreshCRL: %v", err)
	}
	if u.Created || u.CRL.Number.Cmp(big.NewInt(3)) != 0 {
		t.Errorf("Created=%v Number=%v, want false 3", u.Created, u.CRL.Number)
	}
	checkCRLValidity(t, u.CRL, later, 3)
	crl, err := certs.LoadCRL(crlFile, ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := crl.Lookup(readCert(t, dir, "laptop").SerialNumber); !ok || e.ReasonCode != 1 {
		t.Errorf("refreshed CRL entry for laptop = %+v, %v; want kept with reason keyCompromise", e, ok)
	}

	if err := os.Remove(crlFile); err != nil {
		t.Fatal(err)
	}
	if u, err = certs.RefreshCRL(dir, certs.CRLOptions{}); err != nil || !u.Created || len(u.CRL.RevokedCertificateEntries) != 0 {
		t.Errorf("RefreshCRL without crl.pem = %+v, %v; want a new empty CRL", u, err)
	}
}

// copyFile copies src to dst (mode 0644), replacing dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRevokeErrors(t *testing.T) {
	dir, _ := pkiDir(t)
	otherDir, _ := pkiDir(t)
	copyFile(t, filepath.Join(otherDir, "laptop.crt"), filepath.Join(dir, "stranger.crt"))
	garbageDir, _ := pkiDir(t)
	if err := os.WriteFile(filepath.Join(garbageDir, "crl.pem"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	foreignDir, _ := pkiDir(t)
	copyFile(t, filepath.Join(otherDir, "crl.pem"), filepath.Join(foreignDir, "crl.pem"))
	lockedDir, _ := pkiDir(t)
	if err := os.WriteFile(filepath.Join(lockedDir, "crl.pem.tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noCA := t.TempDir()
	tests := []struct {
		name    string
		dir     string
		req     certs.RevokeRequest
		wantErr string
	}{
		{"nothing", dir, certs.RevokeRequest{}, "pass exactly one of --name NAME or --serial SERIAL"},
		{"both", dir, certs.RevokeRequest{Name: "laptop", Serial: big.NewInt(1)}, "pass exactly one of"},
		{"unknown name", dir, certs.RevokeRequest{Name: "tablet"}, "certificate " + filepath.Join(dir, "tablet.crt") + " not found: check --name (see 'tunneld pki list --dir " + dir + "'), or pass --serial"},
		{"bad name", dir, certs.RevokeRequest{Name: "../laptop"}, "use only letters"},
		{"another CA's certificate", dir, certs.RevokeRequest{Name: "stranger"}, "was not issued by the CA in " + dir},
		{"zero serial", dir, certs.RevokeRequest{Serial: big.NewInt(0)}, "pass a positive serial number"},
		{"unsupported reason", dir, certs.RevokeRequest{Name: "laptop", Reason: 6}, "reason 6 (certificateHold) is not supported"},
		{"no CA", noCA, certs.RevokeRequest{Name: "laptop"}, "run 'tunneld pki init --dir " + noCA + "' first"},
		{"garbage crl.pem", garbageDir, certs.RevokeRequest{Name: "laptop"}, "holds no PEM X509 CRL block"},
		{"another CA's crl.pem", foreignDir, certs.RevokeRequest{Name: "laptop"}, "is not signed by the CA"},
		{"locked", lockedDir, certs.RevokeRequest{Name: "laptop"}, "another 'tunneld pki' command is updating crl.pem; wait for it and retry, or remove " + filepath.Join(lockedDir, "crl.pem.tmp")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crlFile := filepath.Join(tt.dir, "crl.pem")
			before, _ := os.ReadFile(crlFile)
			_, err := certs.Revoke(tt.dir, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Revoke(%+v) = %v, want error containing %q", tt.req, err, tt.wantErr)
			}
			if after, _ := os.ReadFile(crlFile); !bytes.Equal(before, after) {
				t.Errorf("failed Revoke changed crl.pem")
			}
			if tt.dir != lockedDir {
				if _, err := os.Stat(crlFile + ".tmp"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed Revoke left crl.pem.tmp (stat: %v)", err)
				}
			}
		})
	}
}

func TestLoadCRLErrors(t *testing.T) {
	ca := certstest.NewCA(t)
	sameName := certstest.NewCA(t) // same subject as ca, different key
	otherName, err := certs.NewCA(certs.CAOptions{CommonName: "Other CA"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	write := func(name string, data []byte) string {
		if err := os.WriteFile(path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path(name)
	}
	ca.WriteCRL(t, path("expired.pem"), certs.CRLRequest{Days: 30, Now: time.Now().AddDate(0, 0, -31)})
	sameName.WriteCRL(t, path("same-name.pem"), certs.CRLRequest{})
	(&certstest.CA{CA: otherName}).WriteCRL(t, path("other-name.pem"), certs.CRLRequest{})
	good := ca.WriteCRL(t, path("good.pem"), certs.CRLRequest{})
	write("good.der", good.Raw)
	write("garbage.pem", []byte("not a CRL\n"))
	write("empty.pem", nil)
	write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
	write("bad-der.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{0x30, 1, 2}}))

	redo := "recreate it with 'tunneld pki crl --dir " + dir + "'"
	tests := []struct {
		file    string
		wantErr string // "" means success
	}{
		{"good.pem", ""},
		{"good.der", ""},
		{"missing.pem", "CRL " + path("missing.pem") + " not found: create it with 'tunneld pki crl --dir " + dir + "'"},
		{"garbage.pem", path("garbage.pem") + " holds no PEM X509 CRL block: pass the crl.pem written by 'tunneld pki', or " + redo},
		{"empty.pem", "holds no PEM X509 CRL block"},
		{"cert.pem", "holds a certificate, not a CRL"},
		{"bad-der.pem", "parse CRL " + path("bad-der.pem")},
		{"same-name.pem", "CRL " + path("same-name.pem") + ` is not signed by the CA "CN=certstest CA"`},
		{"other-name.pem", `was issued by "CN=Other CA", not by the CA "CN=certstest CA": use the crl.pem from that CA's --dir, or ` + redo},
		{"expired.pem", "CRL " + path("expired.pem") + " expired at "},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			crl, err := certs.LoadCRL(path(tt.file), ca.Cert)
			if tt.wantErr == "" {
				if err != nil || crl == nil {
					t.Fatalf("LoadCRL(%s) = %v, %v; want success", tt.file, crl, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadCRL(%s) = %v, want error containing %q", tt.file, err, tt.wantErr)
			}
			if crl != nil {
				t.Errorf("LoadCRL(%s) returned a CRL with its error", tt.file)
			}
		})
	}
	// The expired CRL's message says how to refresh it.
	_, err = certs.LoadCRL(path("expired.pem"), ca.Cert)
	if want := ": refresh it with 'tunneld pki crl --dir " + dir + "'"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("LoadCRL(expired) = %v, want it to end with %q", err, want)
	}
	// ReadCRL skips only the freshness check.
	if _, err := certs.ReadCRL(path("expired.pem"), ca.Cert); err != nil {
		t.Errorf("ReadCRL(expired) = %v, want success", err)
	}
}

func TestParseSerial(t *testing.T) {
	tests := []struct {
		in      string
		want    string // decimal; "" means error
		wantErr string
	}{
		{"0x1A2B", "6699", ""},
		{"0X1a2b", "6699", ""},
		{"1a:2b", "6699", ""},
		{"1A2B", "6699", ""},
		{"1234", "1234", ""},
		{" 42 ", "42", ""},
		{"0x00:FF", "255", ""},
		{"", "", "is not a serial number"},
		{"0x", "", "is not a serial number"},
		{"12g4", "", "is not a serial number: pass hex like 0x1A2B3C"},
		{"-5", "", "is not a serial number"},
		{"+5", "", "is not a serial number"},
		{"0", "", "out of range"},
		{"0x" + strings.Repeat("FF", 21), "", "serial numbers are 1 to 20 bytes long"},
	}
	for _, tt := range tests {
		got, err := certs.ParseSerial(tt.in)
		switch {
		case tt.want != "" && (err != nil || got.String() != tt.want):
			t.Errorf("ParseSerial(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		case tt.want == "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseSerial(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
		}
	}
	for _, n := range []*big.Int{big.NewInt(1), big.NewInt(1234), new(big.Int).Lsh(big.NewInt(1), 127)} {
		s := certs.FormatSerial(n)
		if got, err := certs.ParseSerial(s); err != nil || got.Cmp(n) != 0 {
			t.Errorf("ParseSerial(FormatSerial(%v) = %q) = %v, %v; want round trip", n, s, got, err)
		}
	}
	if got := certs.FormatSerial(big.NewInt(0xABC)); got != "0xABC" {
		t.Errorf("FormatSerial(0xabc) = %q, want 0xABC", got)
	}
}

func TestParseReason(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"", 0, true},
		{"unspecified", 0, true},
		{"keyCompromise", 1, true},
		{"KEYCOMPROMISE", 1, true},
		{"superseded", 4, true},
		{"cessationOfOperation", 5, true},
		{"affiliationChanged", 3, true},
		{"privilegeWithdrawn", 9, true},
		{"certificateHold", 0, false},
		{"cACompromise", 0, false},
		{"lost", 0, false},
	}
	for _, tt := range tests {
		got, err := certs.ParseReason(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseReason(%q) = %d, %v; want %d (ok=%v)", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "use one of unspecified, keyCompromise") {
			t.Errorf("ParseReason(%q) error %q does not list the keywords", tt.in, err)
		}
		if tt.ok && tt.in != "" && !strings.EqualFold(certs.ReasonText(got), tt.in) {
			t.Errorf("ReasonText(%d) = %q, want %q", got, certs.ReasonText(got), tt.in)
		}
	}
}

func TestListCerts(t *testing.T) {
	dir, _ := pkiDir(t)
	if err := os.WriteFile(filepath.Join(dir, "broken.crt"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ic := range mustListCerts(t, dir) {
		names = append(names, ic.Name)
		if (ic.Err != nil) != (ic.Name == "broken") || (ic.Cert == nil) != (ic.Err != nil) {
			t.Errorf("%s: Cert=%v Err=%v", ic.Name, ic.Cert != nil, ic.Err)
		}
	}
	if got, want := strings.Join(names, " "), "broken laptop phone vpn.test"; got != want {
		t.Errorf("ListCerts names = %q, want %q", got, want)
	}
}
