package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"tlsvpn/tun"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Dial opens the underlying connection to the server (TCP).
	Dial func(ctx context.Context) (net.Conn, error)
	// TLS is the client's TLS configuration (TLS 1.3, client certificate,
	// the project CA as the only root). NewClient sets NextProtos to ALPN on
	// a clone.
	TLS *tls.Config
	// Hello is sent to the server after the TLS handshake.
	Hello Hello
	// Setup receives the server's configuration and returns the TUN device
	// to use, with its address, MTU and routes in place. It is called once
	// per session, before any packet flows.
	Setup func(ctx context.Context, cfg Config) (tun.Device, error)
	// HandshakeTimeout bounds dial, TLS and protocol handshake; default 15s.
	HandshakeTimeout time.Duration
	// QueueLen bounds the send queue (chunks).
	QueueLen int
	// NoOffload keeps GSO super-packets (DATA_GSO) off in both directions.
	// Otherwise the client offers them, and uses them when the server
	// accepts them and the device Setup returns can pass them.
	NoOffload bool
	Logger    *slog.Logger
	Stats     *Stats
}

// Client connects to a server and runs the session.
type Client struct {
	cfg ClientConfig // immutable after NewClient
	tls *tls.Config
	log *slog.Logger
}

// NewClient returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Dial == nil || cfg.TLS == nil || cfg.Setup == nil {
		return nil, errors.New("client: Dial, TLS and Setup are required")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	t := cfg.TLS.Clone()
	t.NextProtos = []string{ALPN}
	if !cfg.NoOffload {
		cfg.Hello.Caps |= CapGSO
	}
	return &Client{cfg: cfg, tls: t, log: cfg.Logger}, nil
}

// Connected describes an established connection, for logs and callers.
type Connected struct {
	Config    Config
	TLS       tls.ConnectionState
	Handshake time.Duration // dial + TLS + protocol handshake
}

// Connect dials the server and completes the TLS and protocol handshakes.
// The returned connection is ready for RunSession.
func (c *Client) Connect(ctx context.Context) (*tls.Conn, *BatchConn, Connected, error) {
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := c.cfg.Dial(hctx)
	if err != nil {
		return nil, nil, Connected{}, fmt.Errorf("dial: %w", err)
	}
	bc := NewBatchConn(raw)
	tc := tls.Client(bc, c.tls)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, nil, Connected{}, fmt.Errorf("tls handshake: %w", err)
	}
	cfg, err := ClientHandshake(hctx, tc, c.cfg.Hello)
	if err != nil {
		tc.Close()
		return nil, nil, Connected{}, fmt.Errorf("protocol handshake: %w", err)
	}
	return tc, bc, Connected{Config: cfg, TLS: tc.ConnectionState(), Handshake: time.Since(start)}, nil
}

// Run connects, sets up the device and runs one session until ctx ends or
// the session does. It returns the session's end cause; a parent-context
// shutdown returns nil.
func (c *Client) Run(ctx context.Context) error {
	tc, bc, info, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	cfg := info.Config
	c.log.Info("connected", append([]any{
		"server", tc.RemoteAddr().String(),
		"tunnel_addr", cfg.Addr,
		"server_tunnel_addr", cfg.ServerAddr,
		"mtu", cfg.MTU,
		"routes", len(cfg.Routes),
		"keepalive", cfg.Keepalive,
		"handshake_ms", info.Handshake.Milliseconds(),
	}, TLSAttrs(info.TLS)...)...)
	dev, err := c.cfg.Setup(ctx, cfg)
	if err != nil {
		tc.Write(AppendFrame(nil, TypeClose, false, MarshalClose(CloseNormal, "client setup failed")))
		tc.Close()
		return fmt.Errorf("setup: %w", err)
	}
	// A single session: wait longer for room in its queue before dropping,
	// so local TCP senders see back-pressure rather than loss.
	mux := NewMux(dev, MuxConfig{Stats: c.cfg.Stats, Logger: c.log, QueueWait: 50 * time.Millisecond})
	gso := !c.cfg.NoOffload && mux.CanGSO()
	if !c.cfg.NoOffload && !gso {
		c.log.Warn("TUN device cannot pass GSO super-packets; DATA_GSO from the server will be refused")
	}
	sess := NewSession(SessionConfig{
		Conn:         tc,
		Batch:        bc,
		Dev:          dev,
		MTU:          cfg.MTU,
		PeerGSO:      gso && cfg.Caps&CapGSO != 0,
		AcceptGSO:    gso,
		Keepalive:    cfg.Keepalive,
		QueueLen:     c.cfg.QueueLen,
		ShutdownCode: CloseNormal,
		Peer:         "server",
		Logger:       c.log,
		Stats:        c.cfg.Stats,
	})
	mux.SetDefault(sess)
	mux.SetGSO(sess.peerGSO)
	c.log.Debug("data path", "gso", sess.peerGSO)
	mctx, stopMux := context.WithCancel(ctx)
	muxDone := make(chan error, 1)
	go func() { muxDone <- mux.Run(mctx) }()
	err = sess.Run(ctx)
	mux.SetDefault(nil)
	stopMux()
	// The mux reader blocks in Read; the caller closes the device, which
	// ends it. Wait only if it already stopped.
	select {
	case merr := <-muxDone:
		if merr != nil && err == nil {
			err = merr
		}
	default:
		go func() { <-muxDone }()
	}
	if ctx.Err() != nil {
		var ce *CloseError
		if errors.As(err, &ce) && ce.Code == CloseNormal {
			return nil
		}
	}
	return err
}
