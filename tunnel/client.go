package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"tlsvpn/tun"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Dial opens the underlying connection to the server (TCP). Its error
	// is returned as is, so it names what was dialed (net.Dialer's do).
	Dial func(ctx context.Context) (net.Conn, error)
	// TLS is the client's TLS configuration (TLS 1.3, client certificate,
	// the project CA as the only root). NewClient sets NextProtos to ALPN on
	// a clone, and a session cache for resumption if it has none.
	TLS *tls.Config
	// ServerName, if set, is called after each successful Dial and
	// returns the name the certificate of the server just dialed must
	// carry, for a Dial that picks among servers of different names; ""
	// keeps TLS.ServerName. Attempts never overlap, so it may answer for
	// "the last Dial". The session cache is keyed by that name, so each
	// server keeps its own tickets.
	ServerName func() string
	// Hello is sent to the server after the TLS handshake. NewClient sets
	// its CapGSO (unless NoOffload) and decides CapKeyUpdate itself.
	Hello Hello
	// Setup receives the server's configuration for every session and
	// returns the TUN device to use, with its address, MTU and routes in
	// place. The first call creates the device; later calls (after a
	// reconnect) must return the same device, updating its configuration
	// if the server's changed. The device stays up between sessions.
	Setup func(ctx context.Context, cfg Config) (tun.Device, error)
	// HandshakeTimeout bounds dial, TLS and protocol handshake; default 15s.
	HandshakeTimeout time.Duration
	// QueueLen bounds the send queue (chunks).
	QueueLen int
	// NoOffload keeps GSO super-packets (DATA_GSO) off in both directions.
	// Otherwise the client offers them, and uses them when the server
	// accepts them and the device Setup returns can pass them.
	NoOffload bool
	// StdlibRecords keeps the data phase on crypto/tls's record layer
	// instead of handing it over to this package's own (RecordConn). The
	// bytes on the wire are the same either way; it is slower.
	StdlibRecords bool
	// OwnAESGCM: see ServerConfig.OwnAESGCM.
	OwnAESGCM bool
	// Reconnect backoff: the first retry waits MinBackoff, each failure
	// doubles it up to MaxBackoff; each wait is drawn from [b/2, 3b/2). Defaults 250ms, 30s.
	MinBackoff, MaxBackoff time.Duration
	// SlowBackoff bounds the wait after an attempt that failed for a
	// permanent reason (Diagnose: a server certificate from another CA or
	// for another name, a refused client certificate, a server that is not
	// a tlsvpn server). Such a failure waits at least MaxBackoff, doubling
	// up to SlowBackoff, each wait drawn like the others, so that a client
	// that cannot succeed does not hammer the server; default 5m.
	SlowBackoff time.Duration
	// MaxAttempts ends Run after that many consecutive failed connection
	// attempts; 0 retries forever.
	MaxAttempts int
	// Session rotation: before a session's keys have protected
	// RotateRecords TLS records (default 2^23, well under AES-GCM's limit),
	// carried RotateBytes bytes (0: no byte budget) or lived RotateAfter
	// (0: no age limit), a new connection is opened, traffic moves to it,
	// and the old one is closed after it drained. On the own record layer,
	// with a server that announced CapKeyUpdate (one that runs its own
	// record layer too), the record budget is kept in-band instead: the
	// keys are updated every RotateRecords records.
	RotateRecords uint64
	RotateBytes   uint64
	RotateAfter   time.Duration
	// NoResumption turns off TLS session resumption on reconnect (every
	// connection then does a full handshake).
	NoResumption bool
	Logger       *slog.Logger
	Stats        *Stats
}

// Client connects to a server, keeps reconnecting, and rotates sessions.
type Client struct {
	cfg ClientConfig // immutable after NewClient
	tls *tls.Config
	log *slog.Logger

	kick chan string // asks Run to replace the session at once

	mu      sync.Mutex // guards the fields below
	rotated uint64
	reconns uint64
	// What Status reports: the state, the current session (nil unless
	// up), the server and configuration of the last session, when a
	// backing-off client tries again, and why the last attempt or
	// session ended.
	state   string
	cur     *Session
	server  string
	config  Config
	retryAt time.Time
	lastErr string
}

// Client states reported by Status.
const (
	StateConnecting = "connecting"  // dialing and handshaking
	StateUp         = "up"          // a session carries traffic
	StateBackingOff = "backing off" // waiting before the next attempt
)

