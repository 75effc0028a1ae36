package main

// Hostile inputs against a live tunneld. While a legitimate client moves a
// long paced transfer through the tunnel, an attacker namespace throws
// garbage, idle, slow and outdated handshakes, bad certificates, protocol
// abuse from authenticated peers and a connection flood at the server.
// Each input must be refused or contained, with its evidence logged as a
// "HOSTILE" line; afterwards the transfer must be byte-exact and the
// legitimate client must never have reconnected.
//
// Admission (tunnel.Limiter.Admit): one source has at most
// --max-handshakes-per-source connections handshaking or queued, the rest
// are refused at once; when the --max-handshakes slots are all taken, a
// connection waits in a queue for one; a connection that sends no
// ClientHello gives its slot back --hello-timeout after it got it; a
// source may open --handshake-burst connections at once and
// --handshake-rate a second after that.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/routing/netnstest"
	"tlsvpn/tunnel"
)

const (
	// attackerSrv is the server's underlay address on the attacker's link.
	attackerSrv    = "198.18.1.1"
	attackerTarget = attackerSrv + ":443"
	// freshSrv is the server's address on the link of a client that has
	// never connected (admission tests); its certificate carries it.
	freshSrv = "198.18.2.1"
	// attackerSources is how many extra /32 source addresses the attacker
	// holds (198.18.1.10 and up), so that each input comes from addresses
	// of its own and the per-source rate limit of one input does not
	// decide the outcome of the next.
	attackerSources = 100

	hostileMaxHandshakes    = 64
	hostileHandshakeTimeout = 2 * time.Second
	// hostileHelloTimeout is shorter than tunneld's default (2 s) to keep
	// the battery short, and shorter than the handshake timeout so that
	// the two deadlines can be told apart.
	hostileHelloTimeout = time.Second

	// tunneld's defaults for the flags the tests leave alone.
	perSourceHandshakes = tunnel.DefaultMaxHandshakesPerSource // --max-handshakes-per-source (handshaking or queued)
	handshakeRate       = tunnel.DefaultHandshakeRate          // --handshake-rate, per second
	handshakeBurst      = tunnel.DefaultHandshakeBurst         // --handshake-burst

	handshakeFailures = "tunneld_handshake_failures_total"
	protocolErrors    = "tunneld_protocol_errors_total"
	spoofedDrops      = `tunneld_dropped_packets_total{reason="spoofed_source"}`
	rxBytes           = "tunneld_rx_bytes_total"
	acceptErrors      = "tunneld_accept_errors_total"
	connectionsGauge  = "tunneld_connections"
	sessionsGauge     = "tunneld_sessions"
)

// refused is the series of tunneld_refused_connections_total for limit.
func refused(limit string) string {
	return `tunneld_refused_connections_total{limit="` + limit + `"}`
}

// The admission limits as labelled in refused.
var admissionLimits = []string{"handshake_rate", "source_handshakes_in_progress", "handshakes_in_progress", "reserved_needs_resumption", "connections"}

// refusals reads refused for every admission limit.
func (h *hostileEnv) refusals(t *testing.T) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, l := range admissionLimits {
		m[l] = h.metric(t, refused(l))
	}
	return m
}

// refusalsSince returns how much each admission limit refused since
// before, leaving out those that refused nothing.
func (h *hostileEnv) refusalsSince(t *testing.T, before map[string]float64) map[string]float64 {
	t.Helper()
	d := map[string]float64{}
	for l, v := range h.refusals(t) {
		if v != before[l] {
			d[l] = v - before[l]
		}
	}
	return d
}

// hostileEnv is a pair (server + legitimate laptop, see newPair) plus an
// attacker namespace on a second link of the server, and a tunneld that
// checks a CRL and serves metrics.
type hostileEnv struct {
	*pair
	attacker *netnstest.NS
	scrape   *env           // only its server field is set: for metric
	ca       *certs.CA      // the PKI's CA, to mint certificates in memory
	pool     *x509.CertPool // that CA, trusted by the attacker's clients
	next     int            // index of the next unused attacker source address
}

// hostileOptions adapts the tunneld of a hostileEnv.
type hostileOptions struct {
	// wrap is a command that runs tunneld, e.g. prlimit --nofile=96:96.
	wrap []string
	// args are more tunneld flags.
	args []string
	// noCRL leaves out --crl (which the hostile battery's revocation
	// input needs).
	noCRL bool
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	return newHostileEnvWith(t, hostileOptions{args: []string{
		"--handshake-timeout", hostileHandshakeTimeout.String(), "--hello-timeout", hostileHelloTimeout.String(),
		"--max-handshakes", strconv.Itoa(hostileMaxHandshakes)}})
}

// newHostileEnvWith builds the topology and PKI, starts tunneld (with
// --crl and --metrics, and opts) and connects the legitimate laptop.
func newHostileEnvWith(t *testing.T, opts hostileOptions) *hostileEnv {
	t.Helper()
	p := &pair{server: netnstest.New(t), laptop: netnstest.New(t)}
	h := &hostileEnv{pair: p, attacker: netnstest.New(t), scrape: &env{server: p.server}}
	t.Logf("namespaces: server %s, laptop %s, attacker %s", p.server.Name, p.laptop.Name, h.attacker.Name)
	p.tunneld, p.tunnelc = binaries(t)
	_, p.laptopIf = netnstest.Veth(t, p.server, netip.MustParsePrefix("198.18.0.1/29"), p.laptop, netip.MustParsePrefix("198.18.0.2/29"))
	_, attIf := netnstest.Veth(t, p.server, netip.MustParsePrefix(attackerSrv+"/24"), h.attacker, netip.MustParsePrefix("198.18.1.2/24"))
	link, err := h.attacker.Handle().LinkByName(attIf)
	if err != nil {
		t.Fatalf("attacker veth %s: %v", attIf, err)
	}
	for i := range attackerSources {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 1, byte(10+i)), Mask: net.CIDRMask(32, 32)}}
		if err := h.attacker.Handle().AddrAdd(link, a); err != nil {
			t.Fatalf("add %v to %s: %v", a, attIf, err)
		}
	}

	p.pki, p.state = t.TempDir(), t.TempDir()
	run := func(args ...string) {
		t.Helper()
		(&env{}).run(t, p.tunneld, args...)
	}
	run("pki", "init", "--dir", p.pki)
	run("pki", "issue", "--dir", p.pki, "--server", "--name", "server", "--ip", "198.18.0.1", "--ip", attackerSrv, "--ip", freshSrv)
	run("pki", "issue", "--dir", p.pki, "--client", "--name", "laptop")
	run("pki", "issue", "--dir", p.pki, "--client", "--name", "revoked")
	p.srvArgs = []string{"--listen", "0.0.0.0:443",
		"--cert", p.pki + "/server.crt", "--key", p.pki + "/server.key", "--ca", p.pki + "/ca.crt",
		"--subnet", "100.64.0.0/24", "--keepalive", "2s", "--state-dir", p.state, "--log-level", "debug",
		"--metrics", metricsAddr}
	if !opts.noCRL {
		p.srvArgs = append(p.srvArgs, "--crl", p.pki+"/crl.pem", "--crl-check", "200ms")
	}
	p.srvArgs = append(p.srvArgs, opts.args...)
	if len(opts.wrap) == 0 {
		p.startServer(t)
	} else {
		p.srv = start(t, p.server, opts.wrap[0], append(append(opts.wrap[1:len(opts.wrap):len(opts.wrap)], p.tunneld), p.srvArgs...)...)
		eventually(t, "tunneld listening", func() bool { return strings.Contains(p.srv.log.String(), "msg=listening") })
	}
	p.cli = start(t, p.laptop, p.tunnelc, "--server", "198.18.0.1:443",
		"--cert", p.pki+"/laptop.crt", "--key", p.pki+"/laptop.key", "--ca", p.pki+"/ca.crt", "--log-level", "debug")
	eventually(t, "client address", func() bool { return hasAddr(p.laptop, "tunnelc0", clientAddr) })

	if h.ca, err = certs.LoadCA(p.pki); err != nil {
		t.Fatal(err)
	}
	h.pool = h.ca.Pool()
	return h
}

