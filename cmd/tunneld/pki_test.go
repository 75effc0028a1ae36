package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
)

// pkiRun runs runPKI with args and returns what it printed.
func pkiRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = runPKI(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// pkiMustRun runs runPKI with args and fails the test on error.
func pkiMustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := pkiRun(t, args...)
	if err != nil {
		t.Fatalf("tunneld pki %s: %v (stderr %q)", strings.Join(args, " "), err, errOut)
	}
	return out
}

// pkiNewDir runs 'pki init' in a fresh temp dir and returns the PKI directory.
func pkiNewDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	pkiMustRun(t, "init", "--dir", dir)
	return dir
}

// pkiMode returns the permission bits of path.
func pkiMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// pkiReadCert parses the single PEM certificate in path.
func pkiReadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return c
}

// pkiPool returns a pool holding the ca.crt in dir.
func pkiPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(pkiReadCert(t, filepath.Join(dir, "ca.crt")))
	return pool
}

func TestPKIHelp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // substrings of stdout
	}{
		{"no command", nil, []string{"Usage: tunneld pki <command>", "init ", "issue ", "tunneld pki init  --dir /etc/tlsvpn/pki"}},
		{"help", []string{"help"}, []string{"Commands:"}},
		{"--help", []string{"--help"}, []string{"Commands:"}},
		{"init --help", []string{"init", "--help"}, []string{
			"Usage: tunneld pki init --dir DIR", "--dir DIR", "--algo ALGO", "--cn NAME", "--days N", "(default 3650)",
			"Examples:\n  tunneld pki init --dir /etc/tlsvpn/pki\n",
		}},
		{"issue -h", []string{"issue", "-h"}, []string{
			"Usage: tunneld pki issue --dir DIR --server --name NAME", "--dir DIR", "--server", "--client", "--name NAME",
			"--ip IP", "--dns HOST", "--days N", "(default 365)", "--algo ALGO",
			"tunneld pki issue --dir /etc/tlsvpn/pki --client --name laptop",
		}},
		{"help wins over other flags", []string{"issue", "--client", "--help"}, []string{"--name NAME"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := pkiRun(t, tt.args...)
			if !errors.Is(err, pflag.ErrHelp) {
				t.Fatalf("runPKI(%q) = %v, want pflag.ErrHelp", tt.args, err)
			}
			if errOut != "" {
				t.Errorf("runPKI(%q) wrote to stderr: %q", tt.args, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("runPKI(%q) help lacks %q; got:\n%s", tt.args, w, out)
				}
			}
		})
	}
}

func TestPKIErrors(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	empty := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown command", []string{"frob"}, `unknown pki command "frob": use 'tunneld pki init' or 'tunneld pki issue'`},
		{"init without dir", []string{"init"}, "--dir is required, e.g. tunneld pki init --dir /etc/tlsvpn/pki"},
		{"init bad algo", []string{"init", "--dir", empty, "--algo", "rsa"}, `--algo "rsa" is not supported: use ecdsa or ed25519`},
		{"init zero days", []string{"init", "--dir", empty, "--days", "0"}, "pass a positive number of days"},
		{"init existing", []string{"init", "--dir", dir}, filepath.Join(dir, "ca.crt") + " already exists: refusing to overwrite"},
		{"init positional", []string{"init", dir}, `unexpected argument "` + dir + `"`},
		{"init unknown flag", []string{"init", "--dri", dir}, "unknown flag: --dri; see 'tunneld pki init --help'"},
		{"issue without dir", []string{"issue", "--client", "--name", "x"}, "--dir is required"},
		{"issue both kinds", []string{"issue", "--dir", dir, "--server", "--client", "--name", "x"}, "--server and --client are mutually exclusive"},
		{"issue no kind", []string{"issue", "--dir", dir, "--name", "x"}, "pass --server (a certificate for tunneld) or --client"},
		{"issue without name", []string{"issue", "--dir", dir, "--client"}, "--name is required, e.g. --name laptop"},
		{"issue bad name", []string{"issue", "--dir", dir, "--client", "--name", "../evil"}, "use only letters, digits, '.', '_' and '-'"},
		{"issue name ca", []string{"issue", "--dir", dir, "--server", "--name", "ca"}, "reserved for the CA"},
		{"issue missing CA", []string{"issue", "--dir", empty, "--client", "--name", "x"},
			"no CA in " + empty + " (" + filepath.Join(empty, "ca.crt") + "): run 'tunneld pki init --dir " + empty + "' first"},
		{"issue existing", []string{"issue", "--dir", dir, "--client", "--name", "laptop"},
			"certificate " + filepath.Join(dir, "laptop.crt") + " already exists: refusing to overwrite; pick another --name or remove " +
				filepath.Join(dir, "laptop.crt") + " and " + filepath.Join(dir, "laptop.key")},
		{"issue bad ip", []string{"issue", "--dir", dir, "--server", "--name", "gw", "--ip", "vpn.test"}, `--ip "vpn.test" is not an IP address`},
		{"issue client with ip", []string{"issue", "--dir", dir, "--client", "--name", "x", "--ip", "10.0.0.1"}, "--ip and --dns apply to --server certificates only"},
		{"issue server without SAN", []string{"issue", "--dir", dir, "--server", "--name", "my_gw"}, "pass the address clients dial with --dns NAME or --ip IP"},
		{"issue outlives CA", []string{"issue", "--dir", dir, "--client", "--name", "x", "--days", "4000"}, "would outlive the CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadDir(dir)
			out, _, err := pkiRun(t, tt.args...)
			if err == nil || errors.Is(err, pflag.ErrHelp) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("runPKI(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
			if out != "" {
				t.Errorf("runPKI(%q) printed %q to stdout on error", tt.args, out)
			}
			if after, _ := os.ReadDir(dir); len(after) != len(before) {
				t.Errorf("runPKI(%q) changed %s from %d to %d entries", tt.args, dir, len(before), len(after))
			}
			if entries, _ := os.ReadDir(empty); len(entries) != 0 {
				t.Errorf("runPKI(%q) left %d entries in %s", tt.args, len(entries), empty)
			}
		})
	}
}

