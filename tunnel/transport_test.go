package tunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// pipeTransport carries frames in the clear over one end of a net.Pipe:
// a transport made without TLS and from outside the package, so the tests
// below show that a Session runs over any tunnel.Transport. Writes between
// Hold and Flush go to the pipe in one write.
type pipeTransport struct {
	c net.Conn

	// Writer side (under the session's write lock).
	holding bool
	out     []byte

	started  atomic.Int32 // StartData calls
	keys     atomic.Bool  // DataOptions.KeyUpdate of the last call
	released atomic.Int32 // Release calls
}

func newPipeTransport(c net.Conn) *pipeTransport { return &pipeTransport{c: c} }

func (p *pipeTransport) StartData(o tunnel.DataOptions) {
	p.started.Add(1)
	p.keys.Store(o.KeyUpdate)
}

func (p *pipeTransport) ReadFull(b []byte, _ bool) error {
	_, err := io.ReadFull(p.c, b)
	return err
}

func (p *pipeTransport) Write(b []byte) (int, error) {
	if p.holding {
		p.out = append(p.out, b...)
		return len(b), nil
	}
	return p.c.Write(b)
}

func (p *pipeTransport) WriteOwned(b []byte, _ int) error {
	_, err := p.Write(b)
	return err
}

func (p *pipeTransport) Hold() { p.holding = true }

func (p *pipeTransport) Flush() error {
	p.holding = false
	if len(p.out) == 0 {
		return nil
	}
	_, err := p.c.Write(p.out)
	p.out = p.out[:0]
	return err
}

func (p *pipeTransport) SetWriteDeadline(t time.Time) error { return p.c.SetWriteDeadline(t) }
func (p *pipeTransport) TrySend([]byte) (bool, error)       { return false, nil }
func (p *pipeTransport) Close() error                       { return p.c.Close() }

// CloseDrain discards what the peer still sends until it closes or d
// passes: a pipe has no half-close to announce the end with.
func (p *pipeTransport) CloseDrain(d time.Duration) {
	p.c.SetReadDeadline(time.Now().Add(d))
	io.Copy(io.Discard, p.c)
	p.c.Close()
}

func (p *pipeTransport) Release() { p.released.Add(1) }

func (p *pipeTransport) Info() tunnel.TransportInfo {
	return tunnel.TransportInfo{Remote: p.c.RemoteAddr()}
}

func (p *pipeTransport) Usage() tunnel.KeyUsage { return tunnel.KeyUsage{} }

var (
	pipeClient = netip.MustParseAddr("100.64.0.2")
	pipeServer = netip.MustParseAddr("100.64.0.1")
)

// runSession runs s and its mux (reading dev) until the test ends; the
// session's end cause arrives on the channel.
func runSession(t *testing.T, s *tunnel.Session, dev *tuntest.ChannelDevice, m *tunnel.Mux) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	muxDone := make(chan error, 1)
	go func() { muxDone <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		dev.Close()
		<-muxDone
		<-s.Done()
	})
	return done
}

