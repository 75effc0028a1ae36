package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
)

// capsPair is a Server and a Client with live sessions over loopback TCP.
type capsPair struct {
	srv              *Server
	cl               *Client
	sdev, cdev       *tuntest.ChannelDevice
	sstats, cstats   *Stats
	srvSess, cliSess *Session
	config           Config // the CONFIG the client received
}

// startCapsPair starts a server and a client, each configured by its
// function, and waits until both sessions are running (a packet went each
// way, so both ran StartData).
func startCapsPair(t *testing.T, srvCfg func(*ServerConfig), cliCfg func(*ClientConfig)) *capsPair {
	t.Helper()
	ca := certstest.NewCA(t)
	p := &capsPair{
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
func (p *capsPair) roundTrip(t *testing.T, i int) {
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

// TestCapKeyUpdateOnlyFromOwnLayer: a side announces CapKeyUpdate (in its
// HELLO or CONFIG) only when it will try the own record layer. A side on
// crypto/tls counts every record of the connection (BatchConn), so a peer
// that updated the keys in-band would meet CLOSE 8 at 2^24 records instead
// of the client's reconnect rotation at 2^23: the client's session must
// rekey in-band only when both sides are on the own layer.
func TestCapKeyUpdateOnlyFromOwnLayer(t *testing.T) {
	if err := OwnRecordLayer(); err != nil {
		t.Skipf("the own record layer is off in this process (%v); TestFIPSModeKeepsRecordsOnStdlib covers FIPS mode", err)
	}
	for _, tc := range []struct {
		srvStdlib, cliStdlib bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("server_stdlib=%v/client_stdlib=%v", tc.srvStdlib, tc.cliStdlib), func(t *testing.T) {
			p := startCapsPair(t,
				func(c *ServerConfig) { c.StdlibRecords = tc.srvStdlib },
				func(c *ClientConfig) { c.StdlibRecords = tc.cliStdlib })
			if got, want := p.config.Caps&CapKeyUpdate != 0, !tc.srvStdlib; got != want {
				t.Errorf("CONFIG announces CapKeyUpdate: %v, want %v (caps %#x)", got, want, p.config.Caps)
			}
			if got, want := p.srvSess.cfg.PeerKeyUpdate, !tc.cliStdlib; got != want {
				t.Errorf("HELLO announces CapKeyUpdate: %v, want %v", got, want)
			}
			both := !tc.srvStdlib && !tc.cliStdlib
			if got := p.cliSess.RekeysInBand(); got != both {
				t.Errorf("client session RekeysInBand() = %v, want %v (false: it rotates by reconnecting)", got, both)
			}
			if got := p.srvSess.RekeysInBand(); got != both {
				t.Errorf("server session RekeysInBand() = %v, want %v", got, both)
			}
		})
	}
}

// TestStdlibServerClientRotates: a client on the own record layer with a
// server on crypto/tls keeps the keys under the limit by rotating (a new
// connection, the old session retired), not with in-band KeyUpdates the
// server's BatchConn cannot see. A budget of 64 records shows it; the real
// one is 2^23, and the server's CLOSE 8 backstop 2^24.
func TestStdlibServerClientRotates(t *testing.T) {
	if err := OwnRecordLayer(); err != nil {
		t.Skipf("the own record layer is off in this process (%v)", err)
	}
	const budget = 64
	p := startCapsPair(t,
		func(c *ServerConfig) { c.StdlibRecords = true },
		func(c *ClientConfig) { c.RotateRecords = budget; c.MaxAttempts = 0 })
	if p.cstats.RecordHandOvers.Load() != 1 || p.sstats.RecordHandOvers.Load() != 0 {
		t.Fatalf("record hand-overs: client %d, server %d; want 1, 0", p.cstats.RecordHandOvers.Load(), p.sstats.RecordHandOvers.Load())
	}
	for i := 1; i <= 2*budget; i++ {
		p.roundTrip(t, i)
	}
	// The client looks at its budget every second.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, rotations := p.cl.Counts(); rotations > 0 {
			break
		}
		if time.Now().After(deadline) {
			records, _ := p.cliSess.Usage()
			t.Fatalf("no rotation 10s after %d round trips (client session at %d records, budget %d, in-band %v)",
				2*budget, records, budget, p.cliSess.RekeysInBand())
		}
	}
	if n := p.cstats.KeyUpdatesSent.Load() + p.cstats.KeyUpdatesReceived.Load(); n != 0 {
		t.Errorf("the client sent or received %d KeyUpdates; want none with a server on crypto/tls", n)
	}
	if reconnects, _ := p.cl.Counts(); reconnects != 0 {
		t.Errorf("the client reconnected %d times; want a rotation only", reconnects)
	}
	p.roundTrip(t, 0) // the new session carries traffic
}