func TestPKIUnknownCommandPrintsUsage(t *testing.T) {
	_, errOut, err := pkiRun(t, "frob")
	if err == nil {
		t.Fatal("runPKI(frob) = nil, want error")
	}
	if !strings.Contains(errOut, "Commands:") {
		t.Errorf("runPKI(frob) stderr = %q, want the usage listing commands", errOut)
	}
}

func TestPKIInit(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantCN  string
		wantKey string
	}{
		{"defaults", nil, "tlsvpn CA", "ECDSA P-256"},
		{"ed25519", []string{"--algo", "ed25519", "--cn", "Example VPN CA", "--days", "30"}, "Example VPN CA", "Ed25519"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new", "pki")
			out := pkiMustRun(t, append([]string{"init", "--dir", dir}, tt.args...)...)
			caCrt, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
			for _, want := range []string{caCrt, caKey, "tunneld pki issue --dir " + dir + " --server --name "} {
				if !strings.Contains(out, want) {
					t.Errorf("init output lacks %q; got:\n%s", want, out)
				}
			}
			for path, want := range map[string]fs.FileMode{dir: 0o700, caKey: 0o600, caCrt: 0o644} {
				if got := pkiMode(t, path); got != want {
					t.Errorf("mode of %s = %v, want %v", path, got, want)
				}
			}
			c := pkiReadCert(t, caCrt)
			if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero || c.Subject.CommonName != tt.wantCN {
				t.Errorf("ca.crt: IsCA=%v MaxPathLen=%d MaxPathLenZero=%v CN=%q, want true 0 true %q",
					c.IsCA, c.MaxPathLen, c.MaxPathLenZero, c.Subject.CommonName, tt.wantCN)
			}
			if got := certs.DescribeKey(c); got != tt.wantKey {
				t.Errorf("ca.crt key = %s, want %s", got, tt.wantKey)
			}
		})
	}
}

