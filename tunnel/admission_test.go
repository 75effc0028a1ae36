package tunnel_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// dialFrom connects to the server from a loopback source address of its
// own (Linux routes all of 127.0.0.0/8 to lo), as a different host would.
func dialFrom(src string, srv *tunneltest.Server) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
	}
}

// connectFrom runs a client from src until its protocol handshake
// succeeds or fails, and returns the error.
func connectFrom(t *testing.T, srv *tunneltest.Server, src string, cfg *tls.Config) error {
	cl, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial: dialFrom(src, srv),
		TLS:  cfg,
		Setup: func(context.Context, tunnel.Config) (tun.Device, error) {
			return tuntest.NewChannelDevice("c", 1500, 1, 1), nil
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, _, err := cl.Connect(ctx)
	if err == nil {
		tr.Close()
	}
	return err
}

// holdIdle opens a TCP connection from src that sends nothing, and
// returns a channel that receives how long the server took to close it.
func holdIdle(t *testing.T, srv *tunneltest.Server, src string) <-chan time.Duration {
	t.Helper()
	c, err := dialFrom(src, srv)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	done := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		done <- time.Since(start)
	}()
	return done
}

// TestAdmissionIdleConnections: connections that never send a ClientHello
// give their handshake slot back after HelloTimeout, one source cannot
// hold more than its share of the slots, and clients that authenticated
// from an address before get in on the reserved slots at once while every
// shared one is held; others queue, and after MaxQueueWait may take a
// reserved slot only to resume a session.
func TestAdmissionIdleConnections(t *testing.T) {
	lim := tunnel.NewLimiter(tunnel.LimitConfig{MaxHandshakes: 2, MaxHandshakesPerSource: 2, ReservedHandshakes: 1,
		MaxQueueWait: 100 * time.Millisecond, HandshakeRate: -1})
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Limits: lim, HelloTimeout: 300 * time.Millisecond})
	laptop := srv.CA.ClientConfig(t, "laptop", "server")
	laptop.ClientSessionCache = tls.NewLRUClientSessionCache(4)

	// The laptop connects once from .4: its address becomes known and
	// it keeps a session ticket.
	if err := connectFrom(t, srv, "127.0.0.4", laptop); err != nil {
		t.Fatalf("first connect: %v", err)
	}

	// An attacker at .2 holds both shared slots with idle connections; a
	// third from .2 is refused at once (its per-source share).
	held := []<-chan time.Duration{holdIdle(t, srv, "127.0.0.2"), holdIdle(t, srv, "127.0.0.2")}
	tunneltest.Eventually(t, func() bool { return lim.Usage().Handshakes == 2 }, "handshakes in progress: %v", lim.Usage())
	if d := <-holdIdle(t, srv, "127.0.0.2"); d > 200*time.Millisecond {
		t.Fatalf("a third idle connection from the same source was closed after %v, want at once", d)
	}
	if n := lim.Stats().RefusedSource.Load(); n != 1 {
		t.Fatalf("RefusedSource = %d, want 1", n)
	}

	// While the shared slots are held: a new client from an unknown
	// address waits its turn and, with no slot freed in time, is refused
	// on the reserved slot, since it does not resume...
	stranger := srv.CA.ClientConfig(t, "stranger", "server")
	err := connectFrom(t, srv, "127.0.0.3", stranger)
	if err == nil {
		t.Fatal("a client from an unknown address without a ticket got in on a reserved slot")
	}
	if hint := tunnel.ConnectHint(err); !strings.Contains(hint, "busy") {
		t.Fatalf("the refused client's hint for %q is %q, want one that says the server is busy", err, hint)
	}
	if n := lim.Stats().RefusedResumption.Load(); n != 1 {
		t.Fatalf("RefusedResumption = %d, want 1", n)
	}
	// ...the laptop from its known address gets in, without a ticket too,
	nocache := laptop.Clone()
	nocache.ClientSessionCache = nil
	if err := connectFrom(t, srv, "127.0.0.4", nocache); err != nil {
		t.Fatalf("known address: %v", err)
	}
	// ...and, after the wait, from a new address when it resumes its
	// session.
	if err := connectFrom(t, srv, "127.0.0.5", laptop); err != nil {
		t.Fatalf("resuming from a new address: %v", err)
	}

	// The idle connections are closed at the hello deadline, and their
	// slots come back: the stranger gets in.
	for _, h := range held {
		if d := <-h; d > 2*time.Second {
			t.Fatalf("idle connection closed after %v, want about the 300ms hello timeout", d)
		}
	}
	tunneltest.Eventually(t, func() bool { return lim.Usage().Handshakes == 0 }, "handshakes in progress: %v", lim.Usage())
	if err := connectFrom(t, srv, "127.0.0.3", stranger); err != nil {
		t.Fatalf("after the idle connections were closed: %v", err)
	}
}

// TestAdmissionQueue: a crowd of clients (a restarted gateway's) larger
// than the handshake slots is served in turn, not refused: each waits
// for a slot instead of backing off after a refusal.
func TestAdmissionQueue(t *testing.T) {
	lim := tunnel.NewLimiter(tunnel.LimitConfig{MaxHandshakes: 2, ReservedHandshakes: -1, HandshakeRate: -1})
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Limits: lim})
	const n = 24
	errs := make(chan error, n)
	for i := range n {
		cfg := srv.CA.ClientConfig(t, fmt.Sprintf("crowd%d", i), "server")
		go func() { errs <- connectFrom(t, srv, fmt.Sprintf("127.0.1.%d", i+1), cfg) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("a client of the crowd: %v", err)
		}
	}
	if st := lim.Stats(); st.RefusedHandshakes.Load() != 0 {
		t.Fatalf("%d refused, want every client served in turn", st.RefusedHandshakes.Load())
	}
}
