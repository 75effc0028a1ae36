package tunnel_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"tlsvpn/tun"
	"tlsvpn/tunnel"

	"tlsvpn/certs/certstest"
	"tlsvpn/tunnel/tunneltest"
)

var serverAddr = netip.MustParseAddr("100.64.0.1")

func TestPairExchangesPackets(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{
		Routes: []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")},
	})
	cl := srv.StartClient(t, "laptop")
	if got, want := cl.Config.Addr, netip.MustParsePrefix("100.64.0.2/24"); got != want {
		t.Fatalf("client address = %v, want %v", got, want)
	}
	if cl.Config.ServerAddr != serverAddr || cl.Config.MTU != 1500 || len(cl.Config.Routes) != 1 {
		t.Fatalf("client config = %+v", cl.Config)
	}
	me := cl.Config.Addr.Addr()

	// Client -> server, a batch of several packets.
	var sent [][]byte
	for i := range 10 {
		p := tunneltest.UDP4(me, serverAddr, []byte(fmt.Sprintf("up %d", i)))
		sent = append(sent, p)
		cl.Dev.Inbound <- p
	}
	for _, p := range sent {
		tunneltest.Expect(t, srv.Dev.Outbound, p)
	}
	// Server -> client, including one big packet framed in place.
	small := tunneltest.UDP4(serverAddr, me, []byte("down"))
	big := tunneltest.UDP4(serverAddr, me, bytes.Repeat([]byte{7}, 9000))
	srv.Dev.Inbound <- small
	srv.Dev.Inbound <- big
	srv.Dev.Inbound <- small
	tunneltest.Expect(t, cl.Dev.Outbound, small)
	tunneltest.Expect(t, cl.Dev.Outbound, big)
	tunneltest.Expect(t, cl.Dev.Outbound, small)

	// Both data phases ran on the record layer (record.go), not crypto/tls.
	if s, c := srv.Stats.RecordHandOvers.Load(), cl.Stats.RecordHandOvers.Load(); s != 1 || c != 1 {
		t.Fatalf("record hand-overs: server %d, client %d; want 1 each", s, c)
	}
}

func TestPairDropsSpoofedSource(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	cl := srv.StartClient(t, "laptop")
	me := cl.Config.Addr.Addr()
	spoofed := tunneltest.UDP4(netip.MustParseAddr("100.64.0.77"), serverAddr, []byte("spoof"))
	good := tunneltest.UDP4(me, serverAddr, []byte("good"))
	cl.Dev.Inbound <- spoofed
	cl.Dev.Inbound <- good
	// The next packet the server delivers is the good one: the spoofed one
	// was dropped, not delayed.
	tunneltest.Expect(t, srv.Dev.Outbound, good)
	if n := srv.Stats.DropSpoofed.Load(); n != 1 {
		t.Fatalf("DropSpoofed = %d, want 1", n)
	}
}

func TestPairTwoClientsAndReplacement(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	a := srv.StartClient(t, "alice")
	b := srv.StartClient(t, "bob")
	if a.Config.Addr == b.Config.Addr {
		t.Fatalf("two clients got the same address %v", a.Config.Addr)
	}
	for _, c := range []*tunneltest.Client{a, b} {
		p := tunneltest.UDP4(serverAddr, c.Config.Addr.Addr(), []byte("hi"))
		srv.Dev.Inbound <- p
		tunneltest.Expect(t, c.Dev.Outbound, p)
	}
	// Alice connects again: same address, and traffic goes to the new
	// session. (The old client would reconnect after its backoff, a
	// minute here; it is stopped first.)
	a2 := srv.StartClient(t, "alice")
	if a2.Config.Addr != a.Config.Addr {
		t.Fatalf("reconnect got %v, want the same address %v", a2.Config.Addr, a.Config.Addr)
	}
	tunneltest.Eventually(t, func() bool { return srv.Stats.SessionsClosed.Load() == 1 },
		"SessionsClosed = %d, want 1 (the replaced session)", &srv.Stats.SessionsClosed)
	if err := a.Stop(); err != nil {
		t.Fatalf("replaced client: %v", err)
	}
	p := tunneltest.UDP4(serverAddr, a2.Config.Addr.Addr(), []byte("to new"))
	srv.Dev.Inbound <- p
	tunneltest.Expect(t, a2.Dev.Outbound, p)
	if got := srv.Stats.SessionsReplaced.Load(); got != 1 {
		t.Fatalf("SessionsReplaced = %d, want 1", got)
	}
}

