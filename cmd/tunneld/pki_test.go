package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
		{"no command", nil, []string{"Usage: tunneld pki <command>", "init ", "issue ", "revoke ", "crl ", "list ",
			"tunneld pki init  --dir /etc/tlsvpn/pki", "tunneld pki revoke --dir /etc/tlsvpn/pki --name laptop --reason keyCompromise"}},
		{"help", []string{"help"}, []string{"Commands:"}},
		{"--help", []string{"--help"}, []string{"Commands:"}},
		{"init --help", []string{"init", "--help"}, []string{
			"Usage: tunneld pki init --dir DIR", "--dir DIR", "--algo ALGO", "--cn NAME", "--days N", "(default 3650)",
			"Examples:\n  tunneld pki init --dir /etc/tlsvpn/pki\n",
		}},
		{"issue -h", []string{"issue", "-h"}, []string{
			"Usage: tunneld pki issue --dir DIR --server --name NAME", "--dir DIR", "--server", "--client", "--name NAME",
			"--ip IP", "--dns HOST", "--no-name-san", "--days N", "(default 365)", "--algo ALGO",
			"NAME is one of them: it is written in as a DNS name, or as an\nIP address if NAME is one",
			"tunneld pki issue --dir /etc/tlsvpn/pki --client --name laptop",
		}},
		{"help wins over other flags", []string{"issue", "--client", "--help"}, []string{"--name NAME"}},
		{"init --crl-days", []string{"init", "--help"}, []string{"--crl-days N", "(default 30)", "DIR/crl.pem"}},
		{"revoke --help", []string{"revoke", "--help"}, []string{
			"Usage: tunneld pki revoke --dir DIR --name NAME", "tunneld pki revoke --dir DIR --serial SERIAL",
			"--dir DIR", "--name NAME", "--serial SERIAL", "--reason REASON", "keyCompromise", "--crl-days N",
			"Examples:\n  tunneld pki revoke --dir /etc/tlsvpn/pki --name laptop --reason keyCompromise\n",
		}},
		{"crl --help", []string{"crl", "--help"}, []string{
			"Usage: tunneld pki crl --dir DIR [--crl-days N]", "cron", "17 3 * * *  root  /usr/local/bin/tunneld pki crl --dir /etc/tlsvpn/pki",
			"Examples:\n  tunneld pki crl --dir /etc/tlsvpn/pki\n",
		}},
		{"list --help", []string{"list", "-h"}, []string{"Usage: tunneld pki list --dir DIR", "tunneld pki list --dir /etc/tlsvpn/pki"}},
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
		{"unknown command", []string{"frob"}, `unknown pki command "frob": use init, issue, revoke, crl or list (see 'tunneld pki --help')`},
		{"init zero crl days", []string{"init", "--dir", empty, "--crl-days", "0"}, "--crl-days 0: pass a positive number of days, e.g. --crl-days 30"},
		{"revoke without dir", []string{"revoke", "--name", "laptop"}, "--dir is required, e.g. tunneld pki revoke --dir /etc/tlsvpn/pki --name laptop"},
		{"revoke nothing", []string{"revoke", "--dir", dir}, "say what to revoke with --name NAME or --serial SERIAL, e.g. tunneld pki revoke --dir " + dir + " --name laptop"},
		{"revoke both", []string{"revoke", "--dir", dir, "--name", "laptop", "--serial", "0x1"}, "--name and --serial are mutually exclusive"},
		{"revoke bad serial", []string{"revoke", "--dir", dir, "--serial", "xyz"}, `--serial: "xyz" is not a serial number: pass hex like 0x1A2B3C`},
		{"revoke bad reason", []string{"revoke", "--dir", dir, "--name", "laptop", "--reason", "lost"}, `--reason: unknown revocation reason "lost": use one of unspecified, keyCompromise`},
		{"revoke unknown name", []string{"revoke", "--dir", dir, "--name", "tablet"}, "certificate " + filepath.Join(dir, "tablet.crt") + " not found: check --name"},
		{"revoke missing CA", []string{"revoke", "--dir", empty, "--serial", "5"}, "run 'tunneld pki init --dir " + empty + "' first"},
		{"revoke zero crl days", []string{"revoke", "--dir", dir, "--name", "laptop", "--crl-days", "-1"}, "--crl-days -1: pass a positive number of days"},
		{"crl without dir", []string{"crl"}, "--dir is required, e.g. tunneld pki crl --dir /etc/tlsvpn/pki"},
		{"crl missing CA", []string{"crl", "--dir", empty}, "run 'tunneld pki init --dir " + empty + "' first"},
		{"list without dir", []string{"list"}, "--dir is required, e.g. tunneld pki list --dir /etc/tlsvpn/pki"},
		{"list missing CA", []string{"list", "--dir", empty}, "CA certificate " + filepath.Join(empty, "ca.crt") + " not found"},
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
		{"issue server --no-name-san alone", []string{"issue", "--dir", dir, "--server", "--name", "vpn.test", "--no-name-san"}, "--no-name-san leaves the certificate without an address"},
		{"issue client --no-name-san", []string{"issue", "--dir", dir, "--client", "--name", "x", "--no-name-san"}, "--no-name-san applies to --server certificates only"},
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
		name        string
		args        []string
		wantCN      string
		wantKey     string
		wantCRLDays int
	}{
		{"defaults", nil, "tlsvpn CA", "ECDSA P-256", 30},
		{"ed25519", []string{"--algo", "ed25519", "--cn", "Example VPN CA", "--days", "30", "--crl-days", "7"}, "Example VPN CA", "Ed25519", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new", "pki")
			out := pkiMustRun(t, append([]string{"init", "--dir", dir}, tt.args...)...)
			caCrt, caKey, crlPEM := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), filepath.Join(dir, "crl.pem")
			for _, want := range []string{caCrt, caKey, crlPEM, "tunneld pki crl --dir " + dir + "\n", "tunneld pki issue --dir " + dir + " --server --name "} {
				if !strings.Contains(out, want) {
					t.Errorf("init output lacks %q; got:\n%s", want, out)
				}
			}
			for path, want := range map[string]fs.FileMode{dir: 0o700, caKey: 0o600, caCrt: 0o644, crlPEM: 0o644} {
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
			crl := pkiLoadCRL(t, dir)
			if crl.List.Number.Int64() != 1 || len(crl.List.RevokedCertificateEntries) != 0 {
				t.Errorf("crl.pem: number %v with %d entries, want an empty CRL number 1", crl.List.Number, len(crl.List.RevokedCertificateEntries))
			}
			if got := crl.List.NextUpdate.Sub(crl.List.ThisUpdate); got != time.Duration(tt.wantCRLDays)*24*time.Hour {
				t.Errorf("crl.pem valid for %v, want %d days", got, tt.wantCRLDays)
			}
		})
	}
}

