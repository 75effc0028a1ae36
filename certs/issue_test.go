package certs_test

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tlsvpn/certs"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // substring; "" means valid
	}{
		{"laptop", ""},
		{"vpn.example.com", ""},
		{"_svc-1.A", ""},
		{"ca.example", ""},
		{strings.Repeat("a", 64), ""},
		{"", "empty name"},
		{strings.Repeat("a", 65), "at most 64"},
		{".hidden", "starts with '.'"},
		{"-flag", "starts with '-'"},
		{"ca", "reserved"},
		{"CA", "reserved"},
		{"a/b", `contains '/'`},
		{"../x", "contains '/'"},
		{"sp ace", "contains ' '"},
		{"naïve", "contains 'ï'"},
	}
	for _, tt := range tests {
		err := certs.ValidateName(tt.name)
		if tt.wantErr == "" && err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", tt.name, err)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("ValidateName(%q) = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

// fileMode returns the permission bits of path.
func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitCA(t *testing.T) {
	tests := []struct {
		name    string
		opts    certs.CAOptions
		wantCN  string
		wantKey string
		wantDay int
	}{
		{"defaults", certs.CAOptions{}, "tlsvpn CA", "ECDSA P-256", 3650},
		{"ed25519", certs.CAOptions{Algorithm: certs.Ed25519, CommonName: "Acme VPN CA", Days: 30}, "Acme VPN CA", "Ed25519", 30},
		{"ecdsa explicit", certs.CAOptions{Algorithm: certs.ECDSA, Days: 1}, "tlsvpn CA", "ECDSA P-256", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki", "nested")
			before := time.Now()
			f, err := certs.InitCA(dir, tt.opts)
			if err != nil {
				t.Fatalf("InitCA(%q, %+v): %v", dir, tt.opts, err)
			}
			if want := filepath.Join(dir, "ca.crt"); f.CertFile != want {
				t.Errorf("CertFile = %q, want %q", f.CertFile, want)
			}
			if want := filepath.Join(dir, "ca.key"); f.KeyFile != want {
				t.Errorf("KeyFile = %q, want %q", f.KeyFile, want)
			}
			for path, want := range map[string]fs.FileMode{dir: 0o700, f.KeyFile: 0o600, f.CertFile: 0o644} {
				if got := fileMode(t, path); got != want {
					t.Errorf("mode of %s = %v, want %v", path, got, want)
				}
			}
			ca, err := certs.LoadCA(dir)
			if err != nil {
				t.Fatalf("LoadCA(%q): %v", dir, err)
			}
			c := ca.Cert
			if !c.Equal(f.Cert) {
				t.Errorf("LoadCA certificate differs from the one InitCA returned")
			}
			if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("CA constraints: IsCA=%v BasicConstraintsValid=%v MaxPathLen=%d MaxPathLenZero=%v, want true true 0 true",
					c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
				t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
			}
			if c.Subject.CommonName != tt.wantCN {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tt.wantCN)
			}
			if got := certs.DescribeKey(c); got != tt.wantKey {
				t.Errorf("DescribeKey = %q, want %q", got, tt.wantKey)
			}
			checkValidity(t, c, before, tt.wantDay)
		})
	}
}

// checkValidity checks that c became valid a few minutes before issuance (clock skew) and is
// valid for days days from issuance.
func checkValidity(t *testing.T, c *x509.Certificate, issuedAfter time.Time, days int) {
	t.Helper()
	if skew := issuedAfter.Sub(c.NotBefore); skew < 4*time.Minute || skew > 6*time.Minute {
		t.Errorf("NotBefore = %v, want about 5m before %v", c.NotBefore, issuedAfter)
	}
	want := issuedAfter.AddDate(0, 0, days)
	if d := c.NotAfter.Sub(want); d < -time.Second || d > time.Minute {
		t.Errorf("NotAfter = %v, want about %v (%d days)", c.NotAfter, want, days)
	}
}