func TestPairNegotiatesTLS13AndHybridGroup(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	res := certstest.Handshake(t, srv.CA.ServerConfig(t, "server"), srv.CA.ClientConfig(t, "laptop", "server"))
	if res.ClientErr != nil || res.ServerErr != nil {
		t.Fatalf("handshake: client %v, server %v", res.ClientErr, res.ServerErr)
	}
	if res.Client.Version != tls.VersionTLS13 || res.Client.CurveID != tls.X25519MLKEM768 {
		t.Fatalf("negotiated %s with %v, want TLS 1.3 with X25519MLKEM768",
			tls.VersionName(res.Client.Version), res.Client.CurveID)
	}
}

func TestPairRefusesBadClients(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	good := srv.StartClient(t, "good")
	other := certstest.NewCA(t)
	tls12 := srv.CA.ClientConfig(t, "old", "server")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"other CA", other.ClientConfig(t, "intruder", "server")},
		{"TLS 1.2", tls12},
		{"expired", certsExpired(t, srv.CA)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := srv.TryClient(t, tt.cfg); err == nil {
				t.Fatal("client connected, want refusal")
			}
			tunneltest.Eventually(t, func() bool { return srv.Stats.HandshakeFailures.Load() == uint64(i+1) },
				"HandshakeFailures = %d, want %d", &srv.Stats.HandshakeFailures, i+1)
		})
	}
	// The established client did not notice.
	p := tunneltest.UDP4(serverAddr, good.Config.Addr.Addr(), []byte("still here"))
	srv.Dev.Inbound <- p
	tunneltest.Expect(t, good.Dev.Outbound, p)
}

func certsExpired(t *testing.T, ca *certstest.CA) *tls.Config {
	cfg := ca.ClientConfig(t, "expired", "server")
	cfg.Certificates = []tls.Certificate{ca.ExpiredClientCert(t, "expired")}
	return cfg
}

func TestPairClientShutdownIsClean(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	cl := srv.StartClient(t, "laptop")
	if err := cl.Stop(); err != nil {
		t.Fatalf("client Run after shutdown = %v, want nil", err)
	}
}

