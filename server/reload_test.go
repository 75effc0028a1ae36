package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/routing"
	"tlsvpn/state"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

func TestPlanReload(t *testing.T) {
	base := map[string]string{
		"listen": "0.0.0.0:443", "tun": "tunneld0", "subnet": "100.64.0.0/24", "cert": "a.crt", "log-level": "info",
		"max-clients": "1024", "handshake-rate": "2", "max-handshakes": "64", "keepalive": "15s", "queue-len": "64",
		"route": "[198.18.10.0/24]", "dns": "[]", "crl": "", "crl-check": "5s", "clients": "", "client-to-client": "false",
		"some-flag-added-later": "x",
		"share-backend":         "", "share-proxy-protocol": "false", "share-max-conns": "1024", "share-idle-timeout": "5m0s",
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
		{"shared port limits", with("share-max-conns", "10", "share-idle-timeout", "1m0s"), "set the shared port's relay limits", []string{"share-idle-timeout", "share-max-conns"}, nil},
		{"shared port backend", with("share-backend", "127.0.0.1:8443", "share-proxy-protocol", "true"),
			"warn: restart needed for share-backend, share-proxy-protocol", nil, []string{"share-backend", "share-proxy-protocol"}},
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

// testPKI writes a CA, a server certificate and a CRL to a temporary
// directory and returns a configuration that uses them, and the CA.
func testPKI(t *testing.T) (Config, *certstest.CA) {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	caFile := ca.WriteFiles(t, dir)
	certFile, keyFile := certstest.WriteCert(t, dir, "vpn.example.com", ca.ServerCert(t, "vpn.example.com"))
	ca.WriteCRL(t, filepath.Join(dir, "crl.pem"), certs.CRLRequest{})
	return Config{Cert: certFile, Key: keyFile, CA: caFile}, ca
}

// policyOf returns a Config.Policy that gives laptop addr and, if given,
// routes; err instead if not nil.
func policyOf(addr string, routes []netip.Prefix, err error) func(pool, pool6 state.Leases) (Policies, error) {
	return func(pool, pool6 state.Leases) (Policies, error) {
		if err != nil {
			return nil, err
		}
		return Policies{"laptop": {Addr: netip.MustParseAddr(addr), Routes: routes}}, nil
	}
}

// TestReload runs the reload against an in-process server (no TUN, no
// root): a valid change applies per subsystem and warns about what needs
// a restart; a configuration that fails to read or validate changes
// nothing.
func TestReload(t *testing.T) {
	files, _ := testPKI(t)
	crlFile := filepath.Join(filepath.Dir(files.CA), "crl.pem")
	pfx := netip.MustParsePrefix
	start := files
	start.Routes = []netip.Prefix{pfx("198.18.10.0/24")}
	start.MaxClients, start.Keepalive, start.CRLCheck = 10, 15*time.Second, 5*time.Second
	start.Policy, start.PolicySource = policyOf("100.64.0.10", nil, nil), "clients.yaml"
	start = start.withDefaults()

	pool, err := routing.NewPool(start.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := start.Policy(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	clients.Pin(pool, nil)
	policies := new(atomic.Pointer[policySet])
	policies.Store(&policySet{clients: clients})
	limits := tunnel.NewLimiter(start.limitConfig())
	var logBuf tunneltest.SyncBuffer
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: level}))
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		TLS: &tls.Config{}, Identity: certs.PeerIdentity, Dev: tuntest.NewChannelDevice("t0", 1500, 1, 1), Pool: pool,
		Subnet: start.Subnet, ServerAddr: pool.ServerAddr(), MTU: 1500, Routes: start.Routes, Keepalive: start.Keepalive,
		Limits: limits, Policy: func(id string) tunnel.Policy { return policies.Load().policy(id) }, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	var next Config
	var nextErr error
	r := newReloader(&reloader{src: func() (Config, error) { return next, nextErr }, level: level, pool: pool,
		policies: policies, srv: srv, limits: limits, crl: new(crlHolder), forwarding: true, log: log}, start)

	// state renders what a reload may change.
	state := func() string {
		lv := srv.Live()
		addr, _ := pool.Lookup("laptop")
		crl := ""
		if rev := r.crl.load(); rev != nil {
			crl = rev.Path()
		}
		return fmt.Sprintf("level=%v max-clients=%d routes=%v keepalive=%v laptop=%v routes=%v crl=%s", level.Level(),
			limits.Config().MaxClients, lv.Routes, lv.Keepalive, addr, policies.Load().policy("laptop").Routes, crl)
	}
	const atStart = "level=INFO max-clients=10 routes=[198.18.10.0/24] keepalive=15s laptop=100.64.0.10 routes=[] crl="
	if got := state(); got != atStart {
		t.Fatalf("at start: %s\nwant %s", got, atStart)
	}
	with := func(f func(c *Config)) Config {
		c := start
		f(&c)
		return c
	}
	changed := with(func(c *Config) {
		c.CRL, c.Listen, c.LogLevel, c.MaxClients, c.Keepalive = crlFile, "0.0.0.0:8443", slog.LevelDebug, 20, 5*time.Second
		c.Routes = []netip.Prefix{pfx("198.18.10.0/24"), pfx("198.18.11.0/24")}
		c.Policy = policyOf("100.64.0.11", []netip.Prefix{pfx("198.18.12.0/24")}, nil)
	})
	steps := []struct {
		name       string
		next       Config
		nextErr    error
		wantErr    string // "" for a valid configuration
		want       string // state after
		wantLog    []string
		wantReport []string // lines of what Reload returns ('tunneld reload' prints it)
	}{
		{
			name: "a limit, the log level, pushed routes, a client's routes, the CRL, and the listen address",
			next: changed,
			want: "level=DEBUG max-clients=20 routes=[198.18.10.0/24 198.18.11.0/24] keepalive=5s laptop=100.64.0.11 routes=[198.18.12.0/24] crl=" + crlFile,
			wantLog: []string{`msg="setting changed but needs a restart: keeping the running value until then" setting=listen running=0.0.0.0:443 configured=0.0.0.0:8443`,
				`msg="revocation list switched"`, `msg="client policies reloaded" file=clients.yaml clients=1 readdressed=1`, `msg="configuration reloaded"`},
			wantReport: []string{"configuration reloaded from the command line", "applied: crl, keepalive, log-level, max-clients, route",
				"needs a restart, running value kept: listen", "client policies reloaded from clients.yaml",
				"revocation list reloaded from " + crlFile},
		},
		{
			name:    "a configuration that does not read changes nothing",
			next:    with(func(c *Config) { c.MaxClients = 30 }),
			nextErr: errors.New(`tunneld.yaml:5: unknown key "max-client"`),
			wantErr: `reload refused: the configuration in force is kept: tunneld.yaml:5: unknown key "max-client"`,
			wantLog: []string{`msg="reload refused: keeping the previous configuration and client policies"`},
		},
		{
			name:    "a bad clients policy changes nothing",
			next:    with(func(c *Config) { c.MaxClients = 30; c.Policy = policyOf("", nil, errors.New("clients.yaml:3: bad")) }),
			wantErr: "clients.yaml:3: bad",
		},
		{
			name:    "a certificate that does not load changes nothing",
			next:    with(func(c *Config) { c.MaxClients = 30; c.Cert = c.Key }),
			wantErr: "reload refused",
		},
		{
			name: "a CRL that does not load changes nothing, and says where it was set",
			next: with(func(c *Config) {
				c.MaxClients, c.CRL = 30, filepath.Join(t.TempDir(), "missing.pem")
				c.Locate = func(flag string) string { return "tunneld.yaml:7: " + flag }
			}),
			wantErr: "tunneld.yaml:7: crl: ",
		},
		{
			name: "settings back to their defaults; the listen address is still not the running one",
			next: with(func(c *Config) {
				c.Listen, c.MaxClients, c.Routes, c.Keepalive = "0.0.0.0:8443", 0, nil, 15*time.Second
			}),
			want: "level=INFO max-clients=1024 routes=[] keepalive=15s laptop=100.64.0.10 routes=[] crl=",
			wantLog: []string{`setting=listen running=0.0.0.0:443 configured=0.0.0.0:8443`,
				`msg="revocation list removed (--crl): revoked client certificates are no longer refused"`},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			before := state()
			logStart := len(logBuf.String())
			next, nextErr = step.next, step.nextErr
			report, err := r.Reload()
			for _, w := range step.wantReport {
				if !slices.Contains(strings.Split(report, "\n"), w) {
					t.Errorf("Reload's report lacks the line %q:\n%s", w, report)
				}
			}
			switch {
			case step.wantErr == "" && err != nil:
				t.Fatalf("Reload: %v", err)
			case step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr) || !errors.Is(err, errReloadRefused)):
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

// TestReloadSettings: with Settings (tunneld's flags by name), a setting
// the server has no field for still counts, as needing a restart.
func TestReloadSettings(t *testing.T) {
	cur := Config{Settings: map[string]string{"log-format": "text", "max-clients": "10"}}
	next := Config{Settings: map[string]string{"log-format": "json", "max-clients": "10"}}
	p := planReload(cur.settings(), next.settings())
	if !slices.Equal(p.restart, []string{"log-format"}) || len(p.live) != 0 {
		t.Errorf("plan = live %v restart %v, want log-format needing a restart", p.live, p.restart)
	}
	// Without Settings, the tagged fields are compared.
	a, b := Config{MaxClients: 10}, Config{MaxClients: 20, TUN: "vpn1"}
	p = planReload(a.settings(), b.settings())
	if !slices.Equal(p.live, []string{"max-clients"}) || !slices.Equal(p.restart, []string{"tun"}) {
		t.Errorf("plan = live %v restart %v, want max-clients live and tun needing a restart", p.live, p.restart)
	}
}