func TestInitCARefusesOverwrite(t *testing.T) {
	for _, existing := range []string{"ca.crt", "ca.key"} {
		t.Run(existing, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, existing)
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := certs.InitCA(dir, certs.CAOptions{})
			if err == nil || !strings.Contains(err.Error(), path+" already exists: refusing to overwrite") {
				t.Fatalf("InitCA over existing %s = %v, want refusal naming it", existing, err)
			}
			if b, _ := os.ReadFile(path); string(b) != "keep me" {
				t.Errorf("%s was modified to %q", existing, b)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("dir holds %d entries after refusal, want only %s", len(entries), existing)
			}
		})
	}
}

func TestInitCAErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		opts    certs.CAOptions
		wantErr string
	}{
		{"unknown algorithm", dir, certs.CAOptions{Algorithm: "rsa"}, `unknown key algorithm "rsa": use "ecdsa" or "ed25519"`},
		{"negative days", dir, certs.CAOptions{Days: -1}, "use a positive number of days"},
		{"long name", dir, certs.CAOptions{CommonName: strings.Repeat("x", 65)}, "at most 64"},
		{"dir is a file", notDir, certs.CAOptions{}, "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.InitCA(tt.dir, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("InitCA(%q, %+v) = %v, want error containing %q", tt.dir, tt.opts, err, tt.wantErr)
			}
		})
	}
}

// newPKI returns a temp dir holding a fresh CA.
func newPKI(t *testing.T, opts certs.CAOptions) (string, *certs.CA) {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.InitCA(dir, opts); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return dir, ca
}

