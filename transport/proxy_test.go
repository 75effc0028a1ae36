package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseProxy(t *testing.T) {
	tests := []struct {
		raw      string
		want     string // String(), or the error's text
		auth     bool
		user, pw string
		wantErr  bool
	}{
		{raw: "http://198.18.0.9:3128", want: "http://198.18.0.9:3128"},
		{raw: "198.18.0.9:3128", want: "http://198.18.0.9:3128"},
		{raw: "http://alice:s3cret@proxy.example.com:8080/", want: "http://proxy.example.com:8080", auth: true, user: "alice", pw: "s3cret"},
		{raw: "socks5://bob:p%40ss@[2001:db8::1]:1080", want: "socks5://[2001:db8::1]:1080", auth: true, user: "bob", pw: "p@ss"},
		{raw: "SOCKS5H://127.0.0.1:1080", want: "socks5://127.0.0.1:1080"},
		{raw: "http://alice:s3cret@proxy.example.com", wantErr: true},
		{raw: "https://proxy.example.com:443", wantErr: true},
		{raw: "socks4://proxy.example.com:1080", wantErr: true},
		{raw: "http://alice:s3cret@proxy.example.com:99999", wantErr: true},
		{raw: "http://proxy.example.com:3128/path", wantErr: true},
		{raw: "http://alice:s3cret@:3128", wantErr: true},
		{raw: "http://alice:s3cret@proxy.example.com:3128 x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			p, err := ParseProxy(tt.raw)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseProxy(%q) = %v, want an error", tt.raw, p)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("ParseProxy(%q) error %q shows the password", tt.raw, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseProxy(%q): %v", tt.raw, err)
			}
			if p.String() != tt.want || p.HasAuth() != tt.auth || p.user != tt.user || p.password != tt.pw {
				t.Errorf("ParseProxy(%q) = %s auth=%v %q %q, want %s auth=%v %q %q", tt.raw, p, p.HasAuth(), p.user, p.password, tt.want, tt.auth, tt.user, tt.pw)
			}
		})
	}
}

func TestFromEnvironment(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		target string
		want   string // the variable used, "" for none
	}{
		{"none", nil, "vpn.example.com:443", ""},
		{"https", map[string]string{"HTTPS_PROXY": "http://p:3128"}, "vpn.example.com:443", "HTTPS_PROXY"},
		{"lower", map[string]string{"https_proxy": "http://p:3128"}, "vpn.example.com:443", "https_proxy"},
		{"https before all", map[string]string{"ALL_PROXY": "socks5://p:1080", "https_proxy": "http://p:3128"}, "vpn.example.com:443", "https_proxy"},
		{"all", map[string]string{"all_proxy": "socks5://p:1080"}, "vpn.example.com:443", "all_proxy"},
		{"http_proxy is for http", map[string]string{"HTTP_PROXY": "http://p:3128"}, "vpn.example.com:443", ""},
		{"no_proxy domain", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "intranet, example.com"}, "vpn.example.com:443", ""},
		{"no_proxy dot", map[string]string{"HTTPS_PROXY": "http://p:3128", "no_proxy": ".example.com"}, "example.com:443", ""},
		{"no_proxy other domain", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "ample.com"}, "vpn.example.com:443", "HTTPS_PROXY"},
		{"no_proxy cidr", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "198.18.0.0/15"}, "198.18.1.1:443", ""},
		{"no_proxy cidr other", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "198.18.0.0/16"}, "198.19.1.1:443", "HTTPS_PROXY"},
		{"no_proxy ip6", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "[2001:db8::1]"}, "[2001:db8::1]:443", ""},
		{"no_proxy port", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "vpn.example.com:8443"}, "vpn.example.com:443", "HTTPS_PROXY"},
		{"no_proxy port match", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "vpn.example.com:443"}, "vpn.example.com:443", ""},
		{"no_proxy star", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, "vpn.example.com:443", ""},
		{"loopback", map[string]string{"HTTPS_PROXY": "http://p:3128"}, "127.0.0.1:443", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, name, err := FromEnvironment(func(k string) string { return tt.env[k] }, tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if name != tt.want || (name != "" && raw != tt.env[name]) {
				t.Errorf("FromEnvironment(%v, %s) = %q from %q, want %q", tt.env, tt.target, raw, name, tt.want)
			}
		})
	}
}

// target is a TCP server that speaks first ("hello from the target\n")
// and then echoes, so a test sees whether the handshake read past the
// proxy's answer.
func target(t *testing.T) string {
	t.Helper()
	return fakeProxy(t, func(c net.Conn) {
		io.WriteString(c, "hello from the target\n")
		io.Copy(c, c)
	})
}

