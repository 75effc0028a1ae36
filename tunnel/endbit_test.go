package tunnel_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// framePeer is the far end of one of our connections, on crypto/tls: it
// reads the frames our side sends and fails the test on a control frame
// without E (PROTOCOL.md section 2: each control frame is a write of its
// own and carries E).
type framePeer struct {
	t    *testing.T
	c    *tls.Conn
	seen map[byte]int // control frames read, by type
}

func newFramePeer(t *testing.T, c *tls.Conn) *framePeer {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &framePeer{t: t, c: c, seen: map[byte]int{}}
}

// next reads one frame, checking E on control frames.
func (p *framePeer) next() (tunnel.Header, []byte) {
	p.t.Helper()
	var hb [tunnel.HeaderLen]byte
	if _, err := io.ReadFull(p.c, hb[:]); err != nil {
		p.t.Fatalf("reading a frame from our side: %v", err)
	}
	h, err := tunnel.ParseHeader(hb[:])
	if err != nil {
		p.t.Fatalf("our side sent a bad frame header %x: %v", hb, err)
	}
	b := make([]byte, h.Len)
	if _, err := io.ReadFull(p.c, b); err != nil {
		p.t.Fatalf("reading a frame's payload from our side: %v", err)
	}
	if h.Type != tunnel.TypeData && h.Type != tunnel.TypeDataGSO {
		p.seen[h.Type]++
		if !h.End {
			p.t.Errorf("our side sent a control frame without E: %v %x", h, b)
		}
	}
	return h, b
}

// until reads frames up to the first of type typ, answering PINGs.
func (p *framePeer) until(typ byte) []byte {
	p.t.Helper()
	for {
		h, b := p.next()
		switch {
		case h.Type == typ:
			return b
		case h.Type == tunnel.TypePing:
			p.send(tunnel.TypePong, b)
		case h.Type == tunnel.TypeClose:
			code, reason, _ := tunnel.UnmarshalClose(b)
			p.t.Fatalf("our side sent CLOSE %d %q while the peer waited for frame type 0x%02x", code, reason, typ)
		}
	}
}

func (p *framePeer) send(typ byte, payload []byte) {
	p.t.Helper()
	if _, err := p.c.Write(tunnel.AppendFrame(nil, typ, true, payload)); err != nil {
		p.t.Fatalf("sending frame type 0x%02x: %v", typ, err)
	}
}

// checkSeen fails unless every one of types was read.
func (p *framePeer) checkSeen(types ...byte) {
	p.t.Helper()
	for _, typ := range types {
		if p.seen[typ] == 0 {
			p.t.Errorf("no frame of type 0x%02x from our side (seen %v)", typ, p.seen)
		}
	}
}

// TestControlFramesCarryEnd reads, on the wire, the control frames our
// server and our client send: CONFIG, PING, PONG and CLOSE from the
// server; HELLO, PING, PONG and CLOSE from the client, and the CLOSE of a
// client whose Setup failed. Each must carry E.
func TestControlFramesCarryEnd(t *testing.T) {
	const keepalive = 200 * time.Millisecond
	t.Run("server", func(t *testing.T) {
		srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Keepalive: keepalive})
		raw, err := srv.Listener.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		cfg := srv.CA.ClientConfig(t, "laptop", "server")
		cfg.NextProtos = []string{tunnel.ALPN}
		p := newFramePeer(t, tls.Client(raw, cfg))
		p.send(tunnel.TypeHello, tunnel.MarshalHello(tunnel.Hello{Software: "e-bit test"}))
		if _, err := tunnel.UnmarshalConfig(p.until(tunnel.TypeConfig)); err != nil {
			t.Fatal(err)
		}
		ping := []byte("12345678")
		p.send(tunnel.TypePing, ping)
		if got := p.until(tunnel.TypePong); string(got) != string(ping) {
			t.Fatalf("PONG %q, want %q", got, ping)
		}
		// The server pings after an interval with nothing from us.
		p.until(tunnel.TypePing)
		if !srv.Server.Kick("laptop", "e-bit test") {
			t.Fatal("Kick found no session")
		}
		p.until(tunnel.TypeClose)
		p.checkSeen(tunnel.TypeConfig, tunnel.TypePing, tunnel.TypePong, tunnel.TypeClose)
	})

	t.Run("client", func(t *testing.T) {
		ca := certstest.NewCA(t)
		ln := tunneltest.NewListener(t)
		defer ln.Close()
		srvCfg := ca.ServerConfig(t, "server")
		srvCfg.NextProtos = []string{tunnel.ALPN}
		accepted := make(chan *framePeer, 2)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- newFramePeer(t, tls.Server(c, srvCfg))
			}
		}()
		config, err := tunnel.MarshalConfig(tunnel.Config{
			Addr: netip.MustParsePrefix("100.64.0.2/24"), ServerAddr: netip.MustParseAddr("100.64.0.1"),
			MTU: 1500, Keepalive: keepalive,
		})
		if err != nil {
			t.Fatal(err)
		}
		start := func(setup func() error) (chan error, context.CancelFunc) {
			dev := tuntest.NewChannelDevice("cli0", 1500, 16, 64)
			cl, err := tunnel.NewClient(tunnel.ClientConfig{
				Dial: ln.Dial,
				TLS:  ca.ClientConfig(t, "laptop", "server"),
				Setup: func(context.Context, tunnel.Config) (tun.Device, error) {
					if err := setup(); err != nil {
						return nil, err
					}
					return dev, nil
				},
				MinBackoff:  time.Minute,
				MaxAttempts: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done, stopped := make(chan error, 1), make(chan struct{})
			go func() {
				defer close(stopped)
				done <- cl.Run(ctx)
				dev.Close()
			}()
			t.Cleanup(func() { cancel(); <-stopped })
			return done, cancel
		}

		done, stop := start(func() error { return nil })
		p := <-accepted
		p.until(tunnel.TypeHello)
		p.send(tunnel.TypeConfig, config)
		p.until(tunnel.TypePing) // the client pings every interval
		ping := []byte("87654321")
		p.send(tunnel.TypePing, ping)
		if got := p.until(tunnel.TypePong); string(got) != string(ping) {
			t.Fatalf("PONG %q, want %q", got, ping)
		}
		stop()
		p.until(tunnel.TypeClose)
		p.send(tunnel.TypeClose, tunnel.MarshalClose(tunnel.CloseNormal, "close acknowledged"))
		if err := <-done; err != nil {
			t.Fatalf("client Run: %v", err)
		}
		p.checkSeen(tunnel.TypeHello, tunnel.TypePing, tunnel.TypePong, tunnel.TypeClose)

		// A client whose Setup fails says so with a CLOSE before it
		// closes the connection.
		errSetup := errors.New("no TUN device here")
		done, _ = start(func() error { return errSetup })
		p = <-accepted
		p.until(tunnel.TypeHello)
		p.send(tunnel.TypeConfig, config)
		code, reason, err := tunnel.UnmarshalClose(p.until(tunnel.TypeClose))
		if err != nil || code != tunnel.CloseNormal || reason != "client setup failed" {
			t.Errorf("CLOSE after a failed Setup: %d %q %v; want %d %q", code, reason, err, tunnel.CloseNormal, "client setup failed")
		}
		if err := <-done; !errors.Is(err, errSetup) {
			t.Errorf("client Run = %v, want the Setup error", err)
		}
		p.checkSeen(tunnel.TypeHello, tunnel.TypeClose)
	})
}