// sources returns n attacker source addresses that no other input used.
func (h *hostileEnv) sources(t *testing.T, n int) []netip.Addr {
	t.Helper()
	if h.next+n > attackerSources {
		t.Fatalf("out of attacker source addresses: want %d more, %d left", n, attackerSources-h.next)
	}
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + h.next)})
		h.next++
	}
	return out
}

func (h *hostileEnv) metric(t *testing.T, series string) float64 {
	t.Helper()
	return h.scrape.metric(t, series)
}

// grewBy waits (bounded) until series has grown by at least want since
// before, and returns the growth.
func (h *hostileEnv) grewBy(t *testing.T, series string, before, want float64) float64 {
	t.Helper()
	var d float64
	eventually(t, fmt.Sprintf("%s to grow by %v", series, want), func() bool {
		d = h.metric(t, series) - before
		return d >= want
	})
	return d
}

// alive fails the test if tunneld has exited.
func (h *hostileEnv) alive(t *testing.T) {
	t.Helper()
	select {
	case <-h.srv.done:
		t.Fatalf("tunneld exited: %v", h.srv.err)
	default:
	}
}

// dial connects to the server from src in the attacker namespace.
func (h *hostileEnv) dial(ctx context.Context, src netip.Addr) (net.Conn, error) {
	var c net.Conn
	err := h.attacker.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		var err error
		c, err = d.DialContext(ctx, "tcp", attackerTarget)
		return err
	})
	return c, err
}

// cert issues a client certificate for name from the server's CA, in memory.
func (h *hostileEnv) cert(t *testing.T, req certs.IssueRequest) tls.Certificate {
	t.Helper()
	req.Client = true
	c, err := h.ca.IssueCert(req)
	if err != nil {
		t.Fatalf("issue %q: %v", req.Name, err)
	}
	return c
}

// clientConfig is a tunnelc-like TLS config trusting the server's CA and
// presenting cert (none if its Certificate is empty) whatever the server
// asks for: crypto/tls on its own withholds a certificate whose issuer is
// not among the server's certificate_authorities, which would turn "a
// certificate from another CA" into "no certificate".
func (h *hostileEnv) clientConfig(cert tls.Certificate) *tls.Config {
	cfg := certs.ClientConfigFrom(cert, h.pool, attackerSrv)
	cfg.Certificates = nil
	if len(cert.Certificate) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	cfg.NextProtos = []string{tunnel.ALPN}
	return cfg
}

// tlsAttempt runs a TLS handshake from src and then reads once for up to
// half a second: a TLS 1.3 client learns that the server refused its
// certificate only from that read, and a session ticket arrives during it.
// A read that merely times out counts as success.
func (h *hostileEnv) tlsAttempt(t *testing.T, src netip.Addr, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	raw, err := h.dial(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return c.ConnectionState(), err
	}
	raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return c.ConnectionState(), err
}

// rawPeer is an authenticated client that speaks frames by hand.
type rawPeer struct {
	conn   *tls.Conn
	cfg    tunnel.Config
	frames chan rawFrame // from readLoop; closed after the final error
}

// rawFrame is one frame from the server, or (err != nil) the end of the
// stream.
type rawFrame struct {
	typ     byte
	payload []byte
	err     error
}

var errNoFrame = errors.New("no frame within the timeout")

// rawSession connects with a fresh certificate for name, sends HELLO and
// reads CONFIG.
func (h *hostileEnv) rawSession(t *testing.T, name string, src netip.Addr) (*rawPeer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	raw, err := h.dial(ctx, src)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { raw.Close() })
	c := tls.Client(raw, h.clientConfig(h.cert(t, certs.IssueRequest{Name: name})))
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	p := &rawPeer{conn: c, frames: make(chan rawFrame, 8192)}
	go p.readLoop()
	if err := p.send(tunnel.AppendFrame(nil, tunnel.TypeHello, true, tunnel.MarshalHello(tunnel.Hello{Software: "hostile/" + name}))); err != nil {
		return nil, err
	}
	f := p.next(5 * time.Second)
	if f.err != nil {
		return nil, fmt.Errorf("waiting for CONFIG: %w", f.err)
	}
	if f.typ != tunnel.TypeConfig {
		return nil, fmt.Errorf("first frame from the server is type 0x%02x, want CONFIG", f.typ)
	}
	if p.cfg, err = tunnel.UnmarshalConfig(f.payload); err != nil {
		return nil, err
	}
	return p, nil
}

func (h *hostileEnv) mustRawSession(t *testing.T, name string) *rawPeer {
	t.Helper()
	p, err := h.rawSession(t, name, h.sources(t, 1)[0])
	if err != nil {
		t.Fatalf("raw session %s: %v", name, err)
	}
	return p
}

func (p *rawPeer) readLoop() {
	defer close(p.frames)
	var hb [tunnel.HeaderLen]byte
	for {
		if _, err := io.ReadFull(p.conn, hb[:]); err != nil {
			p.frames <- rawFrame{err: err}
			return
		}
		hd, err := tunnel.ParseHeader(hb[:])
		if err != nil {
			p.frames <- rawFrame{err: fmt.Errorf("server sent a bad frame header %x: %w", hb, err)}
			return
		}
		b := make([]byte, hd.Len)
		if _, err := io.ReadFull(p.conn, b); err != nil {
			p.frames <- rawFrame{err: err}
			return
		}
		p.frames <- rawFrame{typ: hd.Type, payload: b}
	}
}

func (p *rawPeer) send(b []byte) error {
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := p.conn.Write(b)
	return err
}

// next returns the next frame, or a rawFrame whose err says why there is
// none: the stream's end, or errNoFrame after timeout.
func (p *rawPeer) next(timeout time.Duration) rawFrame {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f, ok := <-p.frames:
		if !ok {
			return rawFrame{err: net.ErrClosed}
		}
		return f
	case <-t.C:
		return rawFrame{err: errNoFrame}
	}
}

