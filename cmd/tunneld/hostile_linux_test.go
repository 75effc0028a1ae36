package main

// Hostile inputs against a live tunneld. While a legitimate client moves a
// long paced transfer through the tunnel, an attacker namespace throws
// garbage, slow and outdated handshakes, bad certificates, protocol abuse
// from authenticated peers and a connection flood at the server. Each input
// must be refused or contained, with its evidence logged as a "HOSTILE"
// line; afterwards the transfer must be byte-exact and the legitimate
// client must never have reconnected.

import (
	"context"
	"crypto/rand"
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
	// attackerSources is how many extra /32 source addresses the attacker
	// holds (198.18.1.10 and up), so that each input comes from addresses
	// of its own and the per-source rate limit of one input does not
	// decide the outcome of the next.
	attackerSources = 100

	hostileMaxHandshakes    = 64
	hostileHandshakeTimeout = 2 * time.Second

	handshakeFailures = "tunneld_handshake_failures_total"
	protocolErrors    = "tunneld_protocol_errors_total"
	spoofedDrops      = `tunneld_dropped_packets_total{reason="spoofed_source"}`
	rxBytes           = "tunneld_rx_bytes_total"
)

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
	// capRefused counts the connections refused at accept for the
	// handshake cap before the flood (the slowloris' excess).
	capRefused int
}

