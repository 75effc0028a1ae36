package main

// End-to-end tests: the real tunneld and tunnelc binaries in network
// namespaces joined by veth pairs, with real TUN devices, routes and TLS.
// They need root; netnstest skips them otherwise (and scripts/test.sh
// refuses to run without root, so CI never skips them).

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds tunneld and tunnelc once per test process.
func binaries(t *testing.T) (tunneld, tunnelc string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tlsvpn-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"tunneld", "tunnelc"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "tlsvpn/cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "tunneld"), filepath.Join(binDir, "tunnelc")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a daemon started in a namespace; it is stopped in t.Cleanup.
type proc struct {
	cmd  *exec.Cmd
	log  *tunneltest.SyncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

func start(t *testing.T, ns *netnstest.NS, name string, args ...string) *proc {
	t.Helper()
	args = ownControl(t, name, args)
	p := &proc{log: new(tunneltest.SyncBuffer), done: make(chan struct{})}
	p.cmd = ns.Cmd(context.Background(), name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("log of %s %s:\n%s", filepath.Base(name), strings.Join(args, " "), p.log)
		}
	})
	return p
}

// ownControl gives a daemon started by a test a control socket of its
// own, unless the test chose one: the daemons of tests in parallel
// namespaces share the file system, and with the default
// /run/tlsvpn/<tun>.sock the second would refuse to start. name may be a
// wrapper (prlimit) with the daemon among its arguments.
func ownControl(t *testing.T, name string, args []string) []string {
	daemon := false
	for _, a := range append([]string{name}, args...) {
		switch {
		case a == "--control" || strings.HasPrefix(a, "--control="):
			return args
		case filepath.Base(a) == "tunneld" || filepath.Base(a) == "tunnelc":
			daemon = true
		}
	}
	if !daemon {
		return args
	}
	return append(slices.Clip(args), "--control", controlPath(t))
}

// controlPath returns a control socket path in a fresh directory that is
// removed after the test. It is short: t.TempDir() carries the test's
// name, and a unix socket path has at most 107 bytes.
func controlPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tlsvpn-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "control.sock")
}

// stop sends SIGTERM and waits (bounded) for the process to exit. It
// returns the exit error. Safe to call twice.
func (p *proc) stop(t *testing.T) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within 10s of SIGTERM", p.cmd.Path)
	}
	return p.err
}

// eventually polls cond (bounded) for effects of another process.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasAddr(ns *netnstest.NS, ifname string, addr netip.Prefix) bool {
	link, err := ns.Handle().LinkByName(ifname)
	if err != nil {
		return false
	}
	addrs, err := ns.Handle().AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, ok := netip.AddrFromSlice(a.IP); ok {
			ones, _ := a.Mask.Size()
			if netip.PrefixFrom(p.Unmap(), ones) == addr {
				return true
			}
		}
	}
	return false
}

// env is the shared topology: a server namespace with one veth to each of
// two laptop namespaces, a PKI, and a running tunneld.
type env struct {
	tunneld, tunnelc string
	pki              string
	server           *netnstest.NS
	laptops          [2]*netnstest.NS
	serverIPs        [2]string // server's underlay address facing each laptop
	srv              *proc
}

const metricsAddr = "127.0.0.1:9100"

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{server: netnstest.New(t)}
	e.tunneld, e.tunnelc = binaries(t)
	for i := range e.laptops {
		e.laptops[i] = netnstest.New(t)
		srvIP := netip.AddrFrom4([4]byte{198, 18, 0, byte(4*i + 1)})
		netnstest.Veth(t, e.server, netip.PrefixFrom(srvIP, 30), e.laptops[i], netip.PrefixFrom(srvIP.Next(), 30))
		e.serverIPs[i] = srvIP.String()
	}
	e.pki = filepath.Join(t.TempDir(), "pki")
	e.run(t, e.tunneld, "pki", "init", "--dir", e.pki)
	e.run(t, e.tunneld, "pki", "issue", "--dir", e.pki, "--server", "--name", "server", "--ip", e.serverIPs[0], "--ip", e.serverIPs[1])
	for _, n := range []string{"laptop1", "laptop2"} {
		e.run(t, e.tunneld, "pki", "issue", "--dir", e.pki, "--client", "--name", n)
	}
	e.srv = start(t, e.server, e.tunneld, "--listen", "0.0.0.0:443",
		"--cert", e.file("server.crt"), "--key", e.file("server.key"), "--ca", e.file("ca.crt"),
		"--subnet", "100.64.0.0/24", "--subnet6", "fd00:64::/64", "--route", "198.18.10.0/24", "--keepalive", "2s",
		"--state-dir", filepath.Join(t.TempDir(), "state"),
		"--metrics", metricsAddr, "--log-level", "debug")
	eventually(t, "tunneld listening", func() bool { return strings.Contains(e.srv.log.String(), "msg=listening") })
	return e
}

