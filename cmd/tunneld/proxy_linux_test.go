package main

// tunnelc through real proxies: Squid (HTTP CONNECT, Basic auth) and
// microsocks (SOCKS5, user/password), each in a namespace between a
// laptop that can reach only the proxy and the server.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
)

// proxyEnv is the topology laptop - proxy - server: the laptop has only
// its link to the proxy namespace (no route to the server, and the proxy
// namespace does not forward), the proxy has a link to each.
type proxyEnv struct {
	tunneld, tunnelc string
	pki              string
	laptop, px, srv  *netnstest.NS
	proxyIP          string // the proxy's address on the laptop's side
	serverIP         string // the server's address on the proxy's side
	laptopIf         string // the laptop's interface to the proxy, 198.18.0.2/30
}

func newProxyEnv(t *testing.T) *proxyEnv {
	t.Helper()
	e := &proxyEnv{laptop: netnstest.New(t), px: netnstest.New(t), srv: netnstest.New(t),
		proxyIP: "198.18.0.1", serverIP: "198.18.1.2"}
	e.tunneld, e.tunnelc = binaries(t)
	_, e.laptopIf = netnstest.Veth(t, e.px, netip.MustParsePrefix(e.proxyIP+"/30"), e.laptop, netip.MustParsePrefix("198.18.0.2/30"))
	netnstest.Veth(t, e.px, netip.MustParsePrefix("198.18.1.1/30"), e.srv, netip.MustParsePrefix(e.serverIP+"/30"))
	e.pki = filepath.Join(t.TempDir(), "pki")
	run := func(args ...string) {
		if out, err := exec.Command(e.tunneld, args...).CombinedOutput(); err != nil {
			t.Fatalf("tunneld %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("pki", "init", "--dir", e.pki)
	run("pki", "issue", "--dir", e.pki, "--server", "--name", "vpn.test", "--ip", e.serverIP)
	run("pki", "issue", "--dir", e.pki, "--client", "--name", "laptop")
	srv := start(t, e.srv, e.tunneld, "--listen", "0.0.0.0:443",
		"--cert", e.file("vpn.test.crt"), "--key", e.file("vpn.test.key"), "--ca", e.file("ca.crt"),
		"--subnet", "100.64.0.0/24", "--keepalive", "2s", "--state-dir", filepath.Join(t.TempDir(), "state"))
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	// The laptop cannot reach the server but through the proxy.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := e.laptop.Dial(ctx, "tcp", e.serverIP+":443"); err == nil {
		c.Close()
		t.Fatal("the laptop reaches the server directly; the test would prove nothing")
	}
	return e
}

func (e *proxyEnv) file(name string) string { return filepath.Join(e.pki, name) }

// startClient starts tunnelc in the laptop namespace with a control
// socket and the given proxy flags; it returns the process and the socket.
func (e *proxyEnv) startClient(t *testing.T, server string, extra ...string) (*proc, string) {
	t.Helper()
	return e.startClientEnv(t, nil, server, extra...)
}

// startClientEnv is startClient with the variables env (NAME=VALUE) added
// to tunnelc's environment.
func (e *proxyEnv) startClientEnv(t *testing.T, env []string, server string, extra ...string) (*proc, string) {
	t.Helper()
	sock := controlPath(t)
	args := append([]string{"--server", server, "--cert", e.file("laptop.crt"), "--key", e.file("laptop.key"),
		"--ca", e.file("ca.crt"), "--control", sock, "--log-level", "debug"}, extra...)
	return start(t, e.laptop, "env", append(append(env, e.tunnelc), args...)...), sock
}

// proxyDir returns a fresh directory the unprivileged proxy user can use
// (t.TempDir's parents are private to root), removed after the test.
func proxyDir(t *testing.T, owner string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tlsvpn-proxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if owner != "" {
		u, err := user.Lookup(owner)
		if err != nil {
			t.Fatalf("user %s (from the proxy's package): %v", owner, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// waitListening waits until addr accepts TCP connections from ns.
func waitListening(t *testing.T, ns *netnstest.NS, addr string, p *proc) {
	t.Helper()
	eventually(t, "the proxy listening on "+addr, func() bool {
		select {
		case <-p.done:
			t.Fatalf("the proxy exited: %v\n%s", p.err, p.log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		c, err := ns.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// startSquid runs Squid in the proxy namespace on proxyIP:3128, allowing
// CONNECT to port 443 only, for user alice with password, Basic auth
// checked by basic_ncsa_auth. The name vpn.test resolves (in Squid only)
// to the server. It returns the access log's path.
func (e *proxyEnv) startSquid(t *testing.T, password string) string {
	t.Helper()
	dir := proxyDir(t, "proxy")
	hash, err := exec.Command("openssl", "passwd", "-apr1", password).Output()
	if err != nil {
		t.Fatalf("openssl passwd: %v", err)
	}
	files := map[string]string{
		"passwd": "alice:" + strings.TrimSpace(string(hash)) + "\n",
		"hosts":  e.serverIP + " vpn.test\n",
		"squid.conf": fmt.Sprintf(`http_port %[2]s:3128
visible_hostname tlsvpn-test-proxy
pid_filename %[1]s/squid.pid
cache_log %[1]s/cache.log
access_log stdio:%[1]s/access.log
coredump_dir %[1]s
netdb_filename none
pinger_enable off
cache deny all
cache_mem 4 MB
hosts_file %[1]s/hosts
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
auth_param basic program /usr/lib/squid/basic_ncsa_auth %[1]s/passwd
auth_param basic children 2 startup=1 idle=1
auth_param basic realm tlsvpn test
acl SSL_ports port 443
acl CONNECT method CONNECT
acl alice proxy_auth REQUIRED
http_access deny CONNECT !SSL_ports
http_access allow alice
http_access deny all
`, dir, e.proxyIP),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := start(t, e.px, "squid", "-N", "-f", filepath.Join(dir, "squid.conf"))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "cache.log"))
			t.Logf("squid cache.log:\n%s", b)
		}
	})
	waitListening(t, e.laptop, e.proxyIP+":3128", p)
	return filepath.Join(dir, "access.log")
}

// moveBothWays moves 20 MB each way through the tunnel, checking the
// bytes (transfer compares SHA-256 of both ends).
func (e *proxyEnv) moveBothWays(t *testing.T, port int) {
	t.Helper()
	transfer(t, e.laptop, e.srv, "100.64.0.1:"+strconv.Itoa(port), 20<<20)
	transfer(t, e.srv, e.laptop, "100.64.0.2:"+strconv.Itoa(port+1), 20<<20)
}

// TestNetNSProxySquid: through Squid with Basic auth, under --full-tunnel
// --kill-switch: the laptop names the server (vpn.test, which only the
// proxy can resolve), the password comes from a file, 20 MB pass each
// way intact, the kill switch and the bypass route follow the proxy's
// address, and 'tunnelc status' shows the proxy without the password.
func TestNetNSProxySquid(t *testing.T) {
	e := newProxyEnv(t)
	access := e.startSquid(t, "corr3ct-h0rse")
	auth := filepath.Join(t.TempDir(), "proxy-auth")
	if err := os.WriteFile(auth, []byte("alice:corr3ct-h0rse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, sock := e.startClient(t, "vpn.test:443", "--proxy", "http://"+e.proxyIP+":3128", "--proxy-auth-file", auth,
		"--full-tunnel", "--kill-switch")
	eventually(t, "the tunnel address", func() bool { return hasAddr(e.laptop, "tunnelc0", netip.MustParsePrefix("100.64.0.2/24")) })
	e.moveBothWays(t, 5301)

	var st control.ClientStatus
	ctlJSON(t, e.tunnelc, &st, "status", "--control", sock)
	if st.State != "up" || st.Proxy != "http://198.18.0.1:3128" || st.ProxyAddr != "198.18.0.1:3128" || !st.ProxyAuth || st.ServerAddr != "" {
		t.Errorf("status = %+v, want up through http://198.18.0.1:3128 with auth", st)
	}
	human := ctl(t, e.tunnelc, "status", "--control", sock).stdout
	if !strings.Contains(human, "proxy:") || !strings.Contains(human, "http://198.18.0.1:3128, with a user and password") {
		t.Errorf("tunnelc status does not show the proxy:\n%s", human)
	}
	// The kill switch lets out the connection to the proxy, nothing else.
	rules := e.laptop.Run(t, "nft", "list", "table", "inet", "tlsvpn-tunnelc0")
	if !strings.Contains(rules, "198.18.0.1") || strings.Contains(rules, e.serverIP) {
		t.Errorf("the kill switch does not follow the proxy's address:\n%s", rules)
	}
	if out := e.laptop.Run(t, "ip", "route", "get", "198.18.0.1"); strings.Contains(out, "tunnelc0") {
		t.Errorf("the way to the proxy goes into the tunnel: %s", out)
	}
	// Squid logs a CONNECT when it ends.
	c.stop(t)
	eventually(t, "Squid to log the CONNECT to vpn.test:443 as alice", func() bool {
		b, _ := os.ReadFile(access)
		return strings.Contains(string(b), "CONNECT vpn.test:443 alice")
	})
	for _, out := range []string{c.log.String(), human, fmt.Sprint(st)} {
		if strings.Contains(out, "corr3ct-h0rse") {
			t.Errorf("the password shows:\n%s", out)
		}
	}
}

// TestNetNSProxySquidWrongPassword: a password Squid refuses gives an
// error that names the proxy and the 407, in the log and in status, and
// tunnelc does not retry it with the normal backoff.
func TestNetNSProxySquidWrongPassword(t *testing.T) {
	e := newProxyEnv(t)
	access := e.startSquid(t, "corr3ct-h0rse")
	c, sock := e.startClient(t, e.serverIP+":443", "--proxy", "http://alice:wr0ng@"+e.proxyIP+":3128")
	want := "proxy 198.18.0.1:3128 refused CONNECT to " + e.serverIP + ":443: 407 Proxy Authentication Required"
	eventually(t, "tunnelc to report the 407", func() bool { return strings.Contains(c.log.String(), want) })
	if !strings.Contains(c.log.String(), "did not accept the user and password") {
		t.Errorf("no hint about the password in the log:\n%s", c.log)
	}
	if !strings.Contains(c.log.String(), "visible to every user of this host") {
		t.Errorf("no warning about the password on the command line:\n%s", c.log)
	}
	var st control.ClientStatus
	ctlJSON(t, e.tunnelc, &st, "status", "--control", sock)
	if !strings.Contains(st.LastError, want) || st.State == "up" {
		t.Errorf("status = %+v, want the 407 as the last error", st)
	}
	if !st.RetryAt.IsZero() && time.Until(st.RetryAt) < 10*time.Second {
		t.Errorf("next attempt in %v: a refused password is retried slowly", time.Until(st.RetryAt))
	}
	time.Sleep(3 * time.Second) // room for a retry storm to show
	b, _ := os.ReadFile(access)
	if n := strings.Count(string(b), "TCP_DENIED/407"); n != 1 {
		t.Errorf("Squid logged %d refused CONNECTs in 3s, want 1:\n%s", n, b)
	}
	if strings.Contains(c.log.String(), "wr0ng") {
		t.Errorf("the password shows in the log:\n%s", c.log)
	}
}

// TestNetNSProxySOCKS5: through microsocks with user/password auth, from
// the environment (ALL_PROXY, as a shell would set it), 20 MB each way.
func TestNetNSProxySOCKS5(t *testing.T) {
	e := newProxyEnv(t)
	p := start(t, e.px, "microsocks", "-i", e.proxyIP, "-p", "1080", "-u", "bob", "-P", "s0cks-pw")
	waitListening(t, e.laptop, e.proxyIP+":1080", p)
	// As a shell would set it; env(1) passes it to tunnelc only.
	c, sock := e.startClientEnv(t, []string{"ALL_PROXY=socks5://bob:s0cks-pw@" + e.proxyIP + ":1080", "NO_PROXY=example.com"},
		e.serverIP+":443")
	eventually(t, "the tunnel address", func() bool { return hasAddr(e.laptop, "tunnelc0", netip.MustParsePrefix("100.64.0.2/24")) })
	e.moveBothWays(t, 5311)
	var st control.ClientStatus
	ctlJSON(t, e.tunnelc, &st, "status", "--control", sock)
	if st.Proxy != "socks5://198.18.0.1:1080" || !st.ProxyAuth {
		t.Errorf("status = %+v, want through socks5://198.18.0.1:1080", st)
	}
	if !strings.Contains(c.log.String(), "from=ALL_PROXY") || strings.Contains(c.log.String(), "s0cks-pw") {
		t.Errorf("the log does not name ALL_PROXY, or shows the password:\n%s", c.log)
	}

	// The roaming watch follows the local address of the socket to the
	// proxy: its removal replaces the session at once.
	e.laptop.Run(t, "ip", "addr", "del", "198.18.0.2/30", "dev", e.laptopIf)
	eventually(t, "tunnelc to notice its address went", func() bool {
		return strings.Contains(c.log.String(), "local address of the server connection removed; reconnecting")
	})
	e.laptop.Run(t, "ip", "addr", "add", "198.18.0.2/30", "dev", e.laptopIf)
	eventually(t, "tunnelc to reconnect through the proxy", func() bool { return strings.Contains(c.log.String(), "msg=reconnected") })
	transfer(t, e.laptop, e.srv, "100.64.0.1:5313", 1<<20)

	// Where the proxy cannot reach the server, the SOCKS reply is named.
	bad, _ := e.startClient(t, e.serverIP+":444", "--tun", "tunnelc1", "--proxy", "socks5://bob:s0cks-pw@"+e.proxyIP+":1080")
	want := "SOCKS5 proxy 198.18.0.1:1080 refused CONNECT to " + e.serverIP + ":444: connection refused (reply 5)"
	eventually(t, "the SOCKS reply in the log", func() bool { return strings.Contains(bad.log.String(), want) })
}