// fakeProxy serves each connection with handle on a loopback listener
// and closes it when handle returns.
func fakeProxy(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// relay connects c to addr both ways until either side ends, then
// closes both.
func relay(c net.Conn, addr string) {
	u, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		io.Copy(u, c)
		u.Close()
	}()
	io.Copy(c, u)
}

// httpProxy is a fake HTTP proxy: it checks the CONNECT request against
// user:password ("" for none), answers with status (and its head lines),
// and on 200 relays to the requested target. got receives the request's
// head.
func httpProxy(t *testing.T, creds string, got chan<- string, refuse string) string {
	return fakeProxy(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		if got != nil {
			got <- head.String()
		}
		reqLine, _, _ := strings.Cut(head.String(), "\r\n")
		f := strings.Fields(reqLine)
		if len(f) != 3 || f[0] != "CONNECT" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
			return
		}
		if refuse != "" {
			io.WriteString(c, refuse)
			return
		}
		if creds != "" && !strings.Contains(head.String(), "\r\nProxy-Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte(creds))+"\r\n") {
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 5\r\n\r\ndeny\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		relay(c, f[1])
	})
}

// checkTunnel reads the target's greeting through conn and an echo, and
// that conn is still the plain TCP connection.
func checkTunnel(t *testing.T, conn net.Conn) {
	t.Helper()
	if _, ok := conn.(*net.TCPConn); !ok {
		t.Errorf("the connection is a %T, want the *net.TCPConn to the proxy", conn)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	want := "hello from the target\nping\n"
	io.WriteString(conn, "ping\n")
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
		t.Fatalf("through the proxy: read %q, %v; want %q", got, err, want)
	}
}

func dialThrough(t *testing.T, rawURL, target string) (net.Conn, error) {
	t.Helper()
	p, err := ParseProxy(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &Dialer{Proxy: p}
	return d.DialContext(ctx, "tcp", target)
}

func TestHTTPConnect(t *testing.T) {
	dst := target(t)
	got := make(chan string, 1)
	addr := httpProxy(t, "alice:s3cret", got, "")
	conn, err := dialThrough(t, "http://alice:s3cret@"+addr, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := <-got
	if !strings.HasPrefix(head, "CONNECT "+dst+" HTTP/1.1\r\nHost: "+dst+"\r\n") {
		t.Errorf("request head %q, want CONNECT %s with Host", head, dst)
	}
	checkTunnel(t, conn)
}

func TestHTTPConnectSendsTheName(t *testing.T) {
	got := make(chan string, 1)
	addr := httpProxy(t, "", got, "HTTP/1.1 503 Service Unavailable\r\n\r\n")
	_, err := dialThrough(t, "http://"+addr, "vpn.example.com:443")
	if head := <-got; !strings.HasPrefix(head, "CONNECT vpn.example.com:443 HTTP/1.1\r\n") {
		t.Errorf("request head %q, want the name for the proxy to resolve", head)
	}
	var pe *ProxyError
	if !errors.As(err, &pe) || pe.Code != 503 || pe.Permanent() {
		t.Errorf("503: got %v, want a transient *ProxyError with code 503", err)
	}
}

func TestHTTPConnectRefused(t *testing.T) {
	dst := target(t)
	tests := []struct {
		name, url  string // url: %s is the proxy's address
		refuse     string // the proxy's answer instead of checking credentials
		want       string // the error, %s the proxy's address
		hint       string // in Hint()
		permanent  bool
		wantAuthed bool
	}{
		{name: "wrong password", url: "http://alice:wrong@%s",
			want: "proxy %s refused CONNECT to " + dst + ": 407 Proxy Authentication Required",
			hint: "did not accept the user and password", permanent: true, wantAuthed: true},
		{name: "no password", url: "http://%s",
			want: "proxy %s refused CONNECT to " + dst + ": 407 Proxy Authentication Required",
			hint: "--proxy-auth-file", permanent: true, wantAuthed: true},
		{name: "ntlm only", url: "http://alice:wrong@%s",
			refuse: "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\n\r\n",
			want:   "proxy %s refused CONNECT to " + dst + ": 407 Proxy Authentication Required",
			hint:   `the proxy asks for NTLM: write the user as DOMAIN\USER`, permanent: true, wantAuthed: true},
		{name: "kerberos only", url: "http://alice:wrong@%s",
			refuse: "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Negotiate\r\n\r\n",
			want:   "proxy %s refused CONNECT to " + dst + ": 407 Proxy Authentication Required",
			hint:   "the proxy asks for Negotiate; tunnelc authenticates with Basic, or NTLM", permanent: true, wantAuthed: true},
		{name: "forbidden port", url: "http://alice:s3cret@%s", refuse: "HTTP/1.0 403 Forbidden\r\nServer: squid\r\n\r\n",
			want: "proxy %s refused CONNECT to " + dst + ": 403 Forbidden", hint: "port", permanent: true},
		{name: "bad gateway", url: "http://alice:s3cret@%s", refuse: "HTTP/1.1 502 Bad Gateway\r\n\r\n",
			want: "proxy %s refused CONNECT to " + dst + ": 502 Bad Gateway", hint: "could not reach"},
		{name: "echoes the password", url: "http://alice:s3cret@%s", refuse: "HTTP/1.1 400 bad user alice:s3cret\r\n\r\n",
			want: "proxy %s refused CONNECT to " + dst + ": 400 bad user alice:***", permanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := httpProxy(t, "alice:s3cret", nil, tt.refuse)
			conn, err := dialThrough(t, strings.Replace(tt.url, "%s", addr, 1), dst)
			if err == nil {
				conn.Close()
				t.Fatal("connected; want a refusal")
			}
			var pe *ProxyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want a *ProxyError", err, err)
			}
			if want := strings.Replace(tt.want, "%s", addr, 1); err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			if !strings.Contains(pe.Hint(), tt.hint) || pe.Permanent() != tt.permanent || pe.Auth != tt.wantAuthed {
				t.Errorf("hint %q permanent %v auth %v, want hint with %q, permanent %v, auth %v", pe.Hint(), pe.Permanent(), pe.Auth, tt.hint, tt.permanent, tt.wantAuthed)
			}
			if strings.Contains(err.Error()+pe.Hint(), "s3cret") || strings.Contains(err.Error(), "wrong") {
				t.Errorf("the error shows the password: %q", err)
			}
		})
	}
}

