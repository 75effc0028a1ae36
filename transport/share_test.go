package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"tlsvpn/certs/certstest"
)

const testALPN = "tlsvpn/1"

// readProxyHeader reads a PROXY v2 header as a backend would: the
// addresses of a PROXY command, zero ones for LOCAL.
func readProxyHeader(r io.Reader) (src, dst netip.AddrPort, err error) {
	var h [16]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	if !bytes.Equal(h[:12], proxySignature[:]) {
		return src, dst, fmt.Errorf("no PROXY v2 signature: %x", h[:12])
	}
	body := make([]byte, binary.BigEndian.Uint16(h[14:]))
	if _, err = io.ReadFull(r, body); err != nil {
		return
	}
	switch {
	case h[12] == proxyV2Local:
		return
	case h[12] == proxyV2Proxy && h[13] == proxyTCP4 && len(body) == 12:
		src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:]))
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:]))
	case h[12] == proxyV2Proxy && h[13] == proxyTCP6 && len(body) == 36:
		src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:]))
		dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:]))
	default:
		err = fmt.Errorf("unexpected PROXY header %x %x", h[12:], body)
	}
	return
}

func TestAppendProxyHeader(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name               string
		src, dst           netip.AddrPort
		wantSrc, wantDst   netip.AddrPort
		wantFamily, length byte
	}{
		{"IPv4", ap("198.18.0.2:40000"), ap("198.18.0.1:443"), ap("198.18.0.2:40000"), ap("198.18.0.1:443"), proxyTCP4, 12},
		{"IPv6", ap("[2001:db8::2]:40000"), ap("[2001:db8::1]:443"), ap("[2001:db8::2]:40000"), ap("[2001:db8::1]:443"), proxyTCP6, 36},
		{"mapped IPv4", ap("[::ffff:198.18.0.2]:1"), ap("[::ffff:198.18.0.1]:443"), ap("198.18.0.2:1"), ap("198.18.0.1:443"), proxyTCP4, 12},
		{"mixed", ap("198.18.0.2:1"), ap("[2001:db8::1]:443"), ap("[::ffff:198.18.0.2]:1"), ap("[2001:db8::1]:443"), proxyTCP6, 36},
		{"unknown", netip.AddrPort{}, ap("198.18.0.1:443"), netip.AddrPort{}, netip.AddrPort{}, 0, 0},
	} {
		b := AppendProxyHeader([]byte("x"), tc.src, tc.dst)
		if b[0] != 'x' || len(b) != 1+16+int(tc.length) || b[14] != tc.wantFamily || b[16] != tc.length {
			t.Errorf("%s: AppendProxyHeader = %x", tc.name, b)
			continue
		}
		src, dst, err := readProxyHeader(bytes.NewReader(b[1:]))
		if err != nil || src != tc.wantSrc || dst != tc.wantDst {
			t.Errorf("%s: header %x reads as %v -> %v, %v; want %v -> %v", tc.name, b[1:], src, dst, err, tc.wantSrc, tc.wantDst)
		}
	}
}

// shareEnv is a ShareListener on loopback TCP with a VPN server behind
// Accept and a web server as backend, each with a certificate of its
// own name.
type shareEnv struct {
	ln      *ShareListener
	addr    string
	vpn     chan net.Conn       // what Accept returned
	proxied chan netip.AddrPort // the client address of each relayed connection
	held    chan net.Conn       // backend connections that sent nothing after the header
	web     *tls.Config         // the backend's
	stats   *ShareStats
}

func newShareEnv(t *testing.T, cfg ShareConfig) *shareEnv {
	t.Helper()
	ca := certstest.NewCA(t)
	vpnCfg := &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, "vpn")}, NextProtos: []string{testALPN}}
	e := &shareEnv{vpn: make(chan net.Conn, 16), proxied: make(chan netip.AddrPort, 64), held: make(chan net.Conn, 64),
		web: &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, "web")}, NextProtos: []string{"h2", "http/1.1"}}}
	// Cleanups run last first: the goroutines are waited for after
	// everything they block on is closed.
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() {
		for {
			select {
			case c := <-e.held:
				c.Close()
			default:
				return
			}
		}
	})
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.serveWeb(c)
			}()
		}
	}()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ALPN, cfg.Backend, cfg.ProxyProtocol = testALPN, backend.Addr().String(), true
	if e.ln, err = NewShareListener(inner, cfg); err != nil {
		t.Fatal(err)
	}
	e.stats = e.ln.Stats()
	e.addr = e.ln.Addr().String()
	t.Cleanup(func() { e.ln.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := e.ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			e.vpn <- c
			wg.Add(1)
			go func() { // the VPN: TLS, then echo
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, vpnCfg)
				if tc.Handshake() == nil {
					io.Copy(tc, tc)
				}
			}()
		}
	}()
	return e
}

