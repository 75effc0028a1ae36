package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
)

// livePair is a Server and a Client with live sessions over loopback TCP.
type livePair struct {
	srv              *Server
	cl               *Client
	sdev, cdev       *tuntest.ChannelDevice
	sstats, cstats   *Stats
	srvSess, cliSess *Session
	config           Config // the CONFIG the client received
}

// startLivePair starts a server and a client, each configured by its
// function, and waits until both sessions are running (a packet went each
// way, so both ran StartData).
func startLivePair(t *testing.T, srvCfg func(*ServerConfig), cliCfg func(*ClientConfig)) *livePair {
	t.Helper()
	ca := certstest.NewCA(t)
	p := &livePair{
		sdev:   tuntest.NewChannelDevice("srv0", 1500, 16, 4096),
		cdev:   tuntest.NewChannelDevice("cli0", 1500, 16, 4096),
		sstats: new(Stats),
		cstats: new(Stats),
	}
	sc := ServerConfig{
		TLS: ca.ServerConfig(t, "server"), Identity: func(tls.ConnectionState) (string, error) { return "laptop", nil },
		Dev: p.sdev, Pool: fixedPool(allocClient), Subnet: netip.MustParsePrefix("100.64.0.0/24"), ServerAddr: allocServer,
		MTU: 1500, Stats: p.sstats,
	}
	if srvCfg != nil {
		srvCfg(&sc)
	}
	srv, err := NewServer(sc)
	if err != nil {
		t.Fatal(err)
	}
	p.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srvDone, cliDone := make(chan error, 1), make(chan error, 1)
	go func() { srvDone <- srv.Serve(ctx, ln) }()
	cc := ClientConfig{
		Dial: func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		},
		TLS:         ca.ClientConfig(t, "laptop", "server"),
		Setup:       func(context.Context, Config) (tun.Device, error) { return p.cdev, nil },
		MinBackoff:  10 * time.Millisecond,
		MaxAttempts: 1,
		Stats:       p.cstats,
	}
	if cliCfg != nil {
		cliCfg(&cc)
	}
	cl, err := NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	p.cl = cl
	go func() { cliDone <- cl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-cliDone; err != nil {
			t.Errorf("client Run: %v", err)
		}
		p.cdev.Close()
		if err := <-srvDone; err != nil {
			t.Errorf("server Serve: %v", err)
		}
	})
	p.roundTrip(t, 0)
	srv.mu.Lock()
	p.srvSess = srv.sessions["laptop"]
	srv.mu.Unlock()
	cl.mu.Lock()
	p.cliSess, p.config = cl.cur, cl.config
	cl.mu.Unlock()
	if p.srvSess == nil || p.cliSess == nil {
		t.Fatalf("sessions after a round trip: server %v, client %v", p.srvSess, p.cliSess)
	}
	return p
}

// roundTrip sends packet i up and down and waits for both.
func (p *livePair) roundTrip(t *testing.T, i int) {
	t.Helper()
	for _, d := range []struct {
		in  chan []byte
		out chan []byte
		pkt []byte
	}{
		{p.cdev.Inbound, p.sdev.Outbound, testPacket(allocClient, allocServer, 64+i%512)},
		{p.sdev.Inbound, p.cdev.Outbound, testPacket(allocServer, allocClient, 64+i%512)},
	} {
		d.in <- d.pkt
		select {
		case got := <-d.out:
			if string(got) != string(d.pkt) {
				t.Fatalf("packet %d arrived as %x, want %x", i, got, d.pkt)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("packet %d not delivered after 5s", i)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// panicOncePool panics on its first Assign, then assigns addr.
type panicOncePool struct {
	addr  netip.Addr
	fired atomic.Bool
}

func (p *panicOncePool) Assign(string) (netip.Addr, error) {
	if !p.fired.Swap(true) {
		panic("lease store broke")
	}
	return p.addr, nil
}

// TestHandlerPanicIsContained: a panic in a connection's handler, before
// the handshake (in TuneConn) or after it (in the lease), is recovered,
// counted and logged with the remote address (and, once known, the
// peer), closes only that connection, and the server goes on: the
// client's next attempt gets its session.
func TestHandlerPanicIsContained(t *testing.T) {
	var logs lockedBuffer
	var tuned atomic.Bool
	p := startLivePair(t,
		func(c *ServerConfig) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			c.Pool = &panicOncePool{addr: allocClient}
			c.TuneConn = func(net.Conn) {
				if !tuned.Swap(true) {
					panic("socket option broke")
				}
			}
		},
		func(c *ClientConfig) { c.MaxAttempts = 0 })
	if n := p.sstats.Panics.Load(); n != 2 {
		t.Errorf("Panics = %d, want 2", n)
	}
	var before, after string
	for _, l := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(l, `msg="connection handler panicked"`) {
			continue
		}
		switch {
		case strings.Contains(l, "socket option broke"):
			before = l
		case strings.Contains(l, "lease store broke"):
			after = l
		}
	}
	if !strings.Contains(before, "remote_addr=127.0.0.1:") || strings.Contains(before, "peer=") {
		t.Errorf("panic before the handshake logged as %q, want remote_addr and no peer", before)
	}
	if !strings.Contains(after, "remote_addr=127.0.0.1:") || !strings.Contains(after, "peer=laptop") {
		t.Errorf("panic after the handshake logged as %q, want remote_addr and peer=laptop", after)
	}
	p.roundTrip(t, 1)
}