// await returns the first frame that match accepts, skipping others.
func (p *rawPeer) await(timeout time.Duration, match func(rawFrame) bool) rawFrame {
	deadline := time.Now().Add(timeout)
	for {
		f := p.next(time.Until(deadline))
		if f.err != nil || match(f) {
			return f
		}
	}
}

// closeResult is how the server ended a raw session.
type closeResult struct {
	closed bool   // a CLOSE frame arrived
	code   uint16 // its code and reason
	reason string
	end    error // the error that ended the stream afterwards (nil: still open)
}

func (c closeResult) String() string {
	s := "no CLOSE"
	if c.closed {
		s = fmt.Sprintf("CLOSE %d (%s) %q", c.code, tunnel.CloseCodeName(c.code), c.reason)
	}
	if c.end != nil {
		s += fmt.Sprintf(", then connection ended (%v)", c.end)
	} else {
		s += ", connection still open"
	}
	return s
}

// untilClose reads until the server's CLOSE frame and then the end of the
// stream, each for up to timeout.
func (p *rawPeer) untilClose(timeout time.Duration) closeResult {
	var r closeResult
	f := p.await(timeout, func(f rawFrame) bool { return f.typ == tunnel.TypeClose })
	if f.err != nil {
		if !errors.Is(f.err, errNoFrame) {
			r.end = f.err
		}
		return r
	}
	code, reason, err := tunnel.UnmarshalClose(f.payload)
	r.closed, r.code, r.reason = err == nil, code, reason
	if e := p.await(timeout, func(rawFrame) bool { return false }).err; !errors.Is(e, errNoFrame) {
		r.end = e
	}
	return r
}

// icmpEcho returns an IPv4 ICMP echo request from src to dst.
func icmpEcho(src, dst netip.Addr, id, seq uint16) []byte {
	p := make([]byte, 20+8+8)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 1 // TTL, ICMP
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20]))
	m := p[20:]
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "hostile!")
	binary.BigEndian.PutUint16(m[2:], inetChecksum(m))
	return p
}

// inetChecksum is the RFC 1071 checksum.
func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// logLine returns the first line of log that contains every one of subs,
// or "".
func logLine(log string, subs ...string) string {
next:
	for _, l := range strings.Split(log, "\n") {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return l
	}
	return ""
}