// ClientStatus is a snapshot of a Client for status output.
type ClientStatus struct {
	State         string    // StateConnecting, StateUp or StateBackingOff
	Server        string    // address of the server of the current (or last) session
	Config        Config    // configuration of the current (or last) session
	Since         time.Time // when the current session was established; zero unless up
	LastHandshake time.Time // the current session's TLS handshake or last KeyUpdate
	RTT           time.Duration
	RetryAt       time.Time // backing off: when the next attempt starts
	LastError     string    // why the last attempt failed or the last session ended
	Reconnects    uint64
	Rotations     uint64
}

// Status returns the client's state. It is cheap: a lock and a few
// atomic loads.
func (c *Client) Status() ClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ClientStatus{State: c.state, Server: c.server, Config: c.config, RetryAt: c.retryAt,
		LastError: c.lastErr, Reconnects: c.reconns, Rotations: c.rotated}
	if st.State == "" {
		st.State = StateConnecting
	}
	if c.cur != nil {
		st.Since, st.LastHandshake, st.RTT = c.cur.started, c.cur.LastHandshake(), c.cur.RTT()
	}
	return st
}

// ProbeRTT pings the server on the current session unless its
// round-trip time was measured within maxAge, and waits for the PONG (or
// ctx), so that Status has a fresh RTT. It does nothing while no session
// is up.
func (c *Client) ProbeRTT(ctx context.Context, maxAge time.Duration) {
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	if cur != nil {
		probeRTT(ctx, []*Session{cur}, maxAge)
	}
}

// setState records a state change for Status; retry is the wait before
// the next attempt when backing off, err why.
func (c *Client) setState(state string, cur *Session, retry time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state, c.cur, c.retryAt = state, cur, time.Time{}
	if retry > 0 {
		c.retryAt = time.Now().Add(retry)
	}
	if err != nil {
		c.lastErr = err.Error()
	}
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
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.SlowBackoff <= 0 {
		cfg.SlowBackoff = max(5*time.Minute, cfg.MaxBackoff)
	}
	cfg.SlowBackoff = max(cfg.SlowBackoff, cfg.MaxBackoff)
	if cfg.RotateRecords == 0 {
		cfg.RotateRecords = 1 << 23
	}
	t := cfg.TLS.Clone()
	t.NextProtos = []string{ALPN}
	if cfg.NoResumption {
		t.ClientSessionCache = nil
	} else {
		if t.ClientSessionCache == nil {
			t.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		t.ClientSessionCache = keepTickets{t.ClientSessionCache}
	}
	if !cfg.NoOffload {
		cfg.Hello.Caps |= CapGSO
	}
	// CapKeyUpdate only from a client that will try the own record layer
	// (the condition under which it captures secrets, tlsTransport.client):
	// on crypto/tls it counts every record of the connection and rotates
	// by reconnecting, whatever keys the server updates.
	cfg.Hello.Caps &^= CapKeyUpdate
	if tryOwnRecords(cfg.StdlibRecords) {
		cfg.Hello.Caps |= CapKeyUpdate
	}
	return &Client{cfg: cfg, tls: t, log: cfg.Logger, kick: make(chan string, 1)}, nil
}

// keepTickets is a session cache that keeps a ticket when a handshake that
// offered it fails. crypto/tls forgets the ticket on any failure, a
// connection closed by a busy server before it answered included, and
// then the client cannot resume (nor use the server's reserved handshake
// slots) on the next try. A ticket the server no longer takes costs
// nothing: TLS 1.3 falls back to a full handshake.
type keepTickets struct{ tls.ClientSessionCache }

func (k keepTickets) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		k.ClientSessionCache.Put(key, cs)
	}
}

// Connected describes an established connection, for logs and callers.
type Connected struct {
	Config    Config
	TLS       tls.ConnectionState
	Handshake time.Duration // dial + TLS + protocol handshake
}