// BenchmarkPairThroughput moves 1400-byte packets from the client's device
// through real TLS over loopback to the server's device, 256 packets in
// flight at most (the queues drop rather than block, so an unpaced sender
// would mostly measure drops).
func BenchmarkPairThroughput(b *testing.B) {
	srv := tunneltest.StartServer(b, tunneltest.ServerOptions{BatchSize: 64})
	cl := srv.StartClient(b, "bench")
	p := tunneltest.UDP4(cl.Config.Addr.Addr(), serverAddr, make([]byte, 1372))
	var got atomic.Uint64
	lost := func() uint64 { return cl.Stats.DropQueueFull.Load() + srv.Stats.DropTUNWrite.Load() }
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-srv.Dev.Outbound:
				got.Add(1)
			case <-stop:
				return
			}
		}
	}()
	const window = 256
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for i := range b.N {
		cl.Dev.Inbound <- p
		if (i+1)%window == 0 || i == b.N-1 {
			for got.Load()+lost() < uint64(i+1) {
				runtime.Gosched()
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(lost())/float64(b.N), "dropped/op")
}

// TestPairSilentPeerTimesOut: a client that completes the handshake and
// then goes silent is declared dead after three keepalive intervals, its
// session closed with a timeout and counted.
func TestPairSilentPeerTimesOut(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Keepalive: 50 * time.Millisecond})
	cfg := srv.CA.ClientConfig(t, "silent", "server")
	cfg.NextProtos = []string{tunnel.ALPN}
	raw, err := srv.Listener.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, cfg)
	if _, err := c.Write(tunnel.AppendFrame(nil, tunnel.TypeHello, false, tunnel.MarshalHello(tunnel.Hello{}))); err != nil {
		t.Fatal(err)
	}
	// Say nothing more, read nothing: the server's pings go unanswered.
	tunneltest.Eventually(t, func() bool { return srv.Stats.KeepaliveTimeouts.Load() == 1 },
		"KeepaliveTimeouts = %d, want 1", &srv.Stats.KeepaliveTimeouts)
	// The server told us why before closing.
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, _ := io.ReadAll(c)
	if !bytes.Contains(all, []byte("keepalive timeout")) {
		t.Fatalf("server did not send a keepalive-timeout Close; got %d bytes", len(all))
	}
}

// TestPairCheckSessionsClosesRevoked: when a live client's certificate
// stops passing the server's check (revoked by a new CRL, or expired), the
// next CheckSessions closes exactly that session, telling the client why.
func TestPairCheckSessionsClosesRevoked(t *testing.T) {
	var revoked atomic.Value
	revoked.Store("")
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{CheckPeer: func(cs tls.ConnectionState) error {
		if cs.PeerCertificates[0].Subject.CommonName == revoked.Load().(string) {
			return errors.New("certificate revoked")
		}
		return nil
	}})
	good := srv.StartClient(t, "good")
	srv.StartClient(t, "bad")
	if n := srv.Server.CheckSessions(); n != 0 {
		t.Fatalf("CheckSessions closed %d sessions before any revocation", n)
	}
	revoked.Store("bad")
	if n := srv.Server.CheckSessions(); n != 1 {
		t.Fatalf("CheckSessions closed %d sessions, want 1", n)
	}
	tunneltest.Eventually(t, func() bool { return srv.Stats.SessionsClosed.Load() == 1 },
		"SessionsClosed = %d, want 1", &srv.Stats.SessionsClosed)
	p := tunneltest.UDP4(serverAddr, good.Config.Addr.Addr(), []byte("unaffected"))
	srv.Dev.Inbound <- p
	tunneltest.Expect(t, good.Dev.Outbound, p)
}

// panicDevice panics when asked to write a packet carrying "boom", as a
// stand-in for any bug on one session's path.
type panicDevice struct{ tun.Device }

func (d panicDevice) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		if bytes.Contains(b[offset:], []byte("boom")) {
			panic("injected fault")
		}
	}
	return d.Device.Write(bufs, offset)
}

// TestPairPanicClosesOnlyItsSession: a panic on one session's receive path
// is recovered and counted, closes that session, and leaves the others
// (and the server) running.
func TestPairPanicClosesOnlyItsSession(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{
		WrapDev: func(d tun.Device) tun.Device { return panicDevice{d} },
	})
	victim := srv.StartClient(t, "victim")
	other := srv.StartClient(t, "other")
	victim.Dev.Inbound <- tunneltest.UDP4(victim.Config.Addr.Addr(), serverAddr, []byte("boom"))
	tunneltest.Eventually(t, func() bool { return srv.Stats.Panics.Load() == 1 && srv.Stats.SessionsClosed.Load() == 1 },
		"Panics = %d, want 1 (and the victim's session closed)", &srv.Stats.Panics)
	p := tunneltest.UDP4(other.Config.Addr.Addr(), serverAddr, []byte("still fine"))
	other.Dev.Inbound <- p
	tunneltest.Expect(t, srv.Dev.Outbound, p)
}