func TestHTTPConnectNotAnHTTPProxy(t *testing.T) {
	addr := fakeProxy(t, func(c net.Conn) { c.Write([]byte{5, 0xff}); io.Copy(io.Discard, c) })
	_, err := dialThrough(t, "http://"+addr, "198.18.1.1:443")
	if err == nil || !strings.Contains(err.Error(), "proxy "+addr) || !strings.Contains(err.Error(), "closed the connection") && !strings.Contains(err.Error(), "not an HTTP answer") {
		t.Errorf("error %v, want one naming the proxy and what it sent", err)
	}
}

func TestHandshakeTimesOut(t *testing.T) {
	addr := fakeProxy(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // never answers
	for _, scheme := range []string{"http", "socks5"} {
		p, _ := ParseProxy(scheme + "://" + addr)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, err := (&Dialer{Proxy: p}).DialContext(ctx, "tcp", "198.18.1.1:443")
		cancel()
		if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), addr) {
			t.Errorf("%s: error %v, want a timeout naming the proxy", scheme, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: gave up after %v, want about the context's 200ms", scheme, d)
		}
	}
}

// socksProxy is a fake SOCKS5 server: with creds ("user:password") it
// insists on RFC 1929 and checks them; it answers CONNECT with reply
// (0: success, relaying to the target) and reports the requested target
// (as the proxy would resolve it: "name:port" or "addr:port") on got.
func socksProxy(t *testing.T, creds string, reply byte, got chan<- string) string {
	return fakeProxy(t, func(c net.Conn) {
		var h [2]byte
		if _, err := io.ReadFull(c, h[:]); err != nil || h[0] != 5 {
			return
		}
		methods := make([]byte, h[1])
		if _, err := io.ReadFull(c, methods); err != nil {
			return
		}
		want := byte(socksAuthNone)
		if creds != "" {
			want = socksAuthPassword
		}
		if !bytes.Contains(methods, []byte{want}) {
			c.Write([]byte{5, 0xff})
			return
		}
		c.Write([]byte{5, want})
		if creds != "" {
			var v [2]byte
			io.ReadFull(c, v[:])
			u := make([]byte, v[1])
			io.ReadFull(c, u)
			io.ReadFull(c, v[:1])
			pw := make([]byte, v[0])
			io.ReadFull(c, pw)
			if string(u)+":"+string(pw) != creds {
				c.Write([]byte{1, 1})
				return
			}
			c.Write([]byte{1, 0})
		}
		var req [4]byte
		if _, err := io.ReadFull(c, req[:]); err != nil || req[1] != socksCmdConnect {
			return
		}
		var host string
		switch req[3] {
		case socksAtypIPv4, socksAtypIPv6:
			b := make([]byte, 4)
			if req[3] == socksAtypIPv6 {
				b = make([]byte, 16)
			}
			io.ReadFull(c, b)
			host = net.IP(b).String()
		case socksAtypDomain:
			var l [1]byte
			io.ReadFull(c, l[:])
			b := make([]byte, l[0])
			io.ReadFull(c, b)
			host = string(b)
		}
		var pb [2]byte
		io.ReadFull(c, pb[:])
		dst := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(pb[:]))))
		if got != nil {
			got <- dst
		}
		// Bound address as a domain name, to exercise its length prefix.
		c.Write(append([]byte{5, reply, 0, socksAtypDomain, 9}, "localhost\x01\xbb"...))
		if reply == 0 {
			relay(c, dst)
		}
	})
}