// pkiLoadCRL loads dir/crl.pem, checking it against dir/ca.crt.
func pkiLoadCRL(t *testing.T, dir string) *certs.CRL {
	t.Helper()
	crl, err := certs.LoadCRL(filepath.Join(dir, "crl.pem"), pkiReadCert(t, filepath.Join(dir, "ca.crt")))
	if err != nil {
		t.Fatalf("LoadCRL: %v", err)
	}
	return crl
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
			"gw", x509.ExtKeyUsageServerAuth, []string{"gw", "vpn.test"}, []string{"127.0.0.1", "2001:db8::1"},
			"Clients must dial the server as one of: gw, vpn.test, 127.0.0.1, 2001:db8::1\n"},
		{"server with --ip only keeps its name", []string{"--server", "--name", "vpn1.test", "--ip", "192.0.2.1"},
			"vpn1.test", x509.ExtKeyUsageServerAuth, []string{"vpn1.test"}, []string{"192.0.2.1"},
			"Clients must dial the server as one of: vpn1.test, 192.0.2.1\n"},
		{"server name repeated with --dns and --ip", []string{"--server", "--name", "vpn2.test", "--dns", "vpn2.test", "--ip", "192.0.2.2", "--ip", "192.0.2.2"},
			"vpn2.test", x509.ExtKeyUsageServerAuth, []string{"vpn2.test"}, []string{"192.0.2.2"},
			"Clients must dial the server as one of: vpn2.test, 192.0.2.2\n"},
		{"server name that is an IP address", []string{"--server", "--name", "192.0.2.3", "--dns", "vpn3.test"},
			"192.0.2.3", x509.ExtKeyUsageServerAuth, []string{"vpn3.test"}, []string{"192.0.2.3"},
			"Clients must dial the server as one of: vpn3.test, 192.0.2.3\n"},
		{"server --no-name-san", []string{"--server", "--name", "gw4", "--no-name-san", "--ip", "192.0.2.4"},
			"gw4", x509.ExtKeyUsageServerAuth, nil, []string{"192.0.2.4"},
			"Clients must dial the server as one of: 192.0.2.4\n"},
		{"server name that is not an address", []string{"--server", "--name", "my_gw", "--dns", "vpn5.test"},
			"my_gw", x509.ExtKeyUsageServerAuth, []string{"vpn5.test"}, nil,
			"Clients must dial the server as one of: vpn5.test\n\"my_gw\" is neither a hostname nor an IP address, so it is only the certificate's name, not an address.\n"},
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