func (e *env) file(name string) string { return filepath.Join(e.pki, name) }

func (e *env) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// connect starts tunnelc in laptop i with certificate name and waits for
// its tunnel address.
func (e *env) connect(t *testing.T, i int, name string, want netip.Prefix, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--server", e.serverIPs[i] + ":443",
		"--cert", e.file(name + ".crt"), "--key", e.file(name + ".key"), "--ca", e.file("ca.crt"), "--log-level", "debug"}, extra...)
	p := start(t, e.laptops[i], e.tunnelc, args...)
	eventually(t, fmt.Sprintf("%s to get %v", name, want), func() bool { return hasAddr(e.laptops[i], "tunnelc0", want) })
	return p
}

// metric scrapes tunneld's metrics endpoint and returns one sample.
func (e *env) metric(t *testing.T, series string) float64 {
	t.Helper()
	return scrapeMetric(t, e.server, metricsAddr, series)
}

// scrapeMetric scrapes the metrics endpoint at addr inside ns and returns
// one sample.
func scrapeMetric(t *testing.T, ns *netnstest.NS, addr, series string) float64 {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return ns.Dial(ctx, network, a)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", series)
	return math.NaN()
}

// transfer sends n pseudo-random bytes from the dialer in ns "from" to a
// listener in ns "to" on addr and checks that the receiver got exactly
// them (SHA-256 of both sides).
func transfer(t *testing.T, from, to *netnstest.NS, addr string, n int64) time.Duration {
	t.Helper()
	x := startTransfer(t, from, to, addr, n, 0)
	if err := <-x.done; err != nil {
		t.Fatal(err)
	}
	return x.elapsed
}

// xfer is a transfer under way (startTransfer).
type xfer struct {
	sent    atomic.Int64  // bytes written to the connection so far
	done    chan error    // its result: nil when the receiver got exactly what was sent
	elapsed time.Duration // from the connection to the receiver's end, valid after done
}

// startTransfer starts sending n pseudo-random bytes, at most rate a
// second (0: as fast as it goes), from the dialer in ns "from" to a
// listener in ns "to" on addr, and returns at once. Its done reports
// whether the receiver got exactly them (SHA-256 of both sides) within
// 2 minutes.
func startTransfer(t *testing.T, from, to *netnstest.NS, addr string, n, rate int64) *xfer {
	t.Helper()
	ln := to.Listen(t, "tcp", addr)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		m, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = m, err
		got <- r
	}()
	x := &xfer{done: make(chan error, 1)}
	go func() {
		x.done <- x.run(from, addr, n, rate, func() (int64, [32]byte, error) {
			r := <-got
			return r.n, r.sum, r.err
		})
		ln.Close()
	}()
	return x
}

// run is the sending side of startTransfer; received waits for what the
// listener got.
func (x *xfer) run(from *netnstest.NS, addr string, n, rate int64, received func() (int64, [32]byte, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	start := time.Now()
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(newPRNG(), n), h)
	buf := make([]byte, 64<<10)
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if _, err := c.Write(buf[:m]); err != nil {
				return fmt.Errorf("send to %s after %d bytes: %v", addr, x.sent.Load(), err)
			}
			sent := x.sent.Add(int64(m))
			if rate > 0 {
				time.Sleep(time.Until(start.Add(time.Duration(sent * int64(time.Second) / rate))))
			}
		}
		if err == io.EOF {
			break
		}
	}
	c.(*net.TCPConn).CloseWrite()
	got, sum, err := received()
	x.elapsed = time.Since(start)
	if err != nil {
		return fmt.Errorf("receive on %s: %v", addr, err)
	}
	var want [32]byte
	copy(want[:], h.Sum(nil))
	if got != n || sum != want {
		return fmt.Errorf("transfer to %s: received %d bytes with sha256 %x, sent %d with %x", addr, got, sum, n, want)
	}
	return nil
}