// Connect dials the server and completes the TLS and protocol handshakes.
// It returns the established transport (TLS over the connection Dial
// made), for a Session to run over.
func (c *Client) Connect(ctx context.Context) (Transport, Connected, error) {
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := c.cfg.Dial(hctx)
	if err != nil {
		return nil, Connected{}, err // it names what it dialed (net.Dialer's do)
	}
	tlsCfg := c.tls
	if c.cfg.ServerName != nil {
		if name := c.cfg.ServerName(); name != "" && name != tlsCfg.ServerName {
			tlsCfg = c.tls.Clone()
			tlsCfg.ServerName = name
		}
	}
	t := newTLSTransport(raw, c.cfg.StdlibRecords, c.cfg.OwnAESGCM)
	t.client(tlsCfg)
	if err := t.handshake(hctx); err != nil {
		raw.Close()
		return nil, Connected{}, fmt.Errorf("tls handshake: %w", err)
	}
	cfg, err := t.clientHello(hctx, c.cfg.Hello)
	if err != nil {
		t.Close()
		return nil, Connected{}, fmt.Errorf("protocol handshake: %w", err)
	}
	return t, Connected{Config: cfg, TLS: *t.info.TLS, Handshake: time.Since(start)}, nil
}

// Kick replaces the current session with a new connection at once, e.g.
// when the underlay address the session was using went away (roaming) or
// the machine woke from sleep; while Run waits before the next attempt, it
// makes the attempt start now. While an attempt is under way there is no
// session to replace and Kick does nothing: what it was about (an old
// address, the time before a sleep) concerns a connection already gone.
func (c *Client) Kick(reason string) {
	c.mu.Lock()
	connecting := c.state == "" || c.state == StateConnecting
	c.mu.Unlock()
	if connecting {
		return
	}
	select {
	case c.kick <- reason:
	default:
	}
}

// Counts returns how many times the client reconnected and rotated.
func (c *Client) Counts() (reconnects, rotations uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconns, c.rotated
}