func TestIssue(t *testing.T) {
	tests := []struct {
		name     string
		ca       certs.CAOptions
		req      certs.IssueRequest
		wantEKU  x509.ExtKeyUsage
		wantDNS  []string
		wantIPs  []string
		wantDays int
		wantKey  string
	}{
		{
			name:     "server with SANs",
			req:      certs.IssueRequest{Name: "gw", Server: true, IPs: []net.IP{net.ParseIP("203.0.113.10"), net.ParseIP("2001:db8::1")}, DNSNames: []string{"vpn.example.com"}},
			wantEKU:  x509.ExtKeyUsageServerAuth,
			wantDNS:  []string{"gw", "vpn.example.com"},
			wantIPs:  []string{"203.0.113.10", "2001:db8::1"},
			wantDays: 365,
			wantKey:  "ECDSA P-256",
		},
		{
			// The name clients were told to dial is in the certificate, once, even when
			// only --ip was given or it is repeated with --dns.
			name:     "server name joins the SANs once",
			req:      certs.IssueRequest{Name: "vpn.example.com", Server: true, IPs: []net.IP{net.ParseIP("203.0.113.10"), net.ParseIP("203.0.113.10")}, DNSNames: []string{"VPN.example.com", "alt.example.com"}},
			wantEKU:  x509.ExtKeyUsageServerAuth,
			wantDNS:  []string{"vpn.example.com", "alt.example.com"},
			wantIPs:  []string{"203.0.113.10"},
			wantDays: 365,
			wantKey:  "ECDSA P-256",
		},
		{
			name:     "server name that is an IP address",
			req:      certs.IssueRequest{Name: "10.0.0.1", Server: true, IPs: []net.IP{net.ParseIP("::ffff:10.0.0.1"), net.ParseIP("2001:db8::1")}},
			wantEKU:  x509.ExtKeyUsageServerAuth,
			wantIPs:  []string{"10.0.0.1", "2001:db8::1"},
			wantDays: 365,
			wantKey:  "ECDSA P-256",
		},
		{
			name:     "server name left out",
			req:      certs.IssueRequest{Name: "gw", Server: true, IPs: []net.IP{net.ParseIP("203.0.113.10")}, NoNameSAN: true},
			wantEKU:  x509.ExtKeyUsageServerAuth,
			wantIPs:  []string{"203.0.113.10"},
			wantDays: 365,
			wantKey:  "ECDSA P-256",
		},
		{
			// A name that no client can dial stays only the CommonName.
			name:     "server name not a hostname",
			req:      certs.IssueRequest{Name: "my_gw", Server: true, DNSNames: []string{"vpn.example.com"}},
			wantEKU:  x509.ExtKeyUsageServerAuth,
			wantDNS:  []string{"vpn.example.com"},
			wantDays: 365,
			wantKey:  "ECDSA P-256",
		},
		{
			name:     "server name as DNS SAN",
			req:      certs.IssueRequest{Name: "vpn.example.com", Server: true, Days: 90},
			wantEKU:  x509.ExtKeyUsageServerAuth,
			wantDNS:  []string{"vpn.example.com"},
			wantDays: 90,
			wantKey:  "ECDSA P-256",
		},
		{
			name:     "client ed25519 under ecdsa CA",
			req:      certs.IssueRequest{Name: "laptop", Client: true, Algorithm: certs.Ed25519},
			wantEKU:  x509.ExtKeyUsageClientAuth,
			wantDays: 365,
			wantKey:  "Ed25519",
		},
		{
			name:     "client under ed25519 CA",
			ca:       certs.CAOptions{Algorithm: certs.Ed25519},
			req:      certs.IssueRequest{Name: "alice_phone", Client: true, Days: 7},
			wantEKU:  x509.ExtKeyUsageClientAuth,
			wantDays: 7,
			wantKey:  "ECDSA P-256",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, ca := newPKI(t, tt.ca)
			before := time.Now()
			f, err := certs.Issue(dir, tt.req)
			if err != nil {
				t.Fatalf("Issue(%+v): %v", tt.req, err)
			}
			if f.CertFile != filepath.Join(dir, tt.req.Name+".crt") || f.KeyFile != filepath.Join(dir, tt.req.Name+".key") {
				t.Errorf("Issue files = %q, %q, want NAME.crt, NAME.key in %s", f.CertFile, f.KeyFile, dir)
			}
			if got := fileMode(t, f.KeyFile); got != 0o600 {
				t.Errorf("key mode = %v, want 0600", got)
			}
			if got := fileMode(t, f.CertFile); got != 0o644 {
				t.Errorf("cert mode = %v, want 0644", got)
			}
			c := f.Cert
			if c.Subject.CommonName != tt.req.Name {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tt.req.Name)
			}
			if c.IsCA {
				t.Errorf("leaf IsCA = true")
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{tt.wantEKU}) {
				t.Errorf("ExtKeyUsage = %v, want [%v]", c.ExtKeyUsage, tt.wantEKU)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v, want DigitalSignature", c.KeyUsage)
			}
			if !slices.Equal(c.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPAddresses = %q, want %q", ips, tt.wantIPs)
			}
			if len(c.URIs) != 0 || len(c.EmailAddresses) != 0 {
				t.Errorf("unexpected SANs: URIs %v, emails %v", c.URIs, c.EmailAddresses)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("SerialNumber = %v, want positive and at most 128 bits", c.SerialNumber)
			}
			if got := certs.DescribeKey(c); got != tt.wantKey {
				t.Errorf("leaf key = %s, want %s", got, tt.wantKey)
			}
			checkValidity(t, c, before, tt.wantDays)
			if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{tt.wantEKU}}); err != nil {
				t.Errorf("Verify against CA: %v", err)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{otherEKU(tt.wantEKU)}}); err == nil {
				t.Errorf("Verify with usage %v succeeded, want incompatible usage", otherEKU(tt.wantEKU))
			}
		})
	}
}

// otherEKU returns the TLS usage that is not u.
func otherEKU(u x509.ExtKeyUsage) x509.ExtKeyUsage {
	if u == x509.ExtKeyUsageServerAuth {
		return x509.ExtKeyUsageClientAuth
	}
	return x509.ExtKeyUsageServerAuth
}