// prng is a fast deterministic byte stream (ChaCha8) so transfers do not
// wait on the system's random source.
type prng struct{ r *mrand.ChaCha8 }

func newPRNG() io.Reader {
	var seed [32]byte
	rand.Read(seed[:])
	return prng{mrand.NewChaCha8(seed)}
}

func (p prng) Read(b []byte) (int, error) { return p.r.Read(b) }

func ping(t *testing.T, ns *netnstest.NS, args ...string) error {
	t.Helper()
	out, err := ns.Cmd(context.Background(), "ping", append([]string{"-c", "3", "-i", "0.2", "-W", "2"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %v: %v\n%s", args, err, out)
	}
	return nil
}

func TestNetNSTunnel(t *testing.T) {
	e := newEnv(t)
	laptop1, laptop2 := e.laptops[0], e.laptops[1]
	addr1 := netip.MustParsePrefix("100.64.0.2/24")
	// The laptop's own default is reno (a per-namespace sysctl), so that
	// the outer connection shows whether tunnelc chose bbr itself.
	laptop1.Run(t, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=reno")
	c1 := e.connect(t, 0, "laptop1", addr1)

	t.Run("outer connection uses bbr by default", func(t *testing.T) {
		if avail, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control"); !strings.Contains(string(avail), "bbr") {
			t.Skipf("this kernel has no bbr (available: %s)", strings.TrimSpace(string(avail)))
		}
		for _, side := range []struct {
			ns     *netnstest.NS
			filter string
		}{{laptop1, "dport = :443"}, {e.server, "sport = :443"}} {
			out := side.ns.Run(t, "ss", "-Htin", "state", "established", side.filter)
			if !slices.Contains(strings.Fields(out), "bbr") {
				t.Errorf("outer connection (%s) does not use bbr:\n%s", side.filter, out)
			}
		}
	})

	t.Run("connected with TLS 1.3 and X25519MLKEM768", func(t *testing.T) {
		eventually(t, "connected log line", func() bool { return strings.Contains(c1.log.String(), "msg=connected") })
		eventually(t, "record hand-over log line", func() bool { return strings.Contains(c1.log.String(), "record layer") })
		line := c1.log.String()
		for _, want := range []string{`tls_version="TLS 1.3"`, "curve=X25519MLKEM768", "cipher_suite=TLS_AES_", "alpn=tlsvpn/1",
			"data phase handed over to tlsvpn's TLS 1.3 record layer"} {
			if !strings.Contains(line, want) {
				t.Errorf("client log lacks %s:\n%s", want, line)
			}
		}
	})

	t.Run("ping across", func(t *testing.T) {
		if err := ping(t, laptop1, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pushed route installed", func(t *testing.T) {
		out := laptop1.Run(t, "ip", "route", "show", "198.18.10.0/24")
		if !strings.Contains(out, "dev tunnelc0") || !strings.Contains(out, "proto "+strconv.Itoa(routing.RouteProtocol)) {
			t.Fatalf("route 198.18.10.0/24 = %q, want it via tunnelc0 with proto %d", out, routing.RouteProtocol)
		}
	})

	t.Run("dual stack: IPv6 inside the tunnel", func(t *testing.T) {
		addr6 := netip.MustParsePrefix("fd00:64::2/64")
		eventually(t, "client IPv6 tunnel address", func() bool { return hasAddr(laptop1, "tunnelc0", addr6) })
		if err := ping(t, laptop1, "-6", "fd00:64::1"); err != nil {
			t.Fatal(err)
		}
		transfer(t, laptop1, e.server, "[fd00:64::1]:5011", 8<<20)
		transfer(t, e.server, laptop1, "[fd00:64::2]:5012", 8<<20)
		// IPv6 anti-spoofing: a source outside the client's /128 is dropped.
		laptop1.Run(t, "ip", "-6", "addr", "add", "fd00:64::99/128", "dev", "tunnelc0", "nodad")
		defer laptop1.Run(t, "ip", "-6", "addr", "del", "fd00:64::99/128", "dev", "tunnelc0")
		series := `tunneld_dropped_packets_total{reason="spoofed_source"}`
		before := e.metric(t, series)
		if err := ping(t, laptop1, "-6", "-I", "fd00:64::99", "fd00:64::1"); err == nil {
			t.Fatal("IPv6 ping from a spoofed source got answers")
		}
		if got := e.metric(t, series); got < before+3 {
			t.Fatalf("%s = %v, want >= %v", series, got, before+3)
		}
	})

	const size = 50 << 20
	t.Run("50MB laptop to server byte-exact", func(t *testing.T) {
		d := transfer(t, laptop1, e.server, "100.64.0.1:5001", size)
		t.Logf("50 MB up in %v (%.0f Mbit/s)", d, float64(size*8)/d.Seconds()/1e6)
	})
	t.Run("50MB server to laptop byte-exact", func(t *testing.T) {
		d := transfer(t, e.server, laptop1, "100.64.0.2:5002", size)
		t.Logf("50 MB down in %v (%.0f Mbit/s)", d, float64(size*8)/d.Seconds()/1e6)
	})

	outer := t
	t.Run("second client without offloads gets its own address; both work", func(t *testing.T) {
		// laptop1 carries GSO super-packets, laptop2 (--no-offload) does
		// not: the server falls back to splitting for everyone while
		// laptop2 is connected, and both directions stay byte-exact.
		// laptop2 also keeps its data phase on crypto/tls's record layer
		// while the server uses its own: the two must interoperate.
		l2 := e.connect(outer, 1, "laptop2", netip.MustParsePrefix("100.64.0.3/24"), "--no-offload", "--stdlib-tls-records")
		if err := ping(t, laptop2, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			from, to *netnstest.NS
			addr     string
		}{
			{laptop2, e.server, "100.64.0.1:5003"},
			{e.server, laptop2, "100.64.0.3:5005"},
			{laptop1, e.server, "100.64.0.1:5006"},
			{e.server, laptop1, "100.64.0.2:5007"},
		} {
			transfer(t, c.from, c.to, c.addr, 8<<20)
		}
		srvLog := e.srv.log.String()
		if !strings.Contains(srvLog, "peer=laptop1 tunnel_addr=100.64.0.2/24 gso=true") ||
			!strings.Contains(srvLog, "peer=laptop2 tunnel_addr=100.64.0.3/24 gso=false") {
			t.Errorf("server log does not show laptop1 with GSO and laptop2 without:\n%s", srvLog)
		}
		eventually(t, "laptop2 (--stdlib-tls-records) to keep crypto/tls", func() bool {
			return strings.Contains(l2.log.String(), "data phase on crypto/tls's record layer")
		})
		if got := e.metric(t, "tunneld_record_handovers_total"); got < 2 {
			t.Errorf("tunneld_record_handovers_total = %v, want >= 2 (laptop1 and laptop2)", got)
		}
		// Both were new identities: their leases went through the journal.
		if got := e.metric(t, "tunneld_leases_written_total"); got < 2 {
			t.Errorf("tunneld_leases_written_total = %v, want >= 2 (laptop1 and laptop2)", got)
		}
		if got := e.metric(t, "tunneld_lease_sync_seconds_count"); got < 1 {
			t.Errorf("tunneld_lease_sync_seconds_count = %v, want >= 1", got)
		}
	})

	t.Run("bad clients are refused and counted", func(t *testing.T) {
		other := certstest.NewCA(t)
		good, err := certs.ClientConfig(e.file("laptop2.crt"), e.file("laptop2.key"), e.file("ca.crt"), e.serverIPs[1])
		if err != nil {
			t.Fatal(err)
		}
		tls12 := good.Clone()
		tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		otherCA := other.ClientConfig(t, "laptop2", e.serverIPs[1])
		otherCA.RootCAs = good.RootCAs // it trusts the server; the server must not trust it
		// Go's client sends no certificate whose issuer the server did not
		// list; present it anyway, as an attacker would.
		foreign := otherCA.Certificates[0]
		otherCA.Certificates = nil
		otherCA.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
		cases := []struct {
			name string
			cfg  *tls.Config
			want string
		}{
			{"client certificate from another CA", otherCA, "unknown certificate authority"},
			{"TLS 1.2 only client", tls12, "protocol version not supported"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := e.metric(t, "tunneld_handshake_failures_total")
				err := tlsDial(t, laptop2, e.serverIPs[1]+":443", tc.cfg)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("handshake error = %v, want refusal with %q", err, tc.want)
				}
				eventually(t, "handshake failure counted", func() bool {
					return e.metric(t, "tunneld_handshake_failures_total") > before
				})
			})
		}
	})

	t.Run("garbage and half-open connections do not disturb the tunnel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var conns []net.Conn
		for range 5 { // half-open: connect and say nothing
			c, err := laptop2.Dial(ctx, "tcp", e.serverIPs[1]+":443")
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		failures := e.metric(t, "tunneld_handshake_failures_total")
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		for range 3 {
			c, err := laptop2.Dial(ctx, "tcp", e.serverIPs[1]+":443")
			if err != nil {
				t.Fatal(err)
			}
			c.Write(junk)
			c.Close()
		}
		transfer(t, laptop1, e.server, "100.64.0.1:5004", 8<<20)
		if err := ping(t, laptop1, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the 3 garbage connections counted as failed handshakes", func() bool {
			return e.metric(t, "tunneld_handshake_failures_total") >= failures+3
		})
	})

	t.Run("spoofed inner source is dropped and counted", func(t *testing.T) {
		laptop1.Run(t, "ip", "addr", "add", "100.64.0.99/32", "dev", "tunnelc0")
		defer laptop1.Run(t, "ip", "addr", "del", "100.64.0.99/32", "dev", "tunnelc0")
		series := `tunneld_dropped_packets_total{reason="spoofed_source"}`
		before := e.metric(t, series)
		if err := ping(t, laptop1, "-I", "100.64.0.99", "100.64.0.1"); err == nil {
			t.Fatal("ping from a spoofed source got answers")
		}
		if got := e.metric(t, series); got < before+3 {
			t.Fatalf("%s = %v, want >= %v", series, got, before+3)
		}
		if err := ping(t, laptop1, "100.64.0.1"); err != nil {
			t.Fatalf("legitimate traffic after spoofing: %v", err)
		}
	})

	t.Run("tunnelc removes its address and routes on exit", func(t *testing.T) {
		if err := c1.stop(t); err != nil {
			t.Fatalf("tunnelc exit: %v", err)
		}
		if _, err := laptop1.Handle().LinkByName("tunnelc0"); err == nil {
			t.Error("tunnelc0 still exists after exit")
		}
		if out := laptop1.Run(t, "ip", "route", "show", "proto", strconv.Itoa(routing.RouteProtocol)); strings.TrimSpace(out) != "" {
			t.Errorf("routes left after exit:\n%s", out)
		}
		if out := laptop1.Run(t, "ip", "addr", "show"); strings.Contains(out, "100.64.") {
			t.Errorf("tunnel address left after exit:\n%s", out)
		}
		if !strings.Contains(c1.log.String(), "deleted address") {
			t.Errorf("tunnelc did not report removing its address:\n%s", c1.log.String())
		}
	})

	t.Run("reconnect keeps the address; server shutdown tells the client", func(t *testing.T) {
		c1 = e.connect(t, 0, "laptop1", addr1) // same identity, same address
		if err := e.srv.stop(t); err != nil {
			t.Fatalf("tunneld exit: %v", err)
		}
		eventually(t, "client logs the server's shutdown", func() bool {
			return strings.Contains(c1.log.String(), "peer closed the session: shutdown")
		})
		// The client keeps its device, address and routes while it tries
		// to reconnect, so applications see a pause, not an error.
		eventually(t, "client retrying", func() bool { return strings.Contains(c1.log.String(), "connect failed") })
		if !hasAddr(laptop1, "tunnelc0", addr1) {
			t.Error("tunnelc0 lost its address while reconnecting")
		}
	})
}