// Run connects and keeps a session up until ctx ends: after a failure it
// reconnects with exponential backoff and jitter, keeping the TUN device,
// its address and routes in place so applications see a pause, not an
// error. It returns nil on shutdown, or the last error when MaxAttempts
// consecutive attempts failed (a *ConnectError for a permanent problem)
// or Setup failed.
func (c *Client) Run(ctx context.Context) error {
	var (
		dev     tun.Device
		mux     *Mux
		muxDone chan error
	)
	defer func() {
		if muxDone != nil {
			mux.SetDefault(nil)
			// The reader blocks in the device's Read until the caller
			// closes the device.
			go func() { <-muxDone }()
		}
	}()
	backoff := c.cfg.MinBackoff
	var retry retryLog // what was logged about failed attempts
	failures := 0
	var down time.Time // when the last session ended
	rotateWait, nextRotate := c.cfg.MinBackoff, time.Time{}
	var cur *Session
	var curEnd chan error
	for {
		if cur == nil {
			c.setState(StateConnecting, nil, 0, nil)
			// A kick that came while the last session ended or during
			// the wait was for that session: this attempt answers it.
			select {
			case <-c.kick:
			default:
			}
			tr, info, err := c.Connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				failures++
				if c.cfg.MaxAttempts > 0 && failures >= c.cfg.MaxAttempts {
					return explain(err)
				}
				wait := c.connectFailed(&retry, err, failures, &backoff)
				c.setState(StateBackingOff, nil, wait, err)
				if !c.backOff(ctx, wait) {
					return nil
				}
				continue
			}
			failures = 0
			retry = retryLog{}
			d, err := c.setup(ctx, tr, info)
			if err != nil {
				return err
			}
			if dev == nil {
				dev = d
				// One session at a time: wait longer for room in its queue
				// before dropping, so local TCP senders see back-pressure
				// rather than loss.
				mux = NewMux(dev, MuxConfig{Stats: c.cfg.Stats, Logger: c.log, QueueWait: 50 * time.Millisecond})
			} else if d != dev {
				tr.Close()
				return errors.New("setup returned a different device on reconnect")
			}
			cur, curEnd = c.startSession(ctx, tr, info, mux)
			c.mu.Lock()
			c.server, c.config = cur.info.remote(), info.Config
			c.mu.Unlock()
			c.setState(StateUp, cur, 0, nil)
			if muxDone == nil {
				// Start reading only once the session is the default, so
				// the first packets are not dropped for want of one.
				muxDone = make(chan error, 1)
				go func() { muxDone <- mux.Run(ctx) }()
			}
			// remote_addr is the TCP peer: the server, or the proxy in
			// between; server_name, when the dialer names it, the server.
			attrs := []any{"remote_addr", cur.info.remote(), "tunnel_addr", info.Config.Addr,
				"server_tunnel_addr", info.Config.ServerAddr, "mtu", info.Config.MTU, "routes", len(info.Config.Routes),
				"keepalive", info.Config.Keepalive, "gso", cur.peerGSO, "handshake_ms", info.Handshake.Milliseconds()}
			if c.cfg.ServerName != nil {
				if name := c.cfg.ServerName(); name != "" {
					attrs = append(attrs, "server_name", name)
				}
			}
			if down.IsZero() {
				c.log.Info("connected", append(attrs, cur.info.attrs()...)...)
			} else {
				c.mu.Lock()
				c.reconns++
				c.mu.Unlock()
				c.log.Info("reconnected", append(append(attrs, "outage_ms", time.Since(down).Milliseconds()), cur.info.attrs()...)...)
			}
		}

		var rotate <-chan time.Time
		rt := time.NewTimer(c.rotateCheck())
		rotate = rt.C
		select {
		case <-ctx.Done():
			rt.Stop()
			<-curEnd
			return nil
		case err := <-curEnd:
			rt.Stop()
			if ctx.Err() != nil {
				return nil
			}
			down = time.Now()
			if down.Sub(cur.started) > stableSession {
				backoff = c.cfg.MinBackoff
			}
			cur = nil
			wait := Jitter(c.cfg.MinBackoff)
			var pc *PeerClosedError
			if errors.As(err, &pc) && pc.Code == CloseReplaced {
				// Another client with this identity took over: back
				// off as after a failure, so two devices sharing a
				// certificate do not evict each other in a tight loop.
				failures++
				wait = Jitter(backoff)
				backoff = min(2*backoff, c.cfg.MaxBackoff)
				c.log.Error("session replaced by another connection with this client's identity; is the certificate used twice?", "reason", errString(err), "retry_in", wait.Round(time.Millisecond))
			} else if errors.As(err, &pc) && pc.Code == CloseReconfigure {
				c.log.Info("server changed this client's configuration; reconnecting to apply it", "reason", errString(err), "retry_in", wait.Round(time.Millisecond))
			} else if errors.As(err, &pc) && pc.Code == CloseDraining {
				c.log.Info("the server is being drained; reconnecting, to another server if there is one", "reason", pc.Reason, "retry_in", wait.Round(time.Millisecond))
			} else if errors.As(err, &pc) && pc.Code == CloseKicked {
				c.log.Warn("kicked: the server's operator closed this session; reconnecting", "reason", pc.Reason, "retry_in", wait.Round(time.Millisecond))
			} else {
				c.log.Warn("session ended; reconnecting", "reason", errString(err), "retry_in", wait.Round(time.Millisecond))
			}
			c.setState(StateBackingOff, nil, wait, errors.New(errString(err)))
			if !c.backOff(ctx, wait) {
				return nil
			}
		case reason := <-c.kick:
			rt.Stop()
			c.log.Info("replacing session", "reason", reason)
			down = time.Now()
			// The old path is likely dead: do not wait for it to drain;
			// it closes in the background while the new one connects.
			go func(old *Session, end chan error) {
				old.Close(CloseNormal, reason)
				<-end
			}(cur, curEnd)
			cur = nil
		case <-rotate:
			if !c.rotationDue(cur) || time.Now().Before(nextRotate) {
				continue
			}
			next, nextEnd, err := c.rotate(ctx, cur, mux)
			if err != nil {
				// Keep the current session; retry with backoff so a
				// server that refuses the overlap is not hammered.
				wait := Jitter(rotateWait)
				nextRotate = time.Now().Add(wait)
				rotateWait = min(2*rotateWait, c.cfg.MaxBackoff)
				c.log.Warn("session rotation failed; keeping the current session", "err", err, "retry_in", wait.Round(time.Millisecond))
				continue
			}
			rotateWait, nextRotate = c.cfg.MinBackoff, time.Time{}
			c.setState(StateUp, next, 0, nil)
			// The old session drains and closes by itself (the server
			// retires it when the new one registers); its end is logged
			// here, not treated as a failure.
			go func(old *Session, end chan error) {
				err := <-end
				c.log.Debug("rotated session closed", "reason", errString(err))
			}(cur, curEnd)
			cur, curEnd = next, nextEnd
		}
	}
}