// TestSessionOverAnotherTransport: two sessions over a pipeTransport, with
// no TLS anywhere, carry packets both ways and end with a CLOSE whose code
// and reason reach the other side, exactly as over TLS. The session starts
// the transport's data phase once with its settings and releases the
// transport once at the end.
func TestSessionOverAnotherTransport(t *testing.T) {
	noLeaks(t)
	a, b := net.Pipe()
	ca, sa := newPipeTransport(a), newPipeTransport(b)
	cdev := tuntest.NewChannelDevice("c", 1500, 16, 64)
	sdev := tuntest.NewChannelDevice("s", 1500, 16, 64)
	cs := tunnel.NewSession(tunnel.SessionConfig{Transport: ca, Dev: cdev, Peer: "server", ShutdownCode: tunnel.CloseNormal, PeerKeyUpdate: true})
	ss := tunnel.NewSession(tunnel.SessionConfig{Transport: sa, Dev: sdev, Peer: "client", ShutdownCode: tunnel.CloseShutdown,
		Allowed: []netip.Prefix{netip.PrefixFrom(pipeClient, 32)}})
	cmux := tunnel.NewMux(cdev, tunnel.MuxConfig{})
	cmux.SetDefault(cs)
	smux := tunnel.NewMux(sdev, tunnel.MuxConfig{})
	smux.Add(ss, pipeClient)
	cdone := runSession(t, cs, cdev, cmux)
	sdone := runSession(t, ss, sdev, smux)

	for i := range 3 {
		up := tunneltest.UDP4(pipeClient, pipeServer, []byte{'u', byte(i)})
		cdev.Inbound <- up
		tunneltest.Expect(t, sdev.Outbound, up)
		down := tunneltest.UDP4(pipeServer, pipeClient, []byte{'d', byte(i)})
		sdev.Inbound <- down
		tunneltest.Expect(t, cdev.Outbound, down)
	}
	// The server's anti-spoofing applies whatever the transport.
	spoofed := tunneltest.UDP4(netip.MustParseAddr("100.64.0.9"), pipeServer, []byte("spoofed"))
	cdev.Inbound <- spoofed
	last := tunneltest.UDP4(pipeClient, pipeServer, []byte("last"))
	cdev.Inbound <- last
	tunneltest.Expect(t, sdev.Outbound, last)

	ss.Close(tunnel.CloseKicked, "kicked over a pipe")
	var pc *tunnel.PeerClosedError
	if err := <-cdone; !errors.As(err, &pc) || pc.Code != tunnel.CloseKicked || pc.Reason != "kicked over a pipe" {
		t.Fatalf("client session ended with %v, want the server's CLOSE (kicked, %q)", err, "kicked over a pipe")
	}
	var ce *tunnel.CloseError
	if err := <-sdone; !errors.As(err, &ce) || ce.Code != tunnel.CloseKicked {
		t.Fatalf("server session ended with %v, want its own CloseError (kicked)", err)
	}
	if tx, rx := cs.Bytes(); tx != uint64(3*30+len(spoofed)+len(last)) || rx != 3*30 {
		t.Errorf("client session Bytes = %d, %d; want %d, %d", tx, rx, 3*30+len(spoofed)+len(last), 3*30)
	}
	for _, tt := range []struct {
		name string
		p    *pipeTransport
		keys bool
	}{{"client", ca, true}, {"server", sa, false}} {
		if n, k, r := tt.p.started.Load(), tt.p.keys.Load(), tt.p.released.Load(); n != 1 || k != tt.keys || r != 1 {
			t.Errorf("%s transport: StartData %d times (KeyUpdate %v), Release %d times; want once (%v), once", tt.name, n, k, r, tt.keys)
		}
	}
	if got := ss.TransportInfo().Remote.String(); got != "pipe" {
		t.Errorf("server session's TransportInfo().Remote = %q, want the pipe's address", got)
	}
}

// TestSessionOverAnotherTransportProtocolError: a peer that breaks the
// protocol gets a CLOSE naming the error, written to the transport before
// it is closed, and the session ends with the ProtocolError.
func TestSessionOverAnotherTransportProtocolError(t *testing.T) {
	noLeaks(t)
	a, peer := net.Pipe()
	defer peer.Close()
	dev := tuntest.NewChannelDevice("s", 1500, 16, 64)
	s := tunnel.NewSession(tunnel.SessionConfig{Transport: newPipeTransport(a), Dev: dev, Peer: "client"})
	done := runSession(t, s, dev, tunnel.NewMux(dev, tunnel.MuxConfig{}))

	go peer.Write(tunnel.AppendFrame(nil, tunnel.TypeHello, true, nil)) // no HELLO during a session
	var hb [tunnel.HeaderLen]byte
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, hb[:]); err != nil {
		t.Fatalf("reading the session's answer: %v", err)
	}
	h, err := tunnel.ParseHeader(hb[:])
	if err != nil || h.Type != tunnel.TypeClose {
		t.Fatalf("the session answered %+v (%v), want a CLOSE frame", h, err)
	}
	p := make([]byte, h.Len)
	if _, err := io.ReadFull(peer, p); err != nil {
		t.Fatal(err)
	}
	code, reason, err := tunnel.UnmarshalClose(p)
	if err != nil || code != tunnel.CloseProtocol || reason == "" {
		t.Fatalf("CLOSE = %d %q (%v), want CloseProtocol with the error", code, reason, err)
	}
	peer.Close() // ends the session's drain
	var pe *tunnel.ProtocolError
	if err := <-done; !errors.As(err, &pe) {
		t.Fatalf("session ended with %v, want a ProtocolError", err)
	}
}
