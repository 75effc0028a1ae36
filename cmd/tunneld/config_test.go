package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

// checkPKI makes a PKI with a server certificate and a CRL and returns
// its directory.
func checkPKI(t *testing.T) string {
	t.Helper()
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.example.com", "--ip", "192.0.2.1")
	pkiMustRun(t, "crl", "--dir", dir)
	return dir
}

// runCheckCmd runs 'tunneld check args...' and returns what it printed
// and its error.
func runCheckCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"check"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestCheck(t *testing.T) {
	pki := checkPKI(t)
	files := "cert: " + filepath.Join(pki, "vpn.example.com.crt") + "\nkey: " + filepath.Join(pki, "vpn.example.com.key") +
		"\nca: " + filepath.Join(pki, "ca.crt") + "\ncrl: " + filepath.Join(pki, "crl.pem") + "\n"
	for _, tc := range []struct {
		name, file string
		args       []string
		want       []string // lines of the output, in order; "ok" means "FILE: ok"
	}{
		{name: "valid", file: files + "subnet: 100.64.0.0/24\nroute: [198.18.10.0/24]\nmax-clients: 2000\nkeepalive: 15s\nnat: true\n", want: []string{"ok"}},
		{name: "valid with a clients policy", file: files + "subnet6: fd00:64::/64\nclients:\n  laptop:\n    address: [100.64.0.10, \"fd00:64::10\"]\n", want: []string{"ok"}},
		{
			name: "every problem, by line",
			file: "max-client: 3\nlisten: 0.0.0.0\nsubnet: 100.64.0.0/31\nmtu: 100\nkeepalive: 15\n",
			want: []string{
				`tunneld.yaml:1: unknown key "max-client" (did you mean "max-clients"?); known: bgp-asn, bgp-next-hop, `,
				`tunneld.yaml:5: keepalive: "15": want a duration such as 15s`,
			},
		},
		{
			name: "values that parse but are wrong",
			file: files + "listen: 0.0.0.0\nsubnet: 100.64.0.0/31\nmtu: 100\nroute: [bogus]\ndns: [not-an-ip]\ntun: a-name-much-too-long\nlog-level: loud\n",
			want: []string{
				`tunneld.yaml:5: listen: "0.0.0.0": want ADDR:PORT`,
				"tunneld.yaml:6: subnet: address pool 100.64.0.0/31: subnet too small",
				"tunneld.yaml:7: mtu: 100: want 576 to",
				`tunneld.yaml:8: route: "bogus": want a CIDR`,
				`tunneld.yaml:9: dns: "not-an-ip": want an IP address`,
				`tunneld.yaml:10: tun: "a-name-much-too-long": longer than 15 bytes`,
				`tunneld.yaml:11: log-level: "loud": want debug, info, warn or error`,
			},
		},
		{name: "shared port", file: files + "share-backend: 127.0.0.1:8443\nshare-proxy-protocol: true\nshare-max-conns: 100\nshare-idle-timeout: 1m\n", want: []string{"ok"}},
		{
			name: "shared port, wrong values",
			file: files + "share-backend: 8443\nshare-max-conns: -2\nshare-idle-timeout: -1s\n",
			want: []string{
				`tunneld.yaml:5: share-backend: "8443": want HOST:PORT of the web server`,
				`tunneld.yaml:6: share-max-conns: -2: want a count`,
				`tunneld.yaml:7: share-idle-timeout: -1s: want a duration`,
			},
		},
		{name: "required files", file: "subnet: 100.64.0.0/24\n", want: []string{"--cert: required", "--key: required", "--ca: required"}},
		{
			name: "files that do not load",
			file: "cert: " + filepath.Join(pki, "ca.crt") + "\nkey: " + filepath.Join(pki, "missing.key") + "\nca: " + filepath.Join(pki, "ca.crt") + "\n",
			want: []string{"tunneld.yaml:2: key: stat " + filepath.Join(pki, "missing.key") + ": no such file"},
		},
		{name: "a CRL that is not one", file: files + "crl: " + filepath.Join(pki, "ca.crt") + "\n", want: []string{`tunneld.yaml:5: "crl" is already set at line 4`}},
		{name: "a CRL that is not one, from the command line", file: files, args: []string{"--crl", filepath.Join(pki, "ca.crt")}, want: []string{"--crl: "}},
		{
			name: "policy address outside the subnet",
			file: files + "subnet: 100.64.0.0/24\nclients:\n  laptop:\n    address: 100.64.1.10\n",
			want: []string{`tunneld.yaml:8: client "laptop": address 100.64.1.10 is not a client address of 100.64.0.0/24`},
		},
		{
			name: "the command line overrides the file",
			file: files + "subnet: 100.64.0.0/24\nclients:\n  laptop:\n    address: 100.64.0.10\n",
			args: []string{"--subnet", "100.64.8.0/24"},
			want: []string{`tunneld.yaml:8: client "laptop": address 100.64.0.10 is not a client address of 100.64.8.0/24`},
		},
		{
			name: "a policy in the file and --clients",
			file: files + "clients:\n  laptop: {}\n",
			args: []string{"--clients", "/etc/tlsvpn/clients.yaml"},
			want: []string{"tunneld.yaml:5: clients: the policy is in the file and --clients /etc/tlsvpn/clients.yaml names another: keep one"},
		},
		{name: "refused keys", file: files + "cleanup: true\ncpu-profile: x\n", want: []string{
			`tunneld.yaml:5: "cleanup" cannot be set in a config file`, `tunneld.yaml:6: "cpu-profile" cannot be set in a config file`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tunneld.yaml")
			writeTestFile(t, path, tc.file)
			out, err := runCheckCmd(t, append([]string{"--config", path}, tc.args...)...)
			out = strings.ReplaceAll(out, path, "tunneld.yaml")
			if tc.want[0] == "ok" {
				if err != nil || out != "tunneld.yaml: ok\n" {
					t.Fatalf("check = %v, output:\n%s\nwant \"tunneld.yaml: ok\"", err, out)
				}
				return
			}
			if err == nil || cli.ExitCode(err) != cli.ExitFailure {
				t.Errorf("check = %v (exit %d), want exit %d", err, cli.ExitCode(err), cli.ExitFailure)
			}
			lines := strings.Split(out, "\n")
			i := 0
			for _, w := range tc.want {
				for i < len(lines) && !strings.HasPrefix(lines[i], w) {
					i++
				}
				if i == len(lines) {
					t.Errorf("output has no line %q after the ones before it:\n%s", w, out)
					return
				}
			}
			if strings.Contains(out, "main.") {
				t.Errorf("output names a Go type:\n%s", out)
			}
		})
	}
}