// stableSession is how long a session must have lived for its end to
// reset the reconnect backoff.
const stableSession = 10 * time.Second

// setup logs a connection's parameters and applies its configuration.
func (c *Client) setup(ctx context.Context, tr Transport, info Connected) (tun.Device, error) {
	dev, err := c.cfg.Setup(ctx, info.Config)
	if err != nil {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		writeControlFrame(wctx, tr, TypeClose, MarshalClose(CloseNormal, "client setup failed"))
		cancel()
		tr.Close()
		return nil, fmt.Errorf("setup: %w", err)
	}
	return dev, nil
}

// startSession creates a session on an established connection, makes it
// the mux's default and runs it; its end cause arrives on the channel.
func (c *Client) startSession(ctx context.Context, tr Transport, info Connected, mux *Mux) (*Session, chan error) {
	gso := !c.cfg.NoOffload && mux.CanGSO()
	sess := NewSession(SessionConfig{
		Transport:     tr,
		RekeyRecords:  c.cfg.RotateRecords,
		PeerKeyUpdate: info.Config.Caps&CapKeyUpdate != 0,
		Dev:           mux.dev,
		MTU:           info.Config.MTU,
		PeerGSO:       gso && info.Config.Caps&CapGSO != 0,
		AcceptGSO:     gso,
		Keepalive:     info.Config.Keepalive,
		QueueLen:      c.cfg.QueueLen,
		ShutdownCode:  CloseNormal,
		Peer:          "server",
		Logger:        c.log,
		Stats:         c.cfg.Stats,
	})
	end := make(chan error, 1)
	go func() { end <- sess.Run(ctx) }()
	mux.SetDefault(sess)
	mux.SetGSO(sess.peerGSO)
	return sess, end
}

// rotateCheck is how often Run looks at the session's budget.
func (c *Client) rotateCheck() time.Duration {
	d := time.Second
	if c.cfg.RotateAfter > 0 {
		d = min(d, c.cfg.RotateAfter/4)
	}
	if c.cfg.RotateBytes > 0 {
		d = min(d, 100*time.Millisecond)
	}
	return max(d, 50*time.Millisecond)
}

func (c *Client) rotationDue(s *Session) bool {
	records, bytes := s.Usage()
	switch {
	case records >= c.cfg.RotateRecords && !s.RekeysInBand():
		return true
	case c.cfg.RotateBytes > 0 && bytes >= c.cfg.RotateBytes:
		return true
	case c.cfg.RotateAfter > 0 && time.Since(s.started) >= c.cfg.RotateAfter:
		return true
	}
	return false
}

// rotate opens a new connection, moves traffic to it and lets the old
// session drain. The server retires the old session when the new one
// registers (same identity), after the new one's Config was sent.
func (c *Client) rotate(ctx context.Context, old *Session, mux *Mux) (*Session, chan error, error) {
	records, bytes := old.Usage()
	tr, info, err := c.Connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.cfg.Setup(ctx, info.Config); err != nil {
		tr.Close()
		return nil, nil, fmt.Errorf("setup: %w", err)
	}
	next, end := c.startSession(ctx, tr, info, mux)
	c.mu.Lock()
	c.server, c.config = next.info.remote(), info.Config
	c.rotated++
	c.mu.Unlock()
	c.log.Info("session rotated", "records", records, "bytes", bytes, "age", time.Since(old.started).Round(time.Millisecond),
		"handshake_ms", info.Handshake.Milliseconds(), "resumed", info.TLS.DidResume)
	return next, end, nil
}

// backOff waits d before the next attempt, less if Kick asks for one now
// (the network came back, the machine woke, the user asked); it reports
// false if ctx ended.
func (c *Client) backOff(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case reason := <-c.kick:
		c.log.Info("trying again now", "reason", reason)
	}
	return true
}

// Jitter spreads d uniformly over [d/2, 3d/2) so the clients of a
// restarted server do not come back in lockstep: ten thousand clients
// whose sessions ended at the same instant retry over a window as long as
// the wait itself, and the windows widen as the backoff doubles. (With
// ±25% they arrived within half the wait, and most found the handshake
// slots full again.)
func Jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d+1)
}

func errString(err error) string {
	if err == nil {
		return "stopped"
	}
	return err.Error()
}
