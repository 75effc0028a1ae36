package tunnel_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// noLeaks checks, after every other cleanup of the test has run (the
// server's and clients' included), that no goroutine the test started is
// left. Register it first.
func noLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// TestNoLeakServerAndClients: a server with clients that exchange
// packets, one of them replaced by a second connection of its identity,
// and a shutdown with sessions live leaves no goroutine behind.
func TestNoLeakServerAndClients(t *testing.T) {
	noLeaks(t)
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	var cls []*tunneltest.Client
	for i := range 3 {
		cls = append(cls, srv.StartClient(t, fmt.Sprintf("c%d", i)))
	}
	for _, c := range cls {
		p := tunneltest.UDP4(c.Config.Addr.Addr(), serverAddr, []byte("x"))
		c.Dev.Inbound <- p
		tunneltest.Expect(t, srv.Dev.Outbound, p)
	}
	// The identity c0 again: the first session is replaced.
	again := srv.StartClient(t, "c0")
	tunneltest.Eventually(t, func() bool { return srv.Stats.SessionsReplaced.Load() == 1 }, "replaced = %d", &srv.Stats.SessionsReplaced)
	again.Stop()
	cls[1].Stop()
	// The server shuts down (in the test's cleanup) with c2 and the first
	// c0 client (reconnecting or not) still around.
}

// TestNoLeakSessionClosedBeforeRun: a session closed before it ran (a
// registration replaced at once, a CONFIG that could not be sent) and
// never run holds no goroutine; one run after Close ends at once with the
// first reason.
func TestNoLeakSessionClosedBeforeRun(t *testing.T) {
	noLeaks(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	dev := tuntest.NewChannelDevice("x", 1500, 128, 1)
	never := tunnel.NewSession(tunnel.SessionConfig{Transport: newPipeTransport(a), Dev: dev})
	never.Close(tunnel.CloseReplaced, "replaced before it ran")

	s := tunnel.NewSession(tunnel.SessionConfig{Transport: newPipeTransport(a), Dev: dev})
	s.Close(tunnel.CloseTimeout, "closed before it ran")
	s.Close(tunnel.CloseNormal, "twice")
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if ce, ok := err.(*tunnel.CloseError); !ok || ce.Code != tunnel.CloseTimeout {
			t.Fatalf("Run = %v, want the first CloseError", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run of a session closed before it ran did not end")
	}
}

// TestNoLeakOverload: connections refused at every stage (handshake
// slots full, per-source share, idle until the hello deadline, garbage
// instead of TLS) and clients refused by the client cap leave nothing
// behind once the server stops.
func TestNoLeakOverload(t *testing.T) {
	noLeaks(t)
	lim := tunnel.NewLimiter(tunnel.LimitConfig{MaxHandshakes: 4, MaxHandshakesPerSource: 30, ReservedHandshakes: -1, MaxQueued: 4,
		MaxQueueWait: 100 * time.Millisecond, MaxClients: 2, HandshakeRate: -1})
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Limits: lim, HelloTimeout: 200 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			c, err := srv.Listener.Dial(context.Background())
			if err != nil {
				return
			}
			defer c.Close()
			if i%2 == 0 {
				c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 1))
		})
	}
	wg.Wait()
	// Two clients fill the client cap; the third is refused.
	srv.StartClient(t, "a")
	srv.StartClient(t, "b")
	if _, err := srv.TryClient(t, srv.CA.ClientConfig(t, "c", "server")); err == nil {
		t.Fatal("a third client got past --max-clients 2")
	}
	tunneltest.Eventually(t, func() bool { return srv.Server.Connections() == 2 }, "connections open: %d, want 2", srv.Server.Connections())
}