func newHostileEnv(t *testing.T) *hostileEnv {
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
	run("pki", "issue", "--dir", p.pki, "--server", "--name", "server", "--ip", "198.18.0.1", "--ip", attackerSrv)
	run("pki", "issue", "--dir", p.pki, "--client", "--name", "laptop")
	run("pki", "issue", "--dir", p.pki, "--client", "--name", "revoked")
	p.srvArgs = []string{"--listen", "0.0.0.0:443",
		"--cert", p.pki + "/server.crt", "--key", p.pki + "/server.key", "--ca", p.pki + "/ca.crt",
		"--subnet", "100.64.0.0/24", "--keepalive", "2s", "--state-dir", p.state, "--log-level", "debug",
		"--crl", p.pki + "/crl.pem", "--crl-check", "200ms", "--metrics", metricsAddr,
		"--handshake-timeout", hostileHandshakeTimeout.String(), "--max-handshakes", strconv.Itoa(hostileMaxHandshakes)}
	p.startServer(t)
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

// probeLimits reads the limiter's refusal totals, which tunneld exports
// only in its "refusing connection" warnings, at most one a second. Once
// that second has passed since the last one, it connects from a new
// address one more time than the per-source burst allows, so that the
// last connection is refused and logged with the totals.
func (h *hostileEnv) probeLimits(t *testing.T) (refusedRate, refusedHandshakes int) {
	t.Helper()
	const msg = "too many handshakes from this source"
	var last time.Time
	for _, l := range strings.Split(h.srv.log.String(), "\n") {
		if strings.Contains(l, msg) {
			if ts, err := time.Parse(time.RFC3339Nano, logAttr(l, "time")); err == nil {
				last = ts
			}
		}
	}
	time.Sleep(time.Until(last.Add(1100 * time.Millisecond))) // the server's log limiter
	lines := strings.Count(h.srv.log.String(), msg)
	src := h.sources(t, 1)[0]
	for range 2*10 + 1 { // tunneld's burst is twice --handshake-rate (default 10)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		c, err := h.dial(ctx, src)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	var line string
	eventually(t, "the probe refused by the rate limit", func() bool {
		log := h.srv.log.String()
		if strings.Count(log, msg) == lines {
			return false
		}
		ls := strings.Split(strings.TrimSpace(log), "\n")
		for i := len(ls) - 1; i >= 0; i-- {
			if strings.Contains(ls[i], msg) {
				line = ls[i]
				break
			}
		}
		return true
	})
	if !strings.Contains(line, src.String()+":") {
		t.Errorf("rate-limit refusal logged for another source than the probe's %v: %s", src, line)
	}
	refusedRate, _ = strconv.Atoi(logAttr(line, "limits.refused_rate"))
	refusedHandshakes, _ = strconv.Atoi(logAttr(line, "limits.refused_handshakes"))
	return refusedRate, refusedHandshakes
}

// hostileResult is one row of the closing table.
type hostileResult struct{ input, did, evidence string }

func TestNetNSHostile(t *testing.T) {
	h := newHostileEnv(t)
	// The legitimate transfer outlasts the whole battery (about 5 s; the
	// transfer takes 12 s at this rate) and must finish byte-exact.
	const transferSize, transferRate = 48 << 20, 4 << 20
	res := h.pacedTransfer(t, 6101, transferSize, transferRate)
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

	hostile("slowloris", func(t *testing.T) []hostileResult {
		// 200 connections from 10 addresses (20 each: within the
		// per-source burst, so the rate limit does not interfere) that
		// dribble a ClientHello record header one byte a second.
		const conns, perSource = 200, 20
		srcs := h.sources(t, conns/perSource)
		before := h.metric(t, handshakeFailures)
		hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
		type result struct {
			after time.Duration
			err   error
		}
		results := make([]result, conns)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for i := range conns {
			wg.Go(func() {
				c, err := h.dial(ctx, srcs[i/perSource])
				if err != nil {
					results[i].err = err
					return
				}
				defer c.Close()
				t0 := time.Now()
				hungUp := make(chan struct{})
				go func() {
					for j := 0; ; j++ {
						if _, err := c.Write(hello[j%len(hello) : j%len(hello)+1]); err != nil {
							return
						}
						select {
						case <-hungUp:
							return
						case <-time.After(time.Second):
						}
					}
				}()
				c.SetReadDeadline(time.Now().Add(4 * hostileHandshakeTimeout))
				_, err = io.Copy(io.Discard, c)
				close(hungUp)
				results[i] = result{time.Since(t0), err}
			})
		}
		wg.Wait()
		var atOnce, timedOut int
		var slowest time.Duration
		for i, r := range results {
			switch {
			case errors.Is(r.err, os.ErrDeadlineExceeded):
				t.Errorf("slowloris connection %d still open after %v", i, r.after.Round(time.Millisecond))
			case r.after < hostileHandshakeTimeout/2:
				atOnce++
			case r.after < hostileHandshakeTimeout+2*time.Second:
				timedOut++
				slowest = max(slowest, r.after)
			default:
				t.Errorf("slowloris connection %d closed after %v (err %v), want at once or at the %v handshake timeout", i, r.after, r.err, hostileHandshakeTimeout)
			}
		}
		if timedOut != hostileMaxHandshakes || atOnce != conns-hostileMaxHandshakes {
			t.Errorf("%d connections held until the handshake timeout and %d refused at once, want %d and %d (--max-handshakes %d)",
				timedOut, atOnce, hostileMaxHandshakes, conns-hostileMaxHandshakes, hostileMaxHandshakes)
		}
		h.capRefused += atOnce
		d := h.grewBy(t, handshakeFailures, before, conns)
		log := h.srv.log.String()
		capLine := logLine(log, "too many handshakes in progress")
		toLine := logLine(log, `msg="handshake failed"`, "198.18.1.", "deadline")
		if capLine == "" || toLine == "" {
			t.Errorf("server log lacks the handshake-cap refusal or the handshake timeout:\n%s", log)
		}
		return []hostileResult{{fmt.Sprintf("slowloris (%d conns from %d addrs, 1 byte/s)", conns, len(srcs)),
			fmt.Sprintf("held %d (the --max-handshakes cap), refused the other %d at accept; closed the held ones at --handshake-timeout %v", timedOut, atOnce, hostileHandshakeTimeout),
			fmt.Sprintf("%d closed at once, %d closed after <= %v; %s +%v; log: %q, err=%q", atOnce, timedOut, slowest.Round(time.Millisecond),
				handshakeFailures, d, logAttr(capLine, "msg"), logAttr(toLine, "err"))}}
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
		const attempts, nsrc = 1000, 20
		srcs := h.sources(t, nsrc)
		before := h.metric(t, handshakeFailures)
		cfg := h.clientConfig(tls.Certificate{})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var dialed, refused, fullHandshake, timeouts atomic.Int64
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
				case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(s, "connection reset"):
					refused.Add(1)
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
		d := h.grewBy(t, handshakeFailures, before, float64(n))
		if d != float64(n) {
			t.Errorf("%s grew by %v for %d connections, want exactly one failure each", handshakeFailures, d, n)
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
		rate, hs := h.probeLimits(t)
		rate-- // the probe's own refusal
		hs -= h.capRefused
		if int64(rate+hs) != refused.Load() {
			t.Errorf("limiter refused %d (rate) + %d (handshake cap) during the flood, but %d attempts were closed before ServerHello", rate, hs, refused.Load())
		}
		return []hostileResult{{fmt.Sprintf("%d concurrent connection attempts (TCP + ClientHello, %d addrs)", attempts, nsrc),
			"refused most at accept (rate limit / handshake cap), failed the rest for lack of a client cert; stayed up",
			fmt.Sprintf("in %v: %d connected, %d closed before ServerHello, %d full handshakes refused (certificate required); %s +%v; of those the limiter refused %d for the per-source rate and %d for the handshake cap (its totals, read from a probe's log line); a fresh client then got CONFIG (%v for %v) in %v",
				took.Round(time.Millisecond), n, refused.Load(), fullHandshake.Load(), handshakeFailures, d,
				rate, hs, p.cfg.Addr, "fresh-after-flood", fresh.Round(time.Millisecond))}}
	})

	t.Run("legitimate transfer intact", func(t *testing.T) {
		select {
		case err := <-res:
			t.Fatalf("the transfer ended (err %v) after %v, before the battery did: lower transferRate so it spans every input", err, time.Since(transferStart))
		default:
		}
		battery := time.Since(transferStart)
		if err := waitTransfer(t, res); err != nil {
			t.Fatal(err)
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
		t.Logf("HOSTILE | (legitimate client, throughout) | kept its one session | %d MiB byte-exact at %d KiB/s over %v, battery took %v; no reconnect; tunneld_panics_total 0 |",
			transferSize>>20, transferRate>>10, time.Since(transferStart).Round(time.Second), battery.Round(time.Second))
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