// pkiSerial returns the serial number of dir/name.crt.
func pkiSerial(t *testing.T, dir, name string) *big.Int {
	t.Helper()
	return pkiReadCert(t, filepath.Join(dir, name+".crt")).SerialNumber
}

// pkiColonHex formats n as colon-separated hex bytes, as 'openssl x509 -text' prints serials.
func pkiColonHex(n *big.Int) string {
	var parts []string
	for _, b := range n.Bytes() {
		parts = append(parts, fmt.Sprintf("%02x", b))
	}
	return strings.Join(parts, ":")
}

func TestPKIRevoke(t *testing.T) {
	dir := pkiNewDir(t)
	for _, name := range []string{"laptop", "phone", "tablet"} {
		pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", name)
	}
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test")
	laptop, phone, tablet := pkiSerial(t, dir, "laptop"), pkiSerial(t, dir, "phone"), pkiSerial(t, dir, "tablet")
	crlFile := filepath.Join(dir, "crl.pem")

	// Each step runs on the directory the previous one left.
	steps := []struct {
		name       string
		args       []string
		wantOut    []string
		wantNumber int64 // CRL number afterwards
		wantSerial *big.Int
		wantReason int
	}{
		{"by name", []string{"--name", "laptop", "--reason", "keyCompromise"}, []string{
			`Revoked client certificate "laptop" (serial ` + certs.FormatSerial(laptop) + ", " + filepath.Join(dir, "laptop.crt") + "), reason keyCompromise.",
			"Updated " + crlFile + ": CRL number 2, 1 revoked, next update ",
			"tunneld pki crl --dir " + dir + "\n",
		}, 2, laptop, 1},
		{"twice", []string{"--name", "laptop", "--reason", "superseded"}, []string{
			`Client certificate "laptop" (serial ` + certs.FormatSerial(laptop) + ", " + filepath.Join(dir, "laptop.crt") + ") was already revoked on ",
			"(keyCompromise): nothing to do; " + crlFile + " is unchanged.",
		}, 2, laptop, 1},
		{"by 0x serial", []string{"--serial", certs.FormatSerial(phone), "--reason", "superseded"}, []string{
			`Revoked client certificate "phone"`, "reason superseded.", "CRL number 3, 2 revoked",
		}, 3, phone, 4},
		{"by openssl serial", []string{"--serial", pkiColonHex(tablet)}, []string{`Revoked client certificate "tablet"`, "reason unspecified."}, 4, tablet, 0},
		{"by decimal serial without file", []string{"--serial", "4660", "--reason", "cessationOfOperation"}, []string{
			"Revoked serial 0x1234, reason cessationOfOperation.",
			"No certificate in " + dir + " has this serial number: if you expected one, check the number",
		}, 5, big.NewInt(0x1234), 5},
		{"server certificate", []string{"--name", "vpn.test"}, []string{
			`Revoked server certificate "vpn.test"`, "Clients do not check the CRL: also issue a new server certificate",
		}, 6, pkiSerial(t, dir, "vpn.test"), 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before, err := os.ReadFile(crlFile)
			if err != nil {
				t.Fatal(err)
			}
			out := pkiMustRun(t, append([]string{"revoke", "--dir", dir}, st.args...)...)
			for _, w := range st.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("revoke output lacks %q; got:\n%s", w, out)
				}
			}
			after, err := os.ReadFile(crlFile)
			if err != nil {
				t.Fatal(err)
			}
			if unchanged := bytes.Equal(before, after); unchanged != (st.name == "twice") {
				t.Errorf("crl.pem unchanged = %v", unchanged)
			}
			if got := pkiMode(t, crlFile); got != 0o644 {
				t.Errorf("mode of crl.pem = %v, want 0644", got)
			}
			crl := pkiLoadCRL(t, dir)
			if crl.List.Number.Int64() != st.wantNumber {
				t.Errorf("CRL number = %v, want %d", crl.List.Number, st.wantNumber)
			}
			if e, ok := crl.Lookup(st.wantSerial); !ok || e.ReasonCode != st.wantReason {
				t.Errorf("CRL entry for %v = %+v, %v; want reason %d", st.wantSerial, e, ok, st.wantReason)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return strings.HasSuffix(e.Name(), ".tmp") }) {
		t.Errorf("revoke left a temporary file in %s", dir)
	}
}