func TestPKIIssue(t *testing.T) {
	dir := pkiNewDir(t)
	tests := []struct {
		name    string
		args    []string
		certN   string
		wantEKU x509.ExtKeyUsage
		wantDNS []string
		wantIPs []string
		wantOut string
	}{
		{"server with SANs", []string{"--server", "--name", "gw", "--ip", "127.0.0.1", "--ip", "2001:db8::1", "--dns", "vpn.test"},
			"gw", x509.ExtKeyUsageServerAuth, []string{"vpn.test"}, []string{"127.0.0.1", "2001:db8::1"},
			"Clients must dial the server as one of: vpn.test, 127.0.0.1, 2001:db8::1"},
		{"server name as SAN", []string{"--server", "--name", "vpn.example.com", "--days", "30"},
			"vpn.example.com", x509.ExtKeyUsageServerAuth, []string{"vpn.example.com"}, nil, "vpn.example.com"},
		{"client", []string{"--client", "--name", "laptop"},
			"laptop", x509.ExtKeyUsageClientAuth, nil, nil, `the server will know it as "laptop"`},
		{"client ed25519", []string{"--client", "--name", "phone", "--algo", "ed25519"},
			"phone", x509.ExtKeyUsageClientAuth, nil, nil, "(Ed25519)"},
	}
	pool := pkiPool(t, dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := pkiMustRun(t, append([]string{"issue", "--dir", dir}, tt.args...)...)
			crt, key := filepath.Join(dir, tt.certN+".crt"), filepath.Join(dir, tt.certN+".key")
			for _, want := range []string{crt, key, tt.wantOut} {
				if !strings.Contains(out, want) {
					t.Errorf("issue output lacks %q; got:\n%s", want, out)
				}
			}
			if got := pkiMode(t, key); got != 0o600 {
				t.Errorf("mode of %s = %v, want 0600", key, got)
			}
			if got := pkiMode(t, crt); got != 0o644 {
				t.Errorf("mode of %s = %v, want 0644", crt, got)
			}
			c := pkiReadCert(t, crt)
			if c.Subject.CommonName != tt.certN {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, tt.certN)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{tt.wantEKU}) {
				t.Errorf("ExtKeyUsage = %v, want [%v]", c.ExtKeyUsage, tt.wantEKU)
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
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tt.wantEKU}}); err != nil {
				t.Errorf("%s does not verify against ca.crt for %v: %v", crt, tt.wantEKU, err)
			}
			if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
				t.Errorf("LoadX509KeyPair(%s, %s): %v", crt, key, err)
			}
		})
	}
}

func TestPKIHandshake(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test", "--dns", "vpn.test", "--ip", "127.0.0.1")
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	otherDir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", otherDir, "--client", "--name", "mallory")
	caFile := filepath.Join(dir, "ca.crt")
	file := func(dir, name string) string { return filepath.Join(dir, name) }

	server, err := certs.ServerConfig(file(dir, "vpn.test.crt"), file(dir, "vpn.test.key"), caFile)
	if err != nil {
		t.Fatalf("ServerConfig: %v", err)
	}
	client := func(serverName string) *tls.Config {
		t.Helper()
		cfg, err := certs.ClientConfig(file(dir, "laptop.crt"), file(dir, "laptop.key"), caFile, serverName)
		if err != nil {
			t.Fatalf("ClientConfig: %v", err)
		}
		return cfg
	}

	// The loader rejects a client certificate from another CA up front...
	if _, err := certs.ClientConfig(file(otherDir, "mallory.crt"), file(otherDir, "mallory.key"), caFile, "vpn.test"); err == nil ||
		!strings.Contains(err.Error(), "was not issued by the CA in "+caFile) {
		t.Errorf("ClientConfig(other CA's cert) = %v, want 'was not issued by the CA'", err)
	}
	// ...and the server refuses one that skips the loader.
	mallory, err := tls.LoadX509KeyPair(file(otherDir, "mallory.crt"), file(otherDir, "mallory.key"))
	if err != nil {
		t.Fatal(err)
	}
	tls12 := client("vpn.test")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name          string
		client        *tls.Config
		wantServerErr string // "" means success
		wantClientErr string
	}{
		{name: "by DNS name", client: client("vpn.test")},
		{name: "by IP", client: client("127.0.0.1")},
		{name: "client from another CA", client: certs.ClientConfigFrom(mallory, pkiPool(t, dir), "vpn.test"),
			wantServerErr: "certificate signed by unknown authority", wantClientErr: "unknown certificate authority"},
		{name: "TLS 1.2 only client", client: tls12,
			wantServerErr: "unsupported versions", wantClientErr: "protocol version"},
		{name: "name not in server certificate", client: client("other.test"),
			wantServerErr: "bad certificate", wantClientErr: "not other.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := certstest.Handshake(t, server, tt.client)
			if tt.wantServerErr == "" {
				if res.ServerErr != nil || res.ClientErr != nil {
					t.Fatalf("handshake: server %v, client %v; want success", res.ServerErr, res.ClientErr)
				}
				if res.Server.Version != tls.VersionTLS13 || res.Server.CurveID != tls.X25519MLKEM768 {
					t.Errorf("negotiated version %#x, key exchange %v; want TLS 1.3 with X25519MLKEM768", res.Server.Version, res.Server.CurveID)
				}
				if id, err := certs.PeerIdentity(res.Server); id != "laptop" || err != nil {
					t.Errorf("PeerIdentity = %q, %v, want laptop", id, err)
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

func TestPKIQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/etc/tlsvpn/pki", "/etc/tlsvpn/pki"},
		{"./pki-1", "./pki-1"},
		{"my pki", "'my pki'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
		{"$HOME", "'$HOME'"},
	}
	for _, tt := range tests {
		if got := pkiQuote(tt.in); got != tt.want {
			t.Errorf("pkiQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
