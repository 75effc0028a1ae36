package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/certs"
	"tlsvpn/cmd/internal/cli"
	"tlsvpn/routing"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
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
				`tunneld.yaml:1: unknown key "max-client" (did you mean "max-clients"?); known: ca, cert, `,
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

func TestPlanReload(t *testing.T) {
	base := map[string]string{
		"listen": "0.0.0.0:443", "tun": "tunneld0", "subnet": "100.64.0.0/24", "cert": "a.crt", "log-level": "info",
		"max-clients": "1024", "handshake-rate": "2", "max-handshakes": "64", "keepalive": "15s", "queue-len": "64",
		"route": "[198.18.10.0/24]", "dns": "[]", "crl": "", "crl-check": "5s", "clients": "", "client-to-client": "false",
		"some-flag-added-later": "x",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name          string
		next          map[string]string
		want          string
		live, restart []string
	}{
		{"nothing", with(), "nothing changed", nil, nil},
		{"a limit", with("max-clients", "2000", "handshake-rate", "5"), "set the connection limits", []string{"handshake-rate", "max-clients"}, nil},
		{"log level", with("log-level", "debug"), "set the log level", []string{"log-level"}, nil},
		{"new sessions' settings", with("keepalive", "5s", "queue-len", "128"), "set the settings of new connections", []string{"keepalive", "queue-len"}, nil},
		{"pushed routes", with("route", "[198.18.10.0/24,198.18.11.0/24]"), "push new routes/DNS: reconnect the sessions they change", []string{"route"}, nil},
		{"DNS", with("dns", "[100.64.0.1]"), "push new routes/DNS: reconnect the sessions they change", []string{"dns"}, nil},
		{"CRL", with("crl", "/etc/tlsvpn/pki/crl.pem", "crl-check", "10s"), "switch the revocation list; set the CRL check interval", []string{"crl", "crl-check"}, nil},
		{"policy", with("client-to-client", "true", "clients", "/etc/tlsvpn/clients.yaml"), "apply the clients policy defaults", []string{"client-to-client", "clients"}, nil},
		{"restart only", with("listen", "0.0.0.0:8443", "subnet", "100.64.1.0/24", "cert", "b.crt", "max-handshakes", "128"),
			"warn: restart needed for cert, listen, max-handshakes, subnet", nil, []string{"cert", "listen", "max-handshakes", "subnet"}},
		{"a flag this table does not know needs a restart", with("some-flag-added-later", "y"), "warn: restart needed for some-flag-added-later", nil, []string{"some-flag-added-later"}},
		{"both", with("tun", "vpn1", "max-clients", "5"), "set the connection limits; warn: restart needed for tun", []string{"max-clients"}, []string{"tun"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planReload(base, tc.next)
			if got := p.String(); got != tc.want {
				t.Errorf("plan = %q, want %q", got, tc.want)
			}
			if !slices.Equal(p.live, tc.live) || !slices.Equal(p.restart, tc.restart) {
				t.Errorf("live %v restart %v, want %v and %v", p.live, p.restart, tc.live, tc.restart)
			}
		})
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

// TestReload runs the reload against an in-process server (no TUN, no
// root): a valid change applies per subsystem and warns about what needs
// a restart; a file that fails to parse or validate changes nothing.
func TestReload(t *testing.T) {
	pki := checkPKI(t)
	files := "cert: " + filepath.Join(pki, "vpn.example.com.crt") + "\nkey: " + filepath.Join(pki, "vpn.example.com.key") +
		"\nca: " + filepath.Join(pki, "ca.crt") + "\n"
	path := filepath.Join(t.TempDir(), "tunneld.yaml")
	writeTestFile(t, path, files+"route: [198.18.10.0/24]\nmax-clients: 10\nkeepalive: 15s\nclients:\n  laptop:\n    address: 100.64.0.10\n")

	var o options
	fs := testFlagSet(&o)
	if err := fs.Parse([]string{"--config", path, "--log-level", "info"}); err != nil {
		t.Fatal(err)
	}
	src := newSource(fs, &o)
	cur, err := src.read()
	if err != nil {
		t.Fatal(err)
	}
	st, errs := parseSettings(cur)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	pool, err := routing.NewPool(st.subnet)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := cur.loadPolicy(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	pinAddresses(clients, pool, nil)
	var policies atomic.Pointer[policySet]
	policies.Store(&policySet{clients: clients})
	limits := tunnel.NewLimiter(limitConfig(cur))
	var logBuf tunneltest.SyncBuffer
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: level}))
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		TLS: &tls.Config{}, Identity: certs.PeerIdentity, Dev: tuntest.NewChannelDevice("t0", 1500, 1, 1), Pool: pool,
		Subnet: st.subnet, ServerAddr: pool.ServerAddr(), MTU: 1500, Routes: st.routes, Keepalive: cur.keepalive,
		Limits: limits, Policy: func(id string) tunnel.Policy { return policies.Load().policy(id) }, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := newReloader(&reloader{src: src, level: level, pool: pool, policies: &policies, srv: srv, limits: limits,
		crl: new(crlHolder), forwarding: true, log: log}, cur)

	// state renders what a reload may change.
	state := func() string {
		lv := srv.Live()
		addr, _ := pool.Lookup("laptop")
		return fmt.Sprintf("level=%v max-clients=%d routes=%v keepalive=%v laptop=%v routes=%v crl=%s", level.Level(),
			limits.Config().MaxClients, lv.Routes, lv.Keepalive, addr, policies.Load().policy("laptop").Routes, crlPath(r.crl))
	}
	const start = "level=INFO max-clients=10 routes=[198.18.10.0/24] keepalive=15s laptop=100.64.0.10 routes=[] crl="
	if got := state(); got != start {
		t.Fatalf("at start: %s\nwant %s", got, start)
	}

	steps := []struct {
		name, file string
		wantErr    string // "" for a valid file
		want       string // state after
		wantLog    []string
		wantReport []string // lines of what Reload returns ('tunneld reload' prints it)
	}{
		{
			name: "a limit, the log level, pushed routes, a client's routes, the CRL, and the listen address",
			file: files + "crl: " + filepath.Join(pki, "crl.pem") + "\nlisten: 0.0.0.0:8443\nlog-level: debug\nroute: [198.18.10.0/24, 198.18.11.0/24]\n" +
				"max-clients: 20\nkeepalive: 5s\nclients:\n  laptop:\n    address: 100.64.0.11\n    routes: [198.18.12.0/24]\n",
			// --log-level is on the command line: it wins over the file.
			want: "level=INFO max-clients=20 routes=[198.18.10.0/24 198.18.11.0/24] keepalive=5s laptop=100.64.0.11 routes=[198.18.12.0/24] crl=" + filepath.Join(pki, "crl.pem"),
			wantLog: []string{`msg="setting changed but needs a restart: keeping the running value until then" setting=listen running=0.0.0.0:443 configured=0.0.0.0:8443`,
				`msg="revocation list switched"`, `msg="client policies reloaded"`, `msg="configuration reloaded"`},
			wantReport: []string{"configuration reloaded from " + path, "applied: crl, keepalive, max-clients, route",
				"needs a restart, running value kept: listen", "client policies reloaded from " + path + ":10",
				"revocation list reloaded from " + filepath.Join(pki, "crl.pem")},
		},
		{
			name:    "an unknown key changes nothing",
			file:    files + "max-clients: 30\nmax-client: 40\n",
			wantErr: path + `:5: unknown key "max-client" (did you mean "max-clients"?)`,
			wantLog: []string{`msg="reload refused: keeping the previous configuration and client policies"`},
		},
		{
			name:    "a bad value changes nothing",
			file:    files + "max-clients: 30\nroute: [bogus]\n",
			wantErr: path + `:5: route: "bogus": want a CIDR`,
		},
		{
			name:    "a bad clients policy changes nothing",
			file:    files + "max-clients: 30\nclients:\n  laptop:\n    address: 100.64.9.9\n",
			wantErr: path + `:7: client "laptop": address 100.64.9.9 is not a client address`,
		},
		{
			name:    "a CRL that does not load changes nothing",
			file:    files + "max-clients: 30\ncrl: " + filepath.Join(pki, "missing.pem") + "\n",
			wantErr: path + ":5: crl: ",
		},
		{
			name: "keys removed from the file go back to their defaults",
			file: files + "listen: 0.0.0.0:8443\n",
			want: "level=INFO max-clients=1024 routes=[] keepalive=15s laptop=100.64.0.11 routes=[] crl=",
			// The listen address still differs from the running one: warned again.
			wantLog: []string{`setting=listen running=0.0.0.0:443 configured=0.0.0.0:8443`,
				`msg="revocation list removed (--crl): revoked client certificates are no longer refused"`},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			before := state()
			logStart := len(logBuf.String())
			writeTestFile(t, path, step.file)
			report, err := r.Reload()
			for _, w := range step.wantReport {
				if !slices.Contains(strings.Split(report, "\n"), w) {
					t.Errorf("Reload's report lacks the line %q:\n%s", w, report)
				}
			}
			switch {
			case step.wantErr == "" && err != nil:
				t.Fatalf("Reload: %v", err)
			case step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)):
				t.Fatalf("Reload = %v, want an error containing %q", err, step.wantErr)
			}
			want := step.want
			if step.wantErr != "" {
				want = before
			}
			if got := state(); got != want {
				t.Errorf("after the reload:\n got %s\nwant %s", got, want)
			}
			log := logBuf.String()[logStart:]
			for _, w := range step.wantLog {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %q:\n%s", w, log)
				}
			}
		})
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

func crlPath(h *crlHolder) string {
	if r := h.rev.Load(); r != nil {
		return r.Path()
	}
	return ""
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