func TestSOCKS5(t *testing.T) {
	dst := target(t)
	for _, creds := range []string{"", "alice:s3cret"} {
		got := make(chan string, 1)
		addr := socksProxy(t, creds, 0, got)
		u := "socks5://" + addr
		if creds != "" {
			u = "socks5://" + creds + "@" + addr
		}
		conn, err := dialThrough(t, u, dst)
		if err != nil {
			t.Fatalf("creds %q: %v", creds, err)
		}
		if g := <-got; g != dst {
			t.Errorf("the proxy was asked for %s, want %s", g, dst)
		}
		checkTunnel(t, conn)
		conn.Close()
	}
}

func TestSOCKS5SendsTheName(t *testing.T) {
	for _, target := range []string{"vpn.example.com:443", "[2001:db8::1]:443", "198.18.1.1:443"} {
		got := make(chan string, 1)
		addr := socksProxy(t, "", 4, got)
		_, err := dialThrough(t, "socks5h://"+addr, target)
		if g := <-got; g != target {
			t.Errorf("the proxy was asked for %s, want %s", g, target)
		}
		want := "SOCKS5 proxy " + addr + " refused CONNECT to " + target + ": host unreachable (reply 4)"
		var pe *ProxyError
		if !errors.As(err, &pe) || err.Error() != want || pe.Permanent() {
			t.Errorf("error %v, want a transient %q", err, want)
		}
	}
}

func TestSOCKS5Refused(t *testing.T) {
	dst := "198.18.1.1:443"
	tests := []struct {
		name, creds, url string // url: %s is the proxy's address
		reply            byte
		want             string
		permanent        bool
	}{
		{"wrong password", "alice:s3cret", "socks5://alice:wrong@%s", 0, "SOCKS5 proxy %s refused CONNECT to 198.18.1.1:443: user and password refused (status 1)", true},
		{"no password", "alice:s3cret", "socks5://%s", 0, "SOCKS5 proxy %s refused CONNECT to 198.18.1.1:443: no acceptable authentication method", true},
		{"ruleset", "", "socks5://%s", 2, "SOCKS5 proxy %s refused CONNECT to 198.18.1.1:443: connection not allowed by ruleset (reply 2)", true},
		{"refused", "", "socks5://%s", 5, "SOCKS5 proxy %s refused CONNECT to 198.18.1.1:443: connection refused (reply 5)", false},
		{"unknown", "", "socks5://%s", 42, "SOCKS5 proxy %s refused CONNECT to 198.18.1.1:443: unknown reply 42", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := socksProxy(t, tt.creds, tt.reply, nil)
			_, err := dialThrough(t, strings.Replace(tt.url, "%s", addr, 1), dst)
			var pe *ProxyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want a *ProxyError", err, err)
			}
			if want := strings.Replace(tt.want, "%s", addr, 1); err.Error() != want || pe.Permanent() != tt.permanent {
				t.Errorf("error %q permanent %v, want %q permanent %v", err, pe.Permanent(), want, tt.permanent)
			}
		})
	}
}

func TestSOCKS5NotASOCKSProxy(t *testing.T) {
	addr := fakeProxy(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
	})
	_, err := dialThrough(t, "socks5://"+addr, "198.18.1.1:443")
	if err == nil || !strings.Contains(err.Error(), "not a SOCKS5 proxy") {
		t.Errorf("error %v, want 'not a SOCKS5 proxy'", err)
	}
}