// TestCheckExample: the example in docs/examples is valid, with the
// certificate paths pointed at a real PKI.
func TestCheckExample(t *testing.T) {
	pki := checkPKI(t)
	example := filepath.Join("..", "..", "docs", "examples", "tunneld.yaml")
	out, err := runCheckCmd(t, "--config", example, "--cert", filepath.Join(pki, "vpn.example.com.crt"),
		"--key", filepath.Join(pki, "vpn.example.com.key"), "--ca", filepath.Join(pki, "ca.crt"), "--crl", filepath.Join(pki, "crl.pem"))
	if err != nil || out != example+": ok\n" {
		t.Fatalf("check %s = %v:\n%s", example, err, out)
	}
	// And as written, it fails only for the files it names.
	out, _ = runCheckCmd(t, "--config", example)
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "no such file") && !strings.HasPrefix(line, "tunneld: ") {
			t.Errorf("check %s as written: unexpected problem %q", example, line)
		}
	}
}

// testFlagSet defines, on o, the flags the reload reads, as run does.
func testFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tunneld", pflag.ContinueOnError)
	fs.StringVar(&o.config, "config", "", "")
	fs.StringVar(&o.listen, "listen", "0.0.0.0:443", "")
	fs.StringVar(&o.cert, "cert", "", "")
	fs.StringVar(&o.key, "key", "", "")
	fs.StringVar(&o.ca, "ca", "", "")
	fs.StringVar(&o.crl, "crl", "", "")
	fs.DurationVar(&o.crlCheck, "crl-check", 5*time.Second, "")
	fs.StringVar(&o.subnet, "subnet", "100.64.0.0/24", "")
	fs.StringVar(&o.tunName, "tun", "tunneld0", "")
	fs.IntVar(&o.mtu, "mtu", 1500, "")
	fs.StringArrayVar(&o.routes, "route", nil, "")
	fs.StringArrayVar(&o.dns, "dns", nil, "")
	fs.StringVar(&o.clients, "clients", "", "")
	fs.BoolVar(&o.clientToClient, "client-to-client", false, "")
	fs.DurationVar(&o.keepalive, "keepalive", 15*time.Second, "")
	fs.IntVar(&o.maxClients, "max-clients", tunnel.DefaultMaxClients, "")
	fs.StringVar(&o.congestion, "congestion", cli.DefaultCongestion, "")
	fs.StringVar(&o.logLevel, "log-level", "info", "")
	fs.StringVar(&o.logFormat, "log-format", "text", "")
	return fs
}