// logAttr returns the value of key in a text-handler log line, or "".
func logAttr(line, key string) string {
	m := regexp.MustCompile(`(?:^| )` + regexp.QuoteMeta(key) + `=("(?:[^"\\]|\\.)*"|\S*)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	if s, err := strconv.Unquote(m[1]); err == nil {
		return s
	}
	return m[1]
}

// heldConn is how a connection that the attacker held open ended: after
// how long the server hung up, and the error that ended the read (nil:
// EOF).
type heldConn struct {
	after time.Duration
	err   error
}

// dialMany connects perSource times from each of srcs, in that order,
// one after another on one thread in the attacker's namespace (quicker
// and steadier than a thread per connection), and returns the
// connections and when each was established.
func (h *hostileEnv) dialMany(ctx context.Context, srcs []netip.Addr, perSource int) ([]net.Conn, []time.Time, error) {
	conns := make([]net.Conn, 0, len(srcs)*perSource)
	at := make([]time.Time, 0, cap(conns))
	err := h.attacker.Do(func() error {
		for i := range cap(conns) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(srcs[i/perSource], 0))}
			c, err := d.DialContext(ctx, "tcp", attackerTarget)
			if err != nil {
				return err
			}
			conns, at = append(conns, c), append(at, time.Now())
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, nil, err
	}
	return conns, at, nil
}

// holdConns opens perSource connections from each of srcs at once and
// keeps each one open until the server hangs up or limit has passed,
// calling feed (if not nil) on it meanwhile; feed must return once stop
// is closed. Results are in the order of srcs, perSource each. ready, if
// not nil, is closed once every connection is open.
func (h *hostileEnv) holdConns(t *testing.T, srcs []netip.Addr, perSource int, limit time.Duration, feed func(c net.Conn, stop <-chan struct{}), ready chan<- struct{}) []heldConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conns, at, err := h.dialMany(ctx, srcs, perSource)
	if ready != nil {
		close(ready)
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	out := make([]heldConn, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			defer c.Close()
			stop := make(chan struct{})
			fed := make(chan struct{})
			if feed != nil {
				go func() {
					defer close(fed)
					feed(c, stop)
				}()
			} else {
				close(fed)
			}
			c.SetReadDeadline(at[i].Add(limit))
			_, err := io.Copy(io.Discard, c)
			out[i] = heldConn{time.Since(at[i]), err}
			close(stop)
			<-fed
		})
	}
	wg.Wait()
	return out
}

// splitHeld sorts held connections into those the server closed at once
// (refused at accept) and those it closed at deadline (between 0.8 and
// 1.5 times it: the server's clock starts at accept, a little before the
// client's); any other outcome is an error.
func splitHeld(t *testing.T, held []heldConn, deadline time.Duration, what string) (atOnce, atDeadline int, slowest time.Duration) {
	t.Helper()
	for i, r := range held {
		switch {
		case errors.Is(r.err, os.ErrDeadlineExceeded):
			t.Errorf("%s connection %d still open after %v, want it closed at the %v deadline", what, i, r.after.Round(time.Millisecond), deadline)
		case r.after < deadline/2:
			atOnce++
		case r.after >= deadline*8/10 && r.after <= deadline*3/2:
			atDeadline++
			slowest = max(slowest, r.after)
		default:
			t.Errorf("%s connection %d closed after %v (err %v), want at once or at the %v deadline", what, i, r.after.Round(time.Millisecond), r.err, deadline)
		}
	}
	return atOnce, atDeadline, slowest
}

// handshakeAnswered starts a TLS handshake from src with cfg and reports
// whether the server answered it (false: it closed the connection before
// its ServerHello, as it does with one it refuses at accept).
func (h *hostileEnv) handshakeAnswered(t *testing.T, src netip.Addr, cfg *tls.Config) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := h.dial(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	err = tls.Client(c, cfg).HandshakeContext(ctx)
	switch {
	case err == nil:
		return true
	case refusedAtAccept(err):
		return false
	}
	t.Fatalf("TLS handshake from %v: %v, want it answered or the connection closed", src, err)
	return false
}

// refusedAtAccept reports whether err is what a TLS client sees when the
// server closes the connection before answering its ClientHello.
func refusedAtAccept(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// refusalLine returns the last "refusing connection: <reason>" line that
// tunneld logged for a connection from src, or "".
func (h *hostileEnv) refusalLine(reason string, src netip.Addr) string {
	ls := strings.Split(h.srv.log.String(), "\n")
	for i := len(ls) - 1; i >= 0; i-- {
		if strings.Contains(ls[i], "refusing connection: "+reason) && strings.Contains(ls[i], "remote_addr="+src.String()+":") {
			return ls[i]
		}
	}
	return ""
}

// hostileResult is one row of the closing table.
type hostileResult struct{ input, did, evidence string }

// pacedStream sends pseudo-random bytes at about rate bytes/s from the
// laptop to the server's tunnel address on port until stop is called, so
// that it spans whatever runs meanwhile, however long that takes. stop
// ends it and reports how many bytes were sent and whether the receiver
// got exactly them (SHA-256 of both sides), or why the stream broke.
func (p *pair) pacedStream(t *testing.T, port int, rate int64) (stop func() (int64, error)) {
	t.Helper()
	addr := fmt.Sprintf("100.64.0.1:%d", port)
	ln := p.server.Listen(t, "tcp", addr)
	type summary struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan summary, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			got <- summary{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r summary
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	c, err := p.laptop.Dial(ctx, "tcp", addr)
	cancel()
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	stopped := make(chan struct{})
	sent := make(chan summary, 1)
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Minute))
		h := sha256.New()
		src := newPRNG()
		buf := make([]byte, 32<<10)
		start := time.Now()
		var n int64
		var err error
	loop:
		for {
			select {
			case <-stopped:
				break loop
			default:
			}
			src.Read(buf)
			h.Write(buf)
			if _, err = c.Write(buf); err != nil {
				err = fmt.Errorf("send after %d bytes: %w", n, err)
				break
			}
			n += int64(len(buf))
			if ahead := time.Duration(n*int64(time.Second)/rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		var r summary
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		sent <- r
	}()
	var once sync.Once
	return func() (int64, error) {
		once.Do(func() { close(stopped) })
		var s, r summary
		for _, ch := range []struct {
			c chan summary
			v *summary
		}{{sent, &s}, {got, &r}} {
			select {
			case *ch.v = <-ch.c:
			case <-time.After(30 * time.Second):
				return s.n, errors.New("the stream did not end within 30s of stop")
			}
		}
		switch {
		case s.err != nil:
			return s.n, s.err
		case r.err != nil:
			return s.n, fmt.Errorf("receive: %w", r.err)
		case r.n != s.n || r.sum != s.sum:
			return s.n, fmt.Errorf("receiver got %d bytes with sha256 %x, sent %d with %x", r.n, r.sum, s.n, s.sum)
		}
		return s.n, nil
	}
}

func TestNetNSHostile(t *testing.T) {
	h := newHostileEnv(t)
	// The legitimate transfer runs, paced, through the whole battery, and
	// must arrive byte-exact.
	const transferRate = 4 << 20
	stopTransfer := h.pacedStream(t, 6101, transferRate)
	transferStart := time.Now()

	hostile := func(name string, f func(t *testing.T) []hostileResult) {
		t.Run(name, func(t *testing.T) {
			rx, t0 := h.metric(t, rxBytes), time.Now()
			rows := f(t)
			h.alive(t)
			legit := ""
			if d := time.Since(t0); d >= 500*time.Millisecond {
				legit = fmt.Sprintf("; legit transfer +%.1f MiB in these %v", (h.metric(t, rxBytes)-rx)/(1<<20), d.Round(100*time.Millisecond))
			}
			for _, r := range rows {
				t.Logf("HOSTILE | %s | %s | %s%s |", r.input, r.did, r.evidence, legit)
			}
		})
	}

	hostile("random bytes", func(t *testing.T) []hostileResult {
		const conns = 5
		src := h.sources(t, 1)[0]
		before := h.metric(t, handshakeFailures)
		junk := make([]byte, 64<<10)
		var slowest time.Duration
		var answers []string
		for range conns {
			rand.Read(junk)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			c, err := h.dial(ctx, src)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(junk) // may fail with a reset once the server hung up
			got, err := io.ReadAll(c)
			c.Close()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("server kept a connection that sent 64 KiB of random bytes open for 5 s")
			}
			slowest = max(slowest, time.Since(t0))
			answers = append(answers, describeReply(got, err))
		}
		d := h.grewBy(t, handshakeFailures, before, conns)
		if d != conns {
			t.Errorf("%s grew by %v for %d connections, want exactly %d", handshakeFailures, d, conns, conns)
		}
		return []hostileResult{{fmt.Sprintf("random bytes (%d conns x 64 KiB)", conns),
			"closed each connection before any TLS progress",
			fmt.Sprintf("closed within %.1f ms; server sent %s; log err=%q; %s +%v", float64(slowest.Microseconds())/1000, strings.Join(dedup(answers), " / "),
				logAttr(logLine(h.srv.log.String(), `msg="handshake failed"`, src.String()+":"), "err"), handshakeFailures, d)}}
	})

	hostile("idle connections from one source", func(t *testing.T) []hostileResult {
		// The attack that held every handshake slot before per-source
		// admission: one address, well within its burst, opens as many
		// idle connections as there are slots and sends nothing.
		const conns = hostileMaxHandshakes
		src := h.sources(t, 1)[0]
		before := h.refusals(t)
		ready := make(chan struct{})
		var held []heldConn
		done := make(chan struct{})
		go func() {
			defer close(done)
			held = h.holdConns(t, []netip.Addr{src}, conns, 4*hostileHelloTimeout, nil, ready)
		}()
		<-ready
		// While the attacker holds its share, a client from elsewhere
		// gets in at once.
		tf := time.Now()
		p, ferr := h.rawSession(t, "fresh-during-idle", h.sources(t, 1)[0])
		fresh := time.Since(tf)
		<-done
		if ferr != nil {
			t.Fatalf("a legitimate client could not connect while one source held idle connections: %v", ferr)
		}
		p.send(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, "done")))
		if fresh > time.Second {
			t.Errorf("a legitimate client needed %v to connect while one source held idle connections, want it at once", fresh)
		}
		atOnce, atDeadline, slowest := splitHeld(t, held, hostileHelloTimeout, "idle")
		if atDeadline != perSourceHandshakes || atOnce != conns-perSourceHandshakes {
			t.Errorf("one source held %d idle connections until the hello deadline and had %d refused at once, want %d (--max-handshakes-per-source) and %d",
				atDeadline, atOnce, perSourceHandshakes, conns-perSourceHandshakes)
		}
		d := h.refusalsSince(t, before)
		if d["source_handshakes_in_progress"] != float64(atOnce) || len(d) != 1 {
			t.Errorf("refusals grew by %v for %d connections refused at once, want all under limit=source_handshakes_in_progress", d, atOnce)
		}
		line := h.refusalLine("too many handshakes in progress from this source", src)
		if line == "" {
			t.Errorf("server log lacks the per-source refusal for %v:\n%s", src, h.srv.log)
		}
		return []hostileResult{{fmt.Sprintf("%d idle connections from one source at once (sends nothing)", conns),
			fmt.Sprintf("held %d (--max-handshakes-per-source), refused the other %d at accept; closed the held ones at --hello-timeout %v", atDeadline, atOnce, hostileHelloTimeout),
			fmt.Sprintf("%d closed at once, %d after <= %v; refusals %v; log %q; meanwhile a client from another address got CONFIG (%v) in %v",
				atOnce, atDeadline, slowest.Round(time.Millisecond), d, logAttr(line, "msg"), p.cfg.Addr, fresh.Round(time.Millisecond))}}
	})

	hostile("slowloris", func(t *testing.T) []hostileResult {
		// Connections that dribble a ClientHello record header four bytes
		// a second: no ClientHello is ever complete. A few more from each
		// address than its share (all within the burst, so the rate limit
		// does not interfere), from as many addresses as fit in the
		// --max-handshakes slots together, so that only the per-source
		// share decides (the queue has its own input below).
		nsrc, perSource := (hostileMaxHandshakes-1)/perSourceHandshakes, perSourceHandshakes+4
		conns := nsrc * perSource
		srcs := h.sources(t, nsrc)
		before, failures := h.refusals(t), h.metric(t, handshakeFailures)
		hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
		dribble := func(c net.Conn, stop <-chan struct{}) {
			for j := 0; ; j++ {
				if _, err := c.Write(hello[j%len(hello) : j%len(hello)+1]); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Second / 4):
				}
			}
		}
		held := h.holdConns(t, srcs, perSource, 4*hostileHelloTimeout, dribble, nil)
		atOnce, atDeadline, slowest := splitHeld(t, held, hostileHelloTimeout, "slowloris")
		for i := range srcs {
			a, dl, _ := splitHeld(t, held[i*perSource:(i+1)*perSource], hostileHelloTimeout, "slowloris")
			if dl != perSourceHandshakes {
				t.Errorf("source %v held %d slots until the hello deadline (%d refused at once), want %d (--max-handshakes-per-source)", srcs[i], dl, a, perSourceHandshakes)
			}
		}
		want := nsrc * perSourceHandshakes
		if atDeadline != want || atOnce != conns-want {
			t.Errorf("%d connections held until the hello deadline and %d refused at once, want %d and %d", atDeadline, atOnce, want, conns-want)
		}
		d := h.refusalsSince(t, before)
		if d["source_handshakes_in_progress"] != float64(atOnce) || len(d) != 1 {
			t.Errorf("refusals grew by %v for %d connections refused at once, want all under limit=source_handshakes_in_progress", d, atOnce)
		}
		f := h.grewBy(t, handshakeFailures, failures, float64(conns))
		toLine := logLine(h.srv.log.String(), `msg="handshake failed"`, "198.18.1.", "i/o timeout")
		if toLine == "" {
			t.Errorf("server log lacks a handshake that failed at the hello deadline:\n%s", h.srv.log)
		}
		return []hostileResult{{fmt.Sprintf("slowloris (%d conns from %d addrs, ClientHello header 4 bytes/s)", conns, len(srcs)),
			fmt.Sprintf("held %d per source (%d), refused the other %d at accept; closed the held ones at --hello-timeout %v", perSourceHandshakes, atDeadline, atOnce, hostileHelloTimeout),
			fmt.Sprintf("%d closed at once, %d after <= %v; refusals %v; %s +%v; log err=%q", atOnce, atDeadline, slowest.Round(time.Millisecond),
				d, handshakeFailures, f, logAttr(toLine, "err"))}}
	})

	hostile("idle connections filling every slot and the queue", func(t *testing.T) []hostileResult {
		// More sources, each at its share: together more idle connections
		// than --max-handshakes. Those beyond the slots wait in the queue;
		// the hello deadline runs from accept, so when the first ones reach
		// it, the queued ones get their slot already past theirs and are
		// closed after a short grace: every idle connection is gone about
		// one hello timeout after it came. A legitimate client queued among
		// them is served in that same round.
		nsrc := 3 * hostileMaxHandshakes / (2 * perSourceHandshakes)
		srcs := h.sources(t, nsrc)
		conns := nsrc * perSourceHandshakes
		before := h.refusals(t)
		ready := make(chan struct{})
		var held []heldConn
		done := make(chan struct{})
		go func() {
			defer close(done)
			held = h.holdConns(t, srcs, perSourceHandshakes, 4*hostileHelloTimeout, nil, ready)
		}()
		<-ready
		tf := time.Now()
		p, ferr := h.rawSession(t, "fresh-in-queue", h.sources(t, 1)[0])
		fresh := time.Since(tf)
		<-done
		if ferr != nil {
			t.Fatalf("a legitimate client queued among idle connections: %v", ferr)
		}
		p.send(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, "done")))
		var inTime int
		var slowest time.Duration
		for i, r := range held {
			// Closed at the hello deadline (from accept), or, queued, at
			// most the server's 200 ms grace after getting a slot then.
			if r.after >= hostileHelloTimeout*8/10 && r.after <= hostileHelloTimeout*3/2+200*time.Millisecond {
				inTime++
			} else {
				t.Errorf("idle connection %d closed after %v (err %v), want about --hello-timeout %v after it was accepted", i, r.after.Round(time.Millisecond), r.err, hostileHelloTimeout)
			}
			slowest = max(slowest, r.after)
		}
		if d := h.refusalsSince(t, before); len(d) != 0 {
			t.Errorf("refusals grew by %v, want none: every source stayed within its share, and the queue has room", d)
		}
		if fresh > hostileHelloTimeout+time.Second {
			t.Errorf("a legitimate client queued among idle connections got CONFIG after %v, want within the hello deadline of the connections holding the slots (%v) and a second", fresh, hostileHelloTimeout)
		}
		return []hostileResult{{fmt.Sprintf("%d idle connections from %d addrs, each at its share (more than the %d slots)", conns, nsrc, hostileMaxHandshakes),
			fmt.Sprintf("held %d, queued the other %d; closed each about --hello-timeout %v after it was accepted", hostileMaxHandshakes, conns-hostileMaxHandshakes, hostileHelloTimeout),
			fmt.Sprintf("%d of %d closed in time, the last after %v; no refusals; a client queued among them got CONFIG (%v) in %v",
				inTime, conns, slowest.Round(time.Millisecond), p.cfg.Addr, fresh.Round(time.Millisecond))}}
	})

	hostile("ClientHello, then silence", func(t *testing.T) []hostileResult {
		// A complete ClientHello clears the hello deadline; a client that
		// then never finishes its side of the handshake is closed at
		// --handshake-timeout.
		src := h.sources(t, 1)[0]
		failures := h.metric(t, handshakeFailures)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, err := h.dial(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		t0 := time.Now()
		c.SetDeadline(time.Now().Add(4 * hostileHandshakeTimeout))
		// The ClientHello goes out, the client's second flight does not.
		if err := tls.Client(&stallConn{Conn: c}, h.clientConfig(h.cert(t, certs.IssueRequest{Name: "stalled"}))).HandshakeContext(ctx); err != nil {
			t.Fatalf("client side of the stalled handshake: %v", err)
		}
		_, err = io.Copy(io.Discard, c)
		after := time.Since(t0)
		if errors.Is(err, os.ErrDeadlineExceeded) || after < hostileHandshakeTimeout*8/10 || after > hostileHandshakeTimeout*3/2 {
			t.Errorf("server closed a connection stalled after its ClientHello after %v (err %v), want at --handshake-timeout %v", after.Round(time.Millisecond), err, hostileHandshakeTimeout)
		}
		f := h.grewBy(t, handshakeFailures, failures, 1)
		return []hostileResult{{"ClientHello, then nothing more (valid cert, never sent)", fmt.Sprintf("closed it at --handshake-timeout %v, not at --hello-timeout %v", hostileHandshakeTimeout, hostileHelloTimeout),
			fmt.Sprintf("server hung up after %v; %s +%v", after.Round(time.Millisecond), handshakeFailures, f)}}
	})

	hostile("per-source rate and burst", func(t *testing.T) []hostileResult {
		// One source opens connections one after another (each a TLS
		// handshake without a client certificate, so the server's answer
		// shows it was admitted) until one is refused: that is after
		// --handshake-burst, plus what --handshake-rate refilled meanwhile.
		src := h.sources(t, 1)[0]
		before := h.refusals(t)
		cfg := h.clientConfig(tls.Certificate{})
		t0 := time.Now()
		n := 0
		for n <= 2*handshakeBurst && h.handshakeAnswered(t, src, cfg) {
			n++
		}
		took := time.Since(t0)
		most := handshakeBurst + int(handshakeRate*took.Seconds()) + 1
		if n < handshakeBurst || n > most {
			t.Errorf("source was refused after %d connections in %v, want after %d (--handshake-burst) to %d (plus --handshake-rate %v/s meanwhile)",
				n, took.Round(time.Millisecond), handshakeBurst, most, handshakeRate)
		}
		var d map[string]float64
		eventually(t, "the refusal counted", func() bool {
			d = h.refusalsSince(t, before)
			return len(d) > 0
		})
		if d["handshake_rate"] != 1 || len(d) != 1 {
			t.Errorf("refusals grew by %v, want one under limit=handshake_rate", d)
		}
		line := h.refusalLine("too many new connections from this source", src)
		if line == "" {
			t.Errorf("server log lacks the rate refusal for %v", src)
		}
		return []hostileResult{{"one source connecting as fast as it can, one at a time", fmt.Sprintf("admitted the burst (%d) and the rate (%v/s), then refused", handshakeBurst, handshakeRate),
			fmt.Sprintf("refused connection %d after %v; refusals %v; log %q", n+1, took.Round(time.Millisecond), d, logAttr(line, "msg"))}}
	})

	// Certificates and versions. Impersonation attempts use the legitimate
	// client's identity "laptop": if one got through, it would replace the
	// laptop's session and the laptop would reconnect.
	otherCA := certstest.NewCA(t)
	tlsCases := []struct {
		input, did, want string
		cfg              func(t *testing.T) *tls.Config
	}{
		{"TLS 1.2 ClientHello (valid cert)", "refused the version", "protocol version not supported", func(t *testing.T) *tls.Config {
			cfg := h.clientConfig(h.cert(t, certs.IssueRequest{Name: "laptop"}))
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return cfg
		}},
		{"TLS 1.0 ClientHello (valid cert)", "refused the version", "protocol version not supported", func(t *testing.T) *tls.Config {
			cfg := h.clientConfig(h.cert(t, certs.IssueRequest{Name: "laptop"}))
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
			return cfg
		}},
		{"client cert from another CA (CN laptop)", "refused the certificate", "unknown certificate authority", func(t *testing.T) *tls.Config {
			return h.clientConfig(otherCA.ClientCert(t, "laptop"))
		}},
		{"expired client cert from the right CA (CN laptop)", "refused the certificate", "expired certificate", func(t *testing.T) *tls.Config {
			return h.clientConfig(h.cert(t, certs.IssueRequest{Name: "laptop", Days: 1, Now: time.Now().AddDate(0, 0, -2)}))
		}},
		{"no client certificate", "refused the handshake", "certificate required", func(t *testing.T) *tls.Config {
			return h.clientConfig(tls.Certificate{})
		}},
	}
	for _, tc := range tlsCases {
		hostile(tc.input, func(t *testing.T) []hostileResult {
			before := h.metric(t, handshakeFailures)
			_, err := h.tlsAttempt(t, h.sources(t, 1)[0], tc.cfg(t))
			if err == nil {
				t.Fatalf("handshake succeeded and the server kept the connection, want refusal with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("client saw %q, want an alert %q", err, tc.want)
			}
			d := h.grewBy(t, handshakeFailures, before, 1)
			return []hostileResult{{tc.input, tc.did, fmt.Sprintf("client got %q; %s +%v", err, handshakeFailures, d)}}
		})
	}

	hostile("revoked certificate", func(t *testing.T) []hostileResult {
		crt, key := h.pki+"/revoked.crt", h.pki+"/revoked.key"
		live := start(t, h.attacker, h.tunnelc, "--server", attackerTarget,
			"--cert", crt, "--key", key, "--ca", h.pki+"/ca.crt", "--log-level", "debug")
		eventually(t, "the revoked-to-be tunnelc connected", func() bool { return strings.Contains(live.log.String(), "msg=connected") })
		cert, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		cache := tls.NewLRUClientSessionCache(4)
		resuming := h.clientConfig(cert)
		resuming.ClientSessionCache = cache
		src := h.sources(t, 1)[0]
		// Before revocation: a full handshake leaves a ticket, and the
		// ticket resumes, so the check after revocation is meaningful.
		if cs, err := h.tlsAttempt(t, src, resuming); err != nil || cs.DidResume {
			t.Fatalf("full handshake before revocation: resumed=%v err=%v", cs.DidResume, err)
		}
		if cs, err := h.tlsAttempt(t, src, resuming); err != nil || !cs.DidResume {
			t.Fatalf("resumption before revocation: resumed=%v err=%v; want a resumed handshake", cs.DidResume, err)
		}

		revokedAt := time.Now()
		(&env{}).run(t, h.tunneld, "pki", "revoke", "--dir", h.pki, "--name", "revoked")
		eventually(t, "the live session of the revoked client closed", func() bool {
			return strings.Contains(live.log.String(), "revoked")
		})
		closedIn := time.Since(revokedAt)
		srvLog := h.srv.log.String()
		reload := logLine(srvLog, "revocation list reloaded")
		closing := logLine(srvLog, "closing session: peer no longer authorized", "peer=revoked")
		if reload == "" || closing == "" {
			t.Errorf("server log lacks the CRL reload or the closing of the revoked session:\n%s", srvLog)
		}
		cliLine := logLine(live.log.String(), "revoked")

		before := h.metric(t, handshakeFailures)
		_, fullErr := h.tlsAttempt(t, src, h.clientConfig(cert))
		if fullErr == nil || !strings.Contains(fullErr.Error(), "bad certificate") {
			t.Errorf("full handshake with the revoked certificate: %v, want a bad certificate alert", fullErr)
		}
		cs, resErr := h.tlsAttempt(t, src, resuming)
		if resErr == nil {
			t.Errorf("handshake with a ticket from before the revocation was accepted (resumed=%v)", cs.DidResume)
		}
		d := h.grewBy(t, handshakeFailures, before, 2)
		// The real client's reconnects (which offer its ticket) fail too.
		eventually(t, "the revoked tunnelc's reconnect refused", func() bool {
			return logLine(live.log.String(), "connect failed") != ""
		})
		live.stop(t)
		var retries []string
		for _, l := range strings.Split(live.log.String(), "\n") {
			if strings.Contains(l, "connect failed") {
				retries = append(retries, regexp.MustCompile(`:\d+->`).ReplaceAllString(logAttr(l, "err"), ":*->"))
			}
		}
		retry := strings.Join(dedup(retries), " / ")
		return []hostileResult{
			{"revoked cert, live tunnelc session", fmt.Sprintf("reloaded the CRL and closed the session %v after 'pki revoke'", closedIn.Round(time.Millisecond)),
				fmt.Sprintf("server: %q; tunnelc: %q", logAttr(closing, "reason"), logAttr(cliLine, "reason"))},
			{"revoked cert, new full handshake", "refused the certificate", fmt.Sprintf("client got %q", fullErr)},
			{"revoked cert, resumption with a pre-revocation ticket", "refused the resumed handshake",
				fmt.Sprintf("ticket resumed before revocation; after: resumed=%v, client got %q; %s +%v (full + resumed); tunnelc reconnect: %q",
					cs.DidResume, resErr, handshakeFailures, d, retry)},
		}
	})

	// Protocol abuse from authenticated peers.
	abuse := []struct {
		input, name, want string
		frames            []byte
	}{
		{"oversized frame (DATA header announcing 0x7fffff bytes)", "raw-oversized", "frame too large",
			[]byte{tunnel.TypeData | tunnel.FlagEnd, 0x7f, 0xff, 0xff}},
		{"unknown frame type 0x55", "raw-unknown", "unknown frame type 0x55",
			[]byte{0x55 | tunnel.FlagEnd, 0, 0, 4, 1, 2, 3, 4}},
		{"flood of 5000 PING frames", "raw-pingflood", "control frame flood", func() []byte {
			var b []byte
			for i := range 5000 {
				b = tunnel.AppendFrame(b, tunnel.TypePing, true, binary.BigEndian.AppendUint64(nil, uint64(i)))
			}
			return b
		}()},
	}
	for _, a := range abuse {
		hostile(a.input, func(t *testing.T) []hostileResult {
			p := h.mustRawSession(t, a.name)
			before := h.metric(t, protocolErrors)
			sendErr := p.send(a.frames)
			r := p.untilClose(5 * time.Second)
			if !r.closed || r.code != tunnel.CloseProtocol || !strings.Contains(r.reason, a.want) {
				t.Errorf("server answered %v (write error: %v), want CLOSE 3 (protocol_error) about %q", r, sendErr, a.want)
			}
			if r.end == nil {
				t.Errorf("server left the connection open after its CLOSE")
			}
			d := h.grewBy(t, protocolErrors, before, 1)
			if d != 1 {
				t.Errorf("%s grew by %v, want 1", protocolErrors, d)
			}
			return []hostileResult{{a.input, "ended that session with a protocol error", fmt.Sprintf("%v; %s +%v", r, protocolErrors, d)}}
		})
	}

	hostile("truncated frame", func(t *testing.T) []hostileResult {
		const name = "raw-truncated"
		p := h.mustRawSession(t, name)
		before := h.metric(t, protocolErrors)
		frame := append([]byte{tunnel.TypeData | tunnel.FlagEnd, 0, 0x03, 0xe8}, make([]byte, 10)...) // promises 1000 bytes, sends 10
		if err := p.send(frame); err != nil {
			t.Fatal(err)
		}
		if err := p.conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		r := p.untilClose(5 * time.Second)
		if r.end == nil {
			t.Errorf("server still holds the session after a truncated frame and close_notify: %v", r)
		}
		var line string
		eventually(t, "server ends the truncated session", func() bool {
			line = logLine(h.srv.log.String(), `msg="session closed"`, "peer="+name)
			return line != ""
		})
		d := h.metric(t, protocolErrors) - before
		return []hostileResult{{"truncated frame (header promises 1000 B, 10 B then close_notify)", "ended that session as a broken connection",
			fmt.Sprintf("client saw %v; server log reason=%q; %s +%v", r, logAttr(line, "reason"), protocolErrors, d)}}
	})

	hostile("spoofed inner source addresses", func(t *testing.T) []hostileResult {
		p := h.mustRawSession(t, "raw-spoofer")
		own, srv := p.cfg.Addr.Addr(), p.cfg.ServerAddr
		before := h.metric(t, spoofedDrops)
		// Five from an unassigned address, five from the legitimate
		// laptop's address.
		var b []byte
		for i, src := range []netip.Addr{netip.MustParseAddr("100.64.0.99"), clientAddr.Addr()} {
			for seq := range 5 {
				b = tunnel.AppendFrame(b, tunnel.TypeData, i == 1 && seq == 4, icmpEcho(src, srv, 0x4242, uint16(seq)))
			}
		}
		if err := p.send(b); err != nil {
			t.Fatal(err)
		}
		d := h.grewBy(t, spoofedDrops, before, 10)
		if d != 10 {
			t.Errorf("%s grew by %v, want 10", spoofedDrops, d)
		}
		// The session stays up and carries its own traffic.
		ping := binary.BigEndian.AppendUint64(nil, 0x686f7374696c6521)
		if err := p.send(append(tunnel.AppendFrame(nil, tunnel.TypePing, true, ping), tunnel.AppendFrame(nil, tunnel.TypeData, true, icmpEcho(own, srv, 0x4243, 1))...)); err != nil {
			t.Fatal(err)
		}
		// The PONG (control loop) and the echo reply (TUN, mux, writer)
		// take different paths, so either may arrive first.
		isPong := func(f rawFrame) bool { return f.typ == tunnel.TypePong && string(f.payload) == string(ping) }
		isReply := func(f rawFrame) bool {
			q := f.payload
			return f.typ == tunnel.TypeData && len(q) >= 28 && q[9] == 1 && q[20] == 0 &&
				netip.AddrFrom4([4]byte(q[12:16])) == srv && netip.AddrFrom4([4]byte(q[16:20])) == own
		}
		for gotPong, gotReply := false, false; !gotPong || !gotReply; {
			f := p.await(5*time.Second, func(f rawFrame) bool { return isPong(f) || isReply(f) })
			switch {
			case f.err != nil && !gotPong:
				t.Fatalf("no PONG after the spoofed packets: %v", f.err)
			case f.err != nil:
				t.Fatalf("no echo reply to the session's own address %v: %v", own, f.err)
			}
			gotPong = gotPong || isPong(f)
			gotReply = gotReply || isReply(f)
		}
		if err := p.send(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, "done"))); err != nil {
			t.Fatal(err)
		}
		return []hostileResult{{"spoofed inner sources (5x 100.64.0.99, 5x the laptop's 100.64.0.2)", "dropped and counted them; the session stayed up",
			fmt.Sprintf("%s +%v; then PONG and an echo reply from %v to the session's own %v", spoofedDrops, d, srv, own)}}
	})

	hostile("1000 concurrent connection attempts", func(t *testing.T) []hostileResult {
		// Each attempt: TCP connect and a TLS 1.3 ClientHello without a
		// client certificate, 50 from each of 20 addresses, all at once.
		// Each address gets at most its share (handshaking or queued), the
		// rest are refused at accept; the shared slots fill and the others
		// wait their turn. A reserved slot would refuse these clients
		// (they neither resume nor come from a known address), but they
		// only take one after waiting the whole --handshake-queue-wait.
		const attempts, nsrc = 1000, 20
		srcs := h.sources(t, nsrc)
		before, failures := h.refusals(t), h.metric(t, handshakeFailures)
		cfg := h.clientConfig(tls.Certificate{})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var dialed, refusedAtOnce, busy, fullHandshake, timeouts atomic.Int64
		var mu sync.Mutex
		other := map[string]int{}
		dialSlots := make(chan struct{}, 200) // threads switched into the namespace at once
		t0 := time.Now()
		var wg sync.WaitGroup
		for i := range attempts {
			wg.Go(func() {
				dialSlots <- struct{}{}
				c, err := h.dial(ctx, srcs[i%nsrc])
				<-dialSlots
				if err != nil {
					mu.Lock()
					other["dial: "+err.Error()]++
					mu.Unlock()
					return
				}
				defer c.Close()
				dialed.Add(1)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Client(c, cfg)
				err = tc.HandshakeContext(ctx)
				if err == nil {
					_, err = tc.Read(make([]byte, 1))
				}
				switch s := fmt.Sprint(err); {
				case strings.Contains(s, "certificate required"):
					fullHandshake.Add(1)
				case strings.Contains(s, "remote error: tls: internal error"):
					busy.Add(1) // a reserved slot, and no session to resume
				case refusedAtAccept(err):
					refusedAtOnce.Add(1)
				case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
					timeouts.Add(1)
				default:
					mu.Lock()
					other[s]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		took := time.Since(t0)
		if len(other) > 0 || timeouts.Load() > 0 {
			t.Errorf("unexpected outcomes: %d timeouts, others %v", timeouts.Load(), other)
		}
		n := dialed.Load()
		f := h.grewBy(t, handshakeFailures, failures, float64(n))
		if f != float64(n) {
			t.Errorf("%s grew by %v for %d connections, want exactly one failure each", handshakeFailures, f, n)
		}
		d := h.refusalsSince(t, before)
		// The attempts closed before the ServerHello were refused at
		// accept, or (when the client side is slow to send its
		// ClientHello: under the race detector on two cores, a fifth of
		// them) closed at the hello deadline. Every one of them is a
		// counted handshake failure (checked above); a refusal at accept
		// is always seen by its client as a close before the ServerHello.
		atAccept := d["source_handshakes_in_progress"] + d["handshakes_in_progress"] + d["handshake_rate"]
		if atAccept > float64(refusedAtOnce.Load()) {
			t.Errorf("%d attempts were closed before the ServerHello, but the refusals at accept grew by %v (%v)", refusedAtOnce.Load(), atAccept, d)
		}
		lateHello := refusedAtOnce.Load() - int64(atAccept)
		if d["reserved_needs_resumption"] != float64(busy.Load()) {
			t.Errorf("%d attempts were refused with an internal_error alert, but limit=reserved_needs_resumption grew by %v", busy.Load(), d["reserved_needs_resumption"])
		}
		if d["source_handshakes_in_progress"] == 0 {
			t.Errorf("no attempt was refused for the per-source share (refusals %v): 50 at once from one address, want at most %d in progress", d, perSourceHandshakes)
		}
		h.alive(t)
		// A fresh legitimate client gets through at once afterwards.
		tf := time.Now()
		p, err := h.rawSession(t, "fresh-after-flood", h.sources(t, 1)[0])
		if err != nil {
			t.Fatalf("fresh legitimate connection after the flood: %v", err)
		}
		fresh := time.Since(tf)
		p.send(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, "done")))
		return []hostileResult{{fmt.Sprintf("%d concurrent connection attempts (TCP + ClientHello, %d addrs)", attempts, nsrc),
			"refused each source's excess over its share at accept, queued the rest for the slots, failed those for lack of a client cert; stayed up",
			fmt.Sprintf("in %v: %d connected, %d closed before ServerHello (%d of them at the hello deadline), %d refused a reserved slot (internal_error), %d full handshakes refused (certificate required); %s +%v; refusals %v; a fresh client then got CONFIG (%v for %v) in %v",
				took.Round(time.Millisecond), n, refusedAtOnce.Load(), lateHello, busy.Load(), fullHandshake.Load(), handshakeFailures, f,
				d, p.cfg.Addr, "fresh-after-flood", fresh.Round(time.Millisecond))}}
	})

	t.Run("legitimate transfer intact", func(t *testing.T) {
		battery := time.Since(transferStart)
		n, err := stopTransfer()
		if err != nil {
			t.Fatalf("the legitimate transfer, after %v: %v", battery.Round(time.Millisecond), err)
		}
		h.alive(t)
		cli := h.cli.log.String()
		if strings.Contains(cli, "msg=reconnected") || strings.Contains(cli, "session ended") {
			t.Errorf("the legitimate client lost its session during the battery:\n%s", cli)
		}
		if !hasAddr(h.laptop, "tunnelc0", clientAddr) {
			t.Errorf("the legitimate client lost its tunnel address %v", clientAddr)
		}
		if l := logLine(h.srv.log.String(), "panic"); l != "" {
			t.Errorf("server log shows a panic: %s", l)
		}
		if n := h.metric(t, "tunneld_panics_total"); n != 0 {
			t.Errorf("tunneld_panics_total = %v, want 0", n)
		}
		t.Logf("HOSTILE | (legitimate client, throughout) | kept its one session | %d MiB byte-exact, paced at %d KiB/s over the battery's %v; no reconnect; tunneld_panics_total 0 |",
			n>>20, transferRate>>10, battery.Round(100*time.Millisecond))
	})
}

// describeReply summarises what a server sent to a garbage connection
// before hanging up.
func describeReply(got []byte, err error) string {
	end := "EOF"
	if err != nil {
		end = err.Error()
		if i := strings.LastIndex(end, ": "); i >= 0 {
			end = end[i+2:]
		}
	}
	if len(got) >= 7 && got[0] == 0x15 {
		return fmt.Sprintf("TLS alert %d then %s", got[6], end)
	}
	if len(got) > 0 {
		return fmt.Sprintf("%d bytes %q then %s", len(got), got[:min(len(got), 40)], end)
	}
	return "nothing, " + end
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// stallConn passes its first Write (the ClientHello) and drops every
// later one while reporting success, so the client believes its
// handshake complete while the server still waits for the client's
// second flight.
type stallConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *stallConn) Write(b []byte) (int, error) {
	if c.writes.Add(1) == 1 {
		return c.Conn.Write(b)
	}
	return len(b), nil
}