func TestIssueErrors(t *testing.T) {
	dir, _ := newPKI(t, certs.CAOptions{Days: 30})
	if _, err := certs.Issue(dir, certs.IssueRequest{Name: "laptop", Client: true, Days: 1}); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	tests := []struct {
		name    string
		dir     string
		req     certs.IssueRequest
		wantErr string
	}{
		{"existing", dir, certs.IssueRequest{Name: "laptop", Client: true},
			"certificate " + filepath.Join(dir, "laptop.crt") + " already exists: refusing to overwrite; pick another --name or remove " +
				filepath.Join(dir, "laptop.crt") + " and " + filepath.Join(dir, "laptop.key")},
		{"missing CA", empty, certs.IssueRequest{Name: "laptop", Client: true},
			"no CA in " + empty + " (" + filepath.Join(empty, "ca.crt") + "): run 'tunneld pki init --dir " + empty + "' first"},
		{"bad name", dir, certs.IssueRequest{Name: "../etc/passwd", Client: true}, "use only letters, digits"},
		{"name ca", dir, certs.IssueRequest{Name: "ca", Server: true}, "reserved for the CA"},
		{"neither kind", dir, certs.IssueRequest{Name: "x"}, "exactly one of --server or --client"},
		{"both kinds", dir, certs.IssueRequest{Name: "x", Server: true, Client: true}, "exactly one of --server or --client"},
		{"client with IP", dir, certs.IssueRequest{Name: "x", Client: true, IPs: []net.IP{net.IPv4(10, 0, 0, 1)}}, "--ip and --dns apply to --server certificates only"},
		{"client with DNS", dir, certs.IssueRequest{Name: "x", Client: true, DNSNames: []string{"a.example"}}, "--ip and --dns apply to --server certificates only"},
		{"server name not hostname", dir, certs.IssueRequest{Name: "my_server", Server: true}, "pass the address clients dial with --dns NAME or --ip IP"},
		{"server without any SAN", dir, certs.IssueRequest{Name: "vpn.example.com", Server: true, NoNameSAN: true}, "--no-name-san leaves the certificate without an address"},
		{"client with no-name-san", dir, certs.IssueRequest{Name: "x", Client: true, NoNameSAN: true}, "--no-name-san applies to --server certificates only"},
		{"IP as DNS", dir, certs.IssueRequest{Name: "gw", Server: true, DNSNames: []string{"10.0.0.1"}}, "pass it with --ip 10.0.0.1 instead of --dns"},
		{"bad DNS", dir, certs.IssueRequest{Name: "gw", Server: true, DNSNames: []string{"*.example.com"}}, `invalid DNS name "*.example.com"`},
		{"bad IP", dir, certs.IssueRequest{Name: "gw", Server: true, IPs: []net.IP{{1, 2, 3}}}, "invalid IP address"},
		{"outlives CA", dir, certs.IssueRequest{Name: "x", Client: true, Days: 31}, "would outlive the CA"},
		{"negative days", dir, certs.IssueRequest{Name: "x", Client: true, Days: -5}, "positive number of days"},
		{"unknown algorithm", dir, certs.IssueRequest{Name: "x", Client: true, Days: 1, Algorithm: "rsa"}, "unknown key algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.Issue(tt.dir, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue(%+v) = %v, want error containing %q", tt.req, err, tt.wantErr)
			}
			if tt.name == "existing" {
				return
			}
			if _, err := os.Stat(filepath.Join(tt.dir, tt.req.Name+".key")); !errors.Is(err, fs.ErrNotExist) && certs.ValidateName(tt.req.Name) == nil {
				t.Errorf("failed Issue left %s.key behind (stat: %v)", tt.req.Name, err)
			}
		})
	}
}

func TestLoadCAErrors(t *testing.T) {
	dir, _ := newPKI(t, certs.CAOptions{})
	other, _ := newPKI(t, certs.CAOptions{})
	// Swap in another CA's key: the pair no longer matches.
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(other, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	noKey, _ := newPKI(t, certs.CAOptions{})
	if err := os.Remove(filepath.Join(noKey, "ca.key")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, wantErr string
	}{
		{"mismatched key", dir, "does not match CA certificate"},
		{"missing key", noKey, "CA key " + filepath.Join(noKey, "ca.key") + " not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.LoadCA(tt.dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadCA = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