// serveWeb is the backend: the PROXY header, then TLS (echo) or a plain
// HTTP error; a connection that sends nothing is held for the test.
func (e *shareEnv) serveWeb(c net.Conn) {
	src, _, err := readProxyHeader(c)
	if err != nil {
		c.Close()
		return
	}
	e.proxied <- src
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	first, err := br.Peek(1)
	c.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, io.EOF):
		c.Close()
	case err != nil:
		e.held <- c // silent: the test decides
	case first[0] == recordTypeHandshake:
		tc := tls.Server(&bufConn{c, br}, e.web)
		if tc.Handshake() == nil {
			io.Copy(tc, tc)
		}
		c.Close()
	default:
		br.ReadString('\n')
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		c.Close()
	}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialTLS connects with protos as ALPN and returns the server
// certificate's name after an echo round trip.
func dialTLS(t *testing.T, addr string, local net.Addr, protos ...string) string {
	t.Helper()
	d := &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: protos})
	if err != nil {
		t.Fatalf("TLS with ALPN %v: %v", protos, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the connection with ALPN %v: %q, %v", protos, buf, err)
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestShareRoutesByALPN(t *testing.T) {
	e := newShareEnv(t, ShareConfig{})
	if name := dialTLS(t, e.addr, nil, testALPN); name != "vpn" {
		t.Errorf("a client offering %s reached %q, want the VPN", testALPN, name)
	}
	c := <-e.vpn
	sc, ok := c.(*SharedConn)
	if !ok {
		t.Fatalf("Accept returned a %T", c)
	}
	// What tunneld does to the socket (TuneTCP, the record layer's
	// direct writes, closeDraining) must reach the TCP connection.
	if _, ok := sc.NetConn().(*net.TCPConn); !ok {
		t.Errorf("NetConn() is a %T, want *net.TCPConn", sc.NetConn())
	}
	var _ syscall.Conn = sc
	if raw, err := sc.SyscallConn(); err != nil || raw == nil {
		t.Errorf("SyscallConn() = %v, %v", raw, err)
	}

	for _, protos := range [][]string{{"h2", "http/1.1"}, nil} {
		if name := dialTLS(t, e.addr, nil, protos...); name != "web" {
			t.Errorf("a client offering %v reached %q, want the web server", protos, name)
		}
		if src := <-e.proxied; !src.Addr().IsLoopback() || src.Port() == 0 {
			t.Errorf("PROXY header names %v as the client", src)
		}
	}

	plain, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	answer, _ := io.ReadAll(plain)
	plain.Close()
	if !bytes.HasPrefix(answer, []byte("HTTP/1.1 400")) {
		t.Errorf("plain HTTP to the shared port got %q, want the web server's answer", answer)
	}
	<-e.proxied

	for name, got := range map[string]uint64{"Tunnel": e.stats.Tunnel.Load(), "Relayed": e.stats.Relayed.Load(),
		"OtherTLS": e.stats.OtherTLS.Load(), "NotTLS": e.stats.NotTLS.Load()} {
		want := map[string]uint64{"Tunnel": 1, "Relayed": 3, "OtherTLS": 2, "NotTLS": 1}[name]
		if got != want {
			t.Errorf("stats %s = %d, want %d", name, got, want)
		}
	}
}

// silentConn opens a connection from local (nil: any) that sends
// nothing, and returns it with its port.
func silentConn(t *testing.T, addr string, local string) (net.Conn, uint16) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, addrPort(c.LocalAddr()).Port()
}

// waitFor polls cond (the listener's goroutines run on their own).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestSharePeekBounds(t *testing.T) {
	// Peek timeout of a minute: only eviction ends a wait here.
	e := newShareEnv(t, ShareConfig{MaxPeeking: 3, MaxPeekingPerSource: 2, PeekTimeout: time.Minute})
	_, p1 := silentConn(t, e.addr, "127.0.0.1")
	_, p2 := silentConn(t, e.addr, "127.0.0.1")
	waitFor(t, "two connections waiting", func() bool { return e.stats.Peeking.Load() == 2 })
	// A third from the same source evicts its oldest, which goes to
	// the backend.
	silentConn(t, e.addr, "127.0.0.1")
	if src := <-e.proxied; src.Port() != p1 {
		t.Errorf("evicted the connection from port %d, want the oldest (%d)", src.Port(), p1)
	}
	if got := e.stats.Evicted.Load(); got != 1 {
		t.Errorf("Evicted = %d, want 1", got)
	}
	// Another source: the total bound (3) evicts the oldest of all.
	if _, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		t.Skipf("no second loopback address for another source: %v", err)
	}
	silentConn(t, e.addr, "127.0.0.2")
	waitFor(t, "three connections waiting", func() bool { return e.stats.Peeking.Load() == 3 })
	silentConn(t, e.addr, "127.0.0.3")
	if src := <-e.proxied; src.Port() != p2 {
		t.Errorf("evicted the connection from port %d, want the oldest of all (%d)", src.Port(), p2)
	}
	// A VPN client still gets in: its connection, the newest, evicts
	// the oldest waiting one in turn.
	if name := dialTLS(t, e.addr, &net.TCPAddr{IP: net.ParseIP("127.0.0.4")}, testALPN); name != "vpn" {
		t.Errorf("VPN client reached %q", name)
	}
	if got := e.stats.Evicted.Load(); got != 3 {
		t.Errorf("Evicted = %d, want 3", got)
	}
}