func TestPKIRevokeCreatesCRL(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	if err := os.Remove(filepath.Join(dir, "crl.pem")); err != nil {
		t.Fatal(err)
	}
	out := pkiMustRun(t, "revoke", "--dir", dir, "--name", "laptop", "--crl-days", "3")
	if want := "Created " + filepath.Join(dir, "crl.pem") + ": CRL number 1, 1 revoked"; !strings.Contains(out, want) {
		t.Errorf("revoke output lacks %q; got:\n%s", want, out)
	}
	crl := pkiLoadCRL(t, dir)
	if !crl.IsRevoked(pkiSerial(t, dir, "laptop")) {
		t.Errorf("new crl.pem does not list laptop")
	}
	if got := crl.List.NextUpdate.Sub(crl.List.ThisUpdate); got != 3*24*time.Hour {
		t.Errorf("crl.pem valid for %v, want 3 days (--crl-days 3)", got)
	}
}

func TestPKICRL(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	pkiMustRun(t, "revoke", "--dir", dir, "--name", "laptop")
	crlFile := filepath.Join(dir, "crl.pem")
	tests := []struct {
		name       string
		args       []string
		remove     bool
		wantOut    string
		wantNumber int64
		wantDays   int
		wantLaptop bool
	}{
		{"refresh", nil, false, "Re-signed " + crlFile + ": CRL number 3, 1 revoked, next update ", 3, 30, true},
		{"refresh with days", []string{"--crl-days", "7"}, false, "CRL number 4, 1 revoked", 4, 7, true},
		{"missing", nil, true, "Created " + crlFile + ": CRL number 1, 0 revoked", 1, 30, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.remove {
				if err := os.Remove(crlFile); err != nil {
					t.Fatal(err)
				}
			}
			out := pkiMustRun(t, append([]string{"crl", "--dir", dir}, tt.args...)...)
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("crl output lacks %q; got:\n%s", tt.wantOut, out)
			}
			crl := pkiLoadCRL(t, dir)
			if revoked := crl.IsRevoked(pkiSerial(t, dir, "laptop")); crl.List.Number.Int64() != tt.wantNumber || revoked != tt.wantLaptop {
				t.Errorf("CRL number %v, laptop revoked %v; want %d, %v", crl.List.Number, revoked, tt.wantNumber, tt.wantLaptop)
			}
			if got := crl.List.NextUpdate.Sub(crl.List.ThisUpdate); got != time.Duration(tt.wantDays)*24*time.Hour {
				t.Errorf("crl.pem valid for %v, want %d days", got, tt.wantDays)
			}
		})
	}
}