// TestSourceConfig: what a reload re-reads (the server's Options.Source)
// is the command line over the config file, as a server.Config; a file
// that does not parse or validate is an error naming the file and line.
func TestSourceConfig(t *testing.T) {
	pki := checkPKI(t)
	files := "cert: " + filepath.Join(pki, "vpn.example.com.crt") + "\nkey: " + filepath.Join(pki, "vpn.example.com.key") +
		"\nca: " + filepath.Join(pki, "ca.crt") + "\n"
	path := filepath.Join(t.TempDir(), "tunneld.yaml")
	var o options
	fs := testFlagSet(&o)
	fs.StringVar(&o.stateDir, "state-dir", "", "")
	cli.AddControlFlags(fs, &o.ctl, "tunneld")
	addShareFlags(fs, &o.share)
	if err := fs.Parse([]string{"--config", path, "--log-level", "warn", "--control", ""}); err != nil {
		t.Fatal(err)
	}
	src := newSource(fs, &o)

	writeTestFile(t, path, files+"route: [198.18.10.0/24]\nmax-clients: 10\nkeepalive: 5s\ncrl: /etc/crl.pem\nclients:\n  laptop:\n    address: 100.64.0.10\n"+
		"share-backend: 127.0.0.1:8443\nshare-proxy-protocol: true\nshare-max-conns: 7\nshare-idle-timeout: 90s\n")
	c, err := src.config()
	if err != nil {
		t.Fatal(err)
	}
	if c.ShareBackend != "127.0.0.1:8443" || !c.ShareProxyProtocol || c.ShareMaxConns != 7 || c.ShareIdleTimeout != 90*time.Second {
		t.Errorf("shared port: backend %q, PROXY %v, max %d, idle %v; want the file's", c.ShareBackend, c.ShareProxyProtocol, c.ShareMaxConns, c.ShareIdleTimeout)
	}
	if c.MaxClients != 10 || c.Keepalive != 5*time.Second || len(c.Routes) != 1 || c.Routes[0] != netip.MustParsePrefix("198.18.10.0/24") ||
		c.LogLevel != slog.LevelWarn || !c.NoControl || c.ConfigFile != path || c.Settings["max-clients"] != "10" || c.Settings["log-format"] != "text" {
		t.Errorf("config = %+v", c)
	}
	if c.StateDir != "" || c.MemoryLeases {
		t.Errorf("state dir %q, memory %v; want the default", c.StateDir, c.MemoryLeases)
	}
	if got, want := c.Locate("crl"), path+":7: crl"; got != want {
		t.Errorf("Locate(crl) = %q, want %q", got, want)
	}
	if got, want := c.Locate("tun"), "--tun"; got != want {
		t.Errorf("Locate(tun) = %q, want %q", got, want)
	}
	pool, err := routing.NewPool(c.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy == nil || c.PolicySource != path+":8" {
		t.Fatalf("policy %v from %q, want the file's clients at line 8", c.Policy != nil, c.PolicySource)
	}
	if p, err := c.Policy(pool, nil); err != nil || p["laptop"].Addr != netip.MustParseAddr("100.64.0.10") {
		t.Errorf("policy = %v, %v", p, err)
	}

	for _, tc := range []struct{ file, want string }{
		{files + "max-clients: 30\nmax-client: 40\n", path + `:5: unknown key "max-client" (did you mean "max-clients"?)`},
		{files + "max-clients: 30\nroute: [bogus]\n", path + `:5: route: "bogus": want a CIDR`},
	} {
		writeTestFile(t, path, tc.file)
		if _, err := src.config(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config of %q = %v, want %q", tc.file, err, tc.want)
		}
	}
	writeTestFile(t, path, files+"clients:\n  laptop:\n    address: 100.64.9.9\n")
	c, err = src.config()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Policy(pool, nil); err == nil || !strings.Contains(err.Error(), path+`:6: client "laptop": address 100.64.9.9 is not a client address`) {
		t.Errorf("policy with a foreign address: %v", err)
	}
}

// TestServeConfigErrors: tunneld refuses to start on a bad config file,
// naming the file and line, before it opens anything.
func TestServeConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tunneld.yaml")
	writeTestFile(t, path, "cert: a.crt\nkey: a.key\nca: ca.crt\nsubnet: 100.64.0.0/33\n")
	var out bytes.Buffer
	err := run(context.Background(), []string{"--config", path}, &out, &out)
	if want := path + `:4: subnet: "100.64.0.0/33": want an IPv4 CIDR`; err == nil || !strings.Contains(err.Error(), want) || cli.ExitCode(err) != cli.ExitUsage {
		t.Errorf("run = %v (exit %d), want %q and exit %d", err, cli.ExitCode(err), want, cli.ExitUsage)
	}
	writeTestFile(t, path, "max-client: 1\n")
	err = run(context.Background(), []string{"--config", path}, &out, &out)
	if want := path + `:1: unknown key "max-client"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("run = %v, want %q", err, want)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
