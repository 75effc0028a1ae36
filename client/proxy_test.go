package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tlsvpn/internal/service"
	"tlsvpn/transport"
)

func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewProxyRefuses(t *testing.T) {
	good := testConfig(t)
	auth := writeFile(t, "proxy-auth", "alice:s3cret\n", 0o600)
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad url from the environment", func(c *Config) { c.Proxy, c.ProxyFrom = "ftp://alice:s3cret@p:21", "HTTPS_PROXY" },
			`HTTPS_PROXY: proxy ftp://alice:xxxxx@p:21: scheme "ftp" not supported: want http:// or socks5://`},
		{"no port", func(c *Config) { c.Proxy = "http://p.example.com" },
			"--proxy: proxy http://p.example.com: no port: want scheme://host:port, e.g. http://proxy.example.com:3128"},
		{"credentials twice", func(c *Config) { c.Proxy, c.ProxyAuthFile = "http://bob:pw@p:3128", auth },
			"the proxy's user and password are given twice: in --proxy and in --proxy-auth-file " + auth + "; keep the file"},
		{"auth file without a proxy", func(c *Config) { c.ProxyAuthFile = auth },
			"--proxy-auth-file needs a proxy: --proxy URL, or HTTPS_PROXY or ALL_PROXY in the environment"},
		{"auth file missing", func(c *Config) { c.Proxy, c.ProxyAuthFile = "http://p:3128", auth+".missing" },
			"--proxy-auth-file: open " + auth + ".missing: no such file or directory"},
		{"full tunnel through a local proxy", func(c *Config) { c.Proxy, c.FullTunnel = "socks5://127.0.0.1:1080", true },
			"--full-tunnel with the proxy socks5://127.0.0.1:1080 on this host"},
		{"auth file without a colon", func(c *Config) {
			c.Proxy, c.ProxyAuthFile = "http://p:3128", writeFile(t, "bad", "s3cret\n", 0o600)
		}, "want USER:PASSWORD on the first line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			_, err := New(cfg, nil)
			var ue *service.UsageError
			if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want a usage error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("New's error shows the password: %v", err)
			}
		})
	}
}

func TestReadProxyAuth(t *testing.T) {
	for _, tt := range []struct{ content, user, password string }{
		{"alice:s3cret\n", "alice", "s3cret"},
		{"alice:pa:ss\r\nignored\n", "alice", "pa:ss"},
		{`DOMAIN\bob:`, `DOMAIN\bob`, ""},
	} {
		u, p, err := ReadProxyAuth(writeFile(t, "a", tt.content, 0o600))
		if err != nil || u != tt.user || p != tt.password {
			t.Errorf("ReadProxyAuth(%q) = %q, %q, %v; want %q, %q", tt.content, u, p, err, tt.user, tt.password)
		}
	}
}

// TestNewProxyAuthFileWarnsAboutItsMode: a password file others can read
// gets the same warning as a private key; its content is never logged.
func TestNewProxyAuthFileWarnsAboutItsMode(t *testing.T) {
	cfg := testConfig(t)
	cfg.Proxy, cfg.ProxyAuthFile = "socks5://198.18.0.9:1080", writeFile(t, "proxy-auth", "alice:s3cret\n", 0o644)
	var logs bytes.Buffer
	c, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(logs.String(), "has mode 0644, so its group or others can read it: run chmod 600") {
		t.Errorf("no warning about the mode:\n%s", &logs)
	}
	st := c.Status()
	if st.Proxy != "socks5://198.18.0.9:1080" || !st.ProxyAuth {
		t.Errorf("status proxy %q auth %v, want socks5://198.18.0.9:1080 with auth", st.Proxy, st.ProxyAuth)
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(st.Proxy, "alice") {
		t.Errorf("the credentials show: log %q, status %q", &logs, st.Proxy)
	}
}

// TestServerDialerThroughProxy: with a proxy, each server is dialed
// through it: the proxy gets the server's NAME (nothing but the proxy's
// name is resolved here), a server the proxy cannot reach is passed over
// for the next, the connection returned is the plain TCP one, and the
// address the bypass route and kill switch follow (the before hook,
// lastAddr) is the proxy's.
func TestServerDialerThroughProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	asked := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				asked <- line
				if line != "CONNECT vpn.test:443 HTTP/1.1\r\n" {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nserver speaks")
				io.Copy(io.Discard, c)
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	// The second server's port as a service name; neither name resolves here.
	sd, log := testServers(t, nil, "down.test:443", "vpn.test:https")
	pd, err := newProxyDialer("http://proxy.test:"+itoa(port), "--proxy", "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// As with a kill switch: the proxy's name resolved once, at start,
	// and its address pinned.
	pd.lookup = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if host != "proxy.test" {
			t.Errorf("resolved %q here, want only the proxy's name", host)
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	addrs, err := pd.resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pd.pin(addrs)
	proxyAddr := netip.MustParseAddrPort("127.0.0.1:" + itoa(port))
	var before []netip.AddrPort
	sd.before = func(_ context.Context, a netip.AddrPort) error { before = append(before, a); return nil }
	sd.through, sd.proxyName = pd.dial, pd.proxy.String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := sd.Dial(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*net.TCPConn); !ok {
		t.Errorf("Dial returned a %T, want the *net.TCPConn to the proxy", conn)
	}
	b := make([]byte, len("server speaks"))
	if _, err := io.ReadFull(conn, b); err != nil || string(b) != "server speaks" {
		t.Errorf("after the handshake: %q, %v", b, err)
	}
	if sd.lastAddr() != proxyAddr || sd.current() != "vpn.test:https" || sd.serverName() != "vpn.test" {
		t.Errorf("lastAddr %v current %q name %q, want the proxy's %v and vpn.test:https", sd.lastAddr(), sd.current(), sd.serverName(), proxyAddr)
	}
	for _, a := range before {
		if a != proxyAddr {
			t.Errorf("the before hook saw %v, want only the proxy's %v", a, proxyAddr)
		}
	}
	if len(before) == 0 || len(before) != len(asked) {
		t.Errorf("before ran %d times for %d connections to the proxy", len(before), len(asked))
	}
	wantLines(t, log.String(), `msg="connecting to the server through the proxy" server=vpn.test:https proxy=http://proxy.test:`+itoa(port))
}

// TestProxyDialerRefusalIsPermanent: a proxy's 407 reaches the tunnel's
// retry logic as a *transport.ProxyError it retries slowly.
func TestProxyDialerRefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n")
			c.Close()
		}
	}()
	pd, err := newProxyDialer("http://alice:wrong@"+ln.Addr().String(), "--proxy", "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, err = pd.dial(context.Background(), "198.18.1.1:443", nil)
	var pe *transport.ProxyError
	want := "proxy " + ln.Addr().String() + " refused CONNECT to 198.18.1.1:443: 407 Proxy Authentication Required"
	if !errors.As(err, &pe) || err.Error() != want || !pe.Permanent() {
		t.Errorf("dial: %v, want a permanent %q", err, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