func TestReadResponseHeadStopsAtTheEnd(t *testing.T) {
	for _, head := range []string{
		"HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\nVia: 1.1 a\r\n\r\n",
		"HTTP/1.0 200 \r\n\r\n",
	} {
		r := strings.NewReader(head + "\x16\x03\x03rest")
		got, err := readResponseHead(r)
		if err != nil || string(got) != head {
			t.Errorf("readResponseHead(%q) = %q, %v", head, got, err)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "\x16\x03\x03rest" {
			t.Errorf("after %q, %q was left, want the bytes after the head", head, rest)
		}
	}
}

// FuzzReadResponseHead: whatever a proxy sends, the reader never takes
// a byte past the head's end, and the parser never panics and accepts
// only a well-formed status line.
func FuzzReadResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 Connection established\r\n\r\n"), []byte("\x16\x03"))
	f.Add([]byte("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\nProxy-Authenticate: NTLM\r\n\r\n"), []byte("<html>"))
	f.Add([]byte("HTTP/1.0 403 Forbidden\r\nServer: squid\r\n\r\n"), []byte{})
	f.Add([]byte("HTTP/1.1 200\r\n\r\r\n\r\n"), []byte("\r\n"))
	f.Add([]byte{5, 0xff}, []byte{})
	f.Add([]byte("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM TlRMTVNTUAACAAAA\r\nContent-Length: 3\r\nProxy-Connection: keep-alive\r\n\r\n"), []byte("abc"))
	f.Fuzz(func(t *testing.T, sent, after []byte) {
		r := bytes.NewReader(append(append([]byte{}, sent...), after...))
		head, err := readResponseHead(r)
		if err != nil {
			return
		}
		i := bytes.Index(append(append([]byte{}, sent...), after...), []byte("\r\n\r\n"))
		if i < 0 || len(head) != i+4 {
			t.Fatalf("readResponseHead took %d bytes, want up to the first CRLF CRLF at %d", len(head), i)
		}
		if r.Len() != len(sent)+len(after)-len(head) {
			t.Fatalf("readResponseHead read past the head: %d left, want %d", r.Len(), len(sent)+len(after)-len(head))
		}
		resp, err := parseResponseHead(head)
		if err != nil {
			return
		}
		if resp.code < 100 || resp.code > 999 || strings.ContainsAny(resp.reason, "\r\n") {
			t.Fatalf("parseResponseHead(%q) = %+v", head, resp)
		}
		again, err := parseResponseHead([]byte(resp.proto + " " + strconv.Itoa(resp.code) + " " + resp.reason + "\r\n\r\n"))
		if err != nil || again.code != resp.code || again.reason != resp.reason {
			t.Fatalf("status line of %q does not round-trip: %+v, %v", head, again, err)
		}
	})
}

// FuzzSOCKS5Handshake feeds arbitrary proxy answers to the SOCKS5 client:
// it must never panic, hang or read past what it needs.
func FuzzSOCKS5Handshake(f *testing.F) {
	ok := []byte{5, 2, 1, 0, 5, 0, 0, 1, 198, 18, 0, 9, 0x04, 0x38}
	f.Add(ok, true)
	f.Add([]byte{5, 0, 5, 0, 0, 3, 3, 'a', 'b', 'c', 1, 1}, false)
	f.Add([]byte{5, 0, 5, 5, 0, 9}, false)
	f.Add([]byte{5, 0xff}, true)
	f.Add([]byte{5, 2, 1, 1}, true)
	f.Fuzz(func(t *testing.T, answers []byte, auth bool) {
		u := "socks5://198.18.0.9:1080"
		if auth {
			u = "socks5://alice:s3cret@198.18.0.9:1080"
		}
		p, err := ParseProxy(u)
		if err != nil {
			t.Fatal(err)
		}
		r := bytes.NewReader(answers)
		err = p.socks5(&scriptConn{r: r}, "vpn.example.com", 443)
		if err != nil {
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the password: %v", err)
			}
			return
		}
		// A success consumed exactly the method choice, the password
		// status if asked, and the reply with its bound address.
		want := 2
		if answers[1] == socksAuthPassword {
			want += 2
		}
		switch answers[want+3] {
		case socksAtypIPv4:
			want += 4 + 4 + 2
		case socksAtypIPv6:
			want += 4 + 16 + 2
		case socksAtypDomain:
			want += 4 + 1 + int(answers[want+4]) + 2
		}
		if used := len(answers) - r.Len(); used != want {
			t.Fatalf("socks5 handshake on %x read %d bytes, want %d", answers, used, want)
		}
	})
}

// scriptConn is a net.Conn that reads from r and discards writes.
type scriptConn struct {
	net.Conn
	r io.Reader
}

func (c *scriptConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error) { return len(b), nil }