// tlsDial runs a TLS handshake from ns and reads once, which is when a TLS
// 1.3 client learns that the server rejected its certificate.
func tlsDial(t *testing.T, ns *netnstest.NS, addr string, cfg *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	cfg = cfg.Clone()
	cfg.NextProtos = []string{tunnel.ALPN}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// TestNetNSCleanup: after a crash, --cleanup removes the routes,
// addresses and nftables table of its own instance (--tun), bypass routes
// and the shared table of older versions when no running instance owns
// them, and nothing of another instance or anyone else.
func TestNetNSCleanup(t *testing.T) {
	tunneld, tunnelc := binaries(t)
	for _, bin := range []string{tunneld, tunnelc} {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			ns := netnstest.New(t)
			p116, p117 := strconv.Itoa(routing.RouteProtocol), strconv.Itoa(routing.BypassProtocol)
			// What a crashed instance "tvtc0" left (its TUN device made
			// persistent so that something is left on it), and a running
			// instance "tvtlive0".
			for i, tun := range []string{"tvtc0", "tvtlive0"} {
				ns.Run(t, "ip", "tuntap", "add", "dev", tun, "mode", "tun")
				ns.Run(t, "ip", "link", "set", tun, "up")
				ns.Run(t, "ip", "addr", "add", fmt.Sprintf("100.64.%d.1/24", i), "dev", tun)
				ns.Run(t, "ip", "route", "add", fmt.Sprintf("198.18.%d.0/24", 200+i), "dev", tun, "proto", p116)
				ns.Run(t, "nft", "add", "table", "inet", routing.FirewallTable(tun))
			}
			// A bypass route of a gone instance (its metric names no
			// link), and the shared table of an older version.
			ns.Run(t, "ip", "route", "add", "198.18.210.1/32", "dev", "lo", "proto", p117, "metric", "99999")
			ns.Run(t, "nft", "add", "table", "inet", routing.LegacyFirewallTable)
			ns.Run(t, "ip", "route", "add", "198.18.220.0/24", "dev", "lo", "proto", "static")
			ns.Run(t, "nft", "add", "table", "inet", "someone_else")

			out := ns.Run(t, bin, "--cleanup", "--tun", "tvtc0")
			if !strings.Contains(out, "cleanup done") || !strings.Contains(out, "table=\"inet tlsvpn-tvtc0\"") {
				t.Errorf("--cleanup output lacks its summary:\n%s", out)
			}
			if got := ns.Run(t, "ip", "route", "show", "proto", p116); strings.Contains(got, "tvtc0") || !strings.Contains(got, "198.18.201.0/24 dev tvtlive0") {
				t.Errorf("after --cleanup, routes with proto %s:\n%s\nwant only tvtlive0's", p116, got)
			}
			if got := ns.Run(t, "ip", "route", "show", "proto", p117); strings.TrimSpace(got) != "" {
				t.Errorf("bypass route of a gone instance survived --cleanup: %s", got)
			}
			if hasAddr(ns, "tvtc0", netip.MustParsePrefix("100.64.0.1/24")) || !hasAddr(ns, "tvtlive0", netip.MustParsePrefix("100.64.1.1/24")) {
				t.Errorf("after --cleanup, addresses:\n%s\nwant tvtc0's gone, tvtlive0's kept", ns.Run(t, "ip", "addr"))
			}
			if got := ns.Run(t, "ip", "route", "show", "198.18.220.0/24"); !strings.Contains(got, "198.18.220.0/24") {
				t.Error("--cleanup removed a route that is not ours")
			}
			want := "table inet tlsvpn-tvtlive0\ntable inet someone_else\n"
			if got := ns.Run(t, "nft", "list", "tables"); got != want {
				t.Errorf("after --cleanup, nft list tables:\n%s\nwant:\n%s", got, want)
			}
			// Running it again on a clean system is fine.
			ns.Run(t, bin, "--cleanup", "--tun", "tvtc0")
		})
	}
}