func TestPKICRLRefusesForeignCRL(t *testing.T) {
	dir, other := pkiNewDir(t), pkiNewDir(t)
	b, err := os.ReadFile(filepath.Join(other, "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "crl.pem"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = pkiRun(t, "crl", "--dir", dir)
	if err == nil || !strings.Contains(err.Error(), "is not signed by the CA") || !strings.Contains(err.Error(), "move it away and run the command again") {
		t.Fatalf("pki crl over another CA's crl.pem = %v, want refusal with advice", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "crl.pem")); !bytes.Equal(after, b) {
		t.Errorf("pki crl replaced another CA's crl.pem")
	}
}

func TestPKIList(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test")
	pkiMustRun(t, "revoke", "--dir", dir, "--name", "laptop", "--reason", "keyCompromise")
	pkiMustRun(t, "revoke", "--dir", dir, "--serial", "0xC0FFEE")
	if err := os.WriteFile(filepath.Join(dir, "junk.crt"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := pkiMustRun(t, "list", "--dir", dir)
	lines := strings.Split(out, "\n")
	want := []string{
		"CRL " + filepath.Join(dir, "crl.pem") + ": CRL number 3, 2 revoked, next update ",
		"NAME     KIND    SERIAL",
		"junk     -       -",
		"laptop   client  " + certs.FormatSerial(pkiSerial(t, dir, "laptop")),
		"vpn.test server  " + certs.FormatSerial(pkiSerial(t, dir, "vpn.test")),
		"Revoked serial numbers without a certificate file in " + dir + ":",
		"  0xC0FFEE  revoked ",
	}
	for _, w := range want {
		// Column widths depend on the serials; compare with runs of spaces squeezed.
		w = strings.Join(strings.Fields(w), " ")
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(strings.Join(strings.Fields(l), " "), w) }) {
			t.Errorf("list output lacks a line starting %q; got:\n%s", w, out)
		}
	}
	for _, w := range []string{"(keyCompromise)", "unreadable: ", " valid\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("list output lacks %q; got:\n%s", w, out)
		}
	}
}

// TestPKIRevokedHandshake checks the whole path: certificates and CRL from 'tunneld pki', a
// server config with revocation, and a client refused once it is revoked and the CRL reloaded.
func TestPKIRevokedHandshake(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test")
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "phone")
	file := func(name string) string { return filepath.Join(dir, name) }
	server, err := certs.ServerConfig(file("vpn.test.crt"), file("vpn.test.key"), file("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := certs.LoadCACert(file("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// Handshake runs in a synctest bubble, where time.Now is fake: give the checker real time.
	now := time.Now()
	rev, err := certs.NewRevocation(file("crl.pem"), caCert, certs.RevocationOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("NewRevocation: %v", err)
	}
	server = certs.WithRevocation(server, rev)
	client := func(name string) *tls.Config {
		t.Helper()
		cfg, err := certs.ClientConfig(file(name+".crt"), file(name+".key"), file("ca.crt"), "vpn.test")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	pkiMustRun(t, "revoke", "--dir", dir, "--name", "phone", "--reason", "keyCompromise")
	// Before the reload the server still enforces the old (empty) CRL.
	if res := certstest.Handshake(t, server, client("phone")); res.ServerErr != nil {
		t.Errorf("phone before reload: server error %v, want success", res.ServerErr)
	}
	if reloaded, err := rev.ReloadIfChanged(); !reloaded || err != nil {
		t.Fatalf("ReloadIfChanged after revoke = %v, %v; want true, nil", reloaded, err)
	}
	tests := []struct {
		client  string
		wantErr error
	}{
		{"laptop", nil},
		{"phone", certs.ErrRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.client, func(t *testing.T) {
			res := certstest.Handshake(t, server, client(tt.client))
			if tt.wantErr == nil {
				if res.ServerErr != nil || res.ClientErr != nil {
					t.Fatalf("handshake: server %v, client %v; want success", res.ServerErr, res.ClientErr)
				}
				return
			}
			if !errors.Is(res.ServerErr, tt.wantErr) || !strings.Contains(res.ServerErr.Error(), `"phone"`) {
				t.Errorf("server error = %v, want %v naming phone", res.ServerErr, tt.wantErr)
			}
			if res.ClientErr == nil || !strings.Contains(res.ClientErr.Error(), "bad certificate") {
				t.Errorf("client error = %v, want a bad certificate alert", res.ClientErr)
			}
		})
	}
}

// TestPKIServerNameVerifies is the setup the README documents: a server certificate issued
// with only --ip, and a client that dials the server by the --name it was issued under. The
// name is in the certificate, so the handshake succeeds; with --no-name-san it fails the way
// it used to for everyone ("not valid for any names"), and a client dialing the IP still works.
func TestPKIServerNameVerifies(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test", "--ip", "127.0.0.1")
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "bare.test", "--ip", "127.0.0.1", "--no-name-san")
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "127.0.0.2")
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	file := func(name string) string { return filepath.Join(dir, name) }
	for _, tt := range []struct {
		server, dial string
		wantErr      string // "" means success
	}{
		{server: "vpn.test", dial: "vpn.test"},
		{server: "vpn.test", dial: "127.0.0.1"},
		{server: "127.0.0.2", dial: "127.0.0.2"},
		{server: "bare.test", dial: "127.0.0.1"},
		{server: "bare.test", dial: "bare.test", wantErr: "certificate is not valid for any names, but wanted to match bare.test"},
	} {
		t.Run(tt.server+" dialed as "+tt.dial, func(t *testing.T) {
			server, err := certs.ServerConfig(file(tt.server+".crt"), file(tt.server+".key"), file("ca.crt"))
			if err != nil {
				t.Fatalf("ServerConfig: %v", err)
			}
			client, err := certs.ClientConfig(file("laptop.crt"), file("laptop.key"), file("ca.crt"), tt.dial)
			if err != nil {
				t.Fatalf("ClientConfig: %v", err)
			}
			res := certstest.Handshake(t, server, client)
			if tt.wantErr == "" {
				if res.ClientErr != nil || res.ServerErr != nil {
					t.Fatalf("handshake: client %v, server %v; want success", res.ClientErr, res.ServerErr)
				}
				return
			}
			if res.ClientErr == nil || !strings.Contains(res.ClientErr.Error(), tt.wantErr) {
				t.Errorf("client error = %v, want one containing %q", res.ClientErr, tt.wantErr)
			}
		})
	}
}