func TestShareRelayCap(t *testing.T) {
	e := newShareEnv(t, ShareConfig{MaxRelays: 1, PeekTimeout: time.Minute})
	// A plain-text client whose relay stays open (the backend holds it).
	first, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	io.WriteString(first, "X")
	<-e.proxied
	waitFor(t, "one relay", func() bool { return e.stats.Relaying.Load() == 1 })
	second, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	io.WriteString(second, "Y")
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a relay beyond the cap: read %d, %v; want it closed", n, err)
	}
	if got := e.stats.RefusedRelays.Load(); got != 1 {
		t.Errorf("RefusedRelays = %d, want 1", got)
	}
	// The VPN's connections do not count against the relays.
	if name := dialTLS(t, e.addr, nil, testALPN); name != "vpn" {
		t.Errorf("VPN client reached %q", name)
	}
	// Close ends the open relay too.
	e.ln.Close()
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(first); err != nil {
		t.Errorf("relay after Close: %v, want EOF", err)
	}
	if got := e.stats.Relaying.Load(); got != 0 {
		t.Errorf("Relaying after Close = %d", got)
	}
}

func TestShareBackendDown(t *testing.T) {
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := NewShareListener(inner, ShareConfig{ALPN: testALPN, Backend: gone.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go ln.Accept()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("with the backend down: read %q, %v; want it closed", b, err)
	}
	waitFor(t, "the relay to end", func() bool { return ln.Stats().Relaying.Load() == 0 })
	if got := ln.Stats().BackendErrors.Load(); got != 1 {
		t.Errorf("BackendErrors = %d, want 1", got)
	}
}

// pipeListener is a net.Listener of in-memory connections, for tests in
// a synctest bubble.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// dial connects a client to the listener.
func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.conns <- s
	return c
}

func TestShareTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const peek, idle = 3 * time.Second, time.Minute
		pl := newPipeListener()
		backends := make(chan net.Conn, 4)
		ln, err := NewShareListener(pl, ShareConfig{ALPN: testALPN, Backend: "web:443", ProxyProtocol: true,
			PeekTimeout: peek, IdleTimeout: idle,
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, s := net.Pipe()
				backends <- s
				return c, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		go ln.Accept()

		// A silent connection goes to the backend after the peek
		// timeout, with a LOCAL header (a pipe has no IP addresses).
		start := time.Now()
		client := pl.dial()
		b := <-backends
		if waited := time.Since(start); waited != peek {
			t.Errorf("silent connection relayed after %v, want the peek timeout %v", waited, peek)
		}
		if src, _, err := readProxyHeader(b); err != nil || src.IsValid() {
			t.Errorf("PROXY header: %v, %v; want LOCAL", src, err)
		}

		// Bytes one way keep the relay open past the idle timeout.
		go func() {
			for range 5 {
				time.Sleep(idle / 2)
				b.Write([]byte("tick"))
			}
		}()
		got, _ := io.ReadFull(client, make([]byte, 5*4))
		if got != 20 || time.Since(start) < peek+2*idle {
			t.Fatalf("relay passed %d bytes in %v, want 20 over %v", got, time.Since(start), 5*idle/2)
		}
		// Then silence both ways closes it after the idle timeout.
		quiet := time.Now()
		if n, err := client.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("idle relay: read %d, %v; want closed", n, err)
		}
		if waited := time.Since(quiet); waited != idle {
			t.Errorf("idle relay closed after %v, want %v", waited, idle)
		}
		synctest.Wait()
		if got := ln.Stats().IdleTimeouts.Load(); got != 1 {
			t.Errorf("IdleTimeouts = %d, want 1", got)
		}
		if got, want := ln.Stats().BytesOut.Load(), uint64(20); got != want {
			t.Errorf("BytesOut = %d, want %d", got, want)
		}
		client.Close()
		b.Close()
		ln.Close()
	})
}

// TestShareInnerClosed: when the wrapped listener is closed by someone
// else, Accept returns net.ErrClosed and Close still returns.
func TestShareInnerClosed(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := NewShareListener(inner, ShareConfig{ALPN: testALPN, Backend: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	// Wait for the accept loop to block in the inner listener's Accept.
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	inner.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after the inner listener closed = %v, want net.ErrClosed", err)
	}
	ln.Close()
}
