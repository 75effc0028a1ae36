package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/tun"
)

// Assigner hands out tunnel addresses: the same identity always gets the
// same address. routing.Pool implements it.
type Assigner interface {
	Assign(identity string) (netip.Addr, error)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// TLS is the server's TLS configuration (TLS 1.3, client certificates
	// required). NewServer sets NextProtos to ALPN on a clone.
	TLS *tls.Config
	// Identity extracts the client's identity from a verified handshake.
	Identity func(tls.ConnectionState) (string, error)
	// Dev is the server's TUN device.
	Dev tun.Device
	// Pool assigns client addresses inside Subnet.
	Pool Assigner
	// Subnet is the tunnel subnet; ServerAddr is the server's address in it.
	Subnet     netip.Prefix
	ServerAddr netip.Addr
	// Pool6, Subnet6 and ServerAddr6 add an IPv6 address per client
	// (dual stack); Pool6 nil means IPv4 only.
	Pool6       Assigner
	Subnet6     netip.Prefix
	ServerAddr6 netip.Addr
	// MTU is pushed to clients.
	MTU int
	// Routes are pushed to clients to be installed via the tunnel.
	Routes []netip.Prefix
	// DNS lists resolvers pushed to clients.
	DNS []netip.Addr
	// Keepalive is the ping interval pushed to clients and used here.
	Keepalive time.Duration
	// HandshakeTimeout bounds the TLS and protocol handshakes; default 10s.
	HandshakeTimeout time.Duration
	// HelloTimeout bounds the wait for the client's first TLS message (its
	// ClientHello) after accept, so idle connections give their handshake
	// slot back soon; default 2s.
	HelloTimeout time.Duration
	// MaxConnections caps the connections open at once (handshaking or in
	// a session); more are closed at accept and counted. 0: no cap. Set
	// it below the process's descriptor limit so the server refuses
	// before it runs out.
	MaxConnections int
	// QueueLen bounds each session's send queue (chunks).
	QueueLen int
	// NoOffload turns off GSO super-packets (DATA_GSO) in both directions;
	// packets are then split by the TUN device and sent one per frame.
	NoOffload bool
	// StdlibRecords keeps the data phase on crypto/tls's record layer
	// instead of handing it over to this package's own (RecordConn). The
	// bytes on the wire are the same either way; it is slower.
	StdlibRecords bool
	// OwnAESGCM seals and opens AES-GCM records with tlsvpn's own AES-GCM
	// assembly (tunnel/internal/aesgcm) instead of Go's, where OwnAESGCMCheck
	// allows it. Off by default: it is new cryptographic code outside Go's
	// FIPS module.
	OwnAESGCM bool
	// RekeyRecords is how many records the own record layer sends or
	// receives under one traffic key before it updates the keys in-band
	// with a TLS KeyUpdate (peers that announce CapKeyUpdate); 0 means
	// DefaultRekeyRecords.
	RekeyRecords uint64
	// TuneConn, if set, is called on every accepted connection before the
	// TLS handshake (socket options).
	TuneConn func(net.Conn)
	// Limits caps handshakes and sessions; nil uses the defaults.
	Limits *Limiter
	// CheckPeer, if set, is consulted for every live session when
	// CheckSessions runs (after a CRL reload, on a timer) with its
	// transport's TLS state (TransportInfo.TLS; the zero state for a
	// transport without TLS): a non-nil error closes that session with
	// CloseRevoked and the error as reason.
	CheckPeer func(tls.ConnectionState) error
	// Policy, if set, returns the per-client policy of an identity
	// (tunneld --clients); nil gives every client DefaultPolicy.
	Policy func(identity string) Policy
	// DefaultPolicy applies to clients Policy says nothing special about.
	// Its Routes are ignored: ServerConfig.Routes are the default routes.
	DefaultPolicy Policy
	// PeersChanged, if set, is called with the live sessions that have
	// accepted networks or reach_clients (sorted by identity) after every
	// change to that set, one call at a time, so the caller can install
	// kernel routes to networks behind clients and the firewall's
	// client-to-client rules. Sessions with neither (most clients) come
	// and go without a call. It must not call back into the Server,
	// except Peers.
	PeersChanged func([]Peer)
	Logger       *slog.Logger
	Stats        *Stats

	// Claimed and Released, if set, are told when an identity's session
	// becomes this server's registered session while it had none, and
	// when its registered session ends with no newer one in its place (a
	// session replaced by a reconnect is neither released nor claimed
	// again). They run while the server's lock is held, in the order the
	// changes happen, so they must not block nor call back into the
	// Server: they are for recording (a session directory).
	Claimed, Released func(identity string)
}

// Policy is the server's configuration for one client identity.
type Policy struct {
	// Routes, if not nil, replaces ServerConfig.Routes as the routes
	// pushed to this client (empty and not nil: push none).
	Routes []netip.Prefix
	// Advertise lists the networks this client may announce (a site
	// gateway's LANs): an announced prefix is accepted if it lies inside
	// one of them. Accepted prefixes are routed to the client and allowed
	// as inner source addresses of its packets (anti-spoofing).
	Advertise []netip.Prefix
	// ReachClients lets the client open connections to other clients
	// (enforced by the host firewall; see Peer).
	ReachClients bool
}

// Equal reports whether p and q are the same policy.
func (p Policy) Equal(q Policy) bool {
	return p.sameConfig(q) && p.ReachClients == q.ReachClients
}

// sameConfig reports whether p and q give a client the same CONFIG
// (routes and accepted networks): if not, the client must reconnect.
func (p Policy) sameConfig(q Policy) bool {
	return (p.Routes == nil) == (q.Routes == nil) && slices.Equal(p.Routes, q.Routes) &&
		slices.Equal(p.Advertise, q.Advertise)
}

// Peer describes one live client session for the host's routing and
// firewall: its tunnel addresses, the networks behind it that the server
// accepted, and whether it may reach other clients.
type Peer struct {
	Identity     string
	Addrs        []netip.Addr
	Nets         []netip.Prefix
	ReachClients bool
}

// Server accepts clients and runs their sessions over one TUN device.
type Server struct {
	cfg   ServerConfig // immutable after NewServer
	tls   *tls.Config
	log   *slog.Logger
	stats *Stats
	mux   *Mux

	lim      *Limiter
	logLimit rateLog

	mu       sync.Mutex          // guards sessions, special and nonGSO
	sessions map[string]*Session // by identity
	// special are the sessions PeersChanged reports: with accepted
	// networks or reach_clients. Usually few, so connects and disconnects
	// of the others cost nothing there.
	special map[string]*Session
	nonGSO  int // registered sessions that cannot take DATA_GSO

	peersMu sync.Mutex // serializes PeersChanged calls

	live       atomic.Pointer[Live] // settings SetLive may change; cfg's fields of the same name are unused
	capturing  bool                 // traffic secrets are captured for the own record layer
	conns      atomic.Int64         // connections open (MaxConnections)
	draining   atomic.Bool          // Drain called: new connections are closed at once
	peak       atomic.Int64         // most sessions registered at once; written under mu
	mustResume sync.Map             // conn under TLS -> true: admitted on a reserved slot, must resume
}

// NewServer validates cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.TLS == nil:
		return nil, errors.New("server: no TLS config")
	case cfg.Identity == nil:
		return nil, errors.New("server: no identity function")
	case cfg.Dev == nil || cfg.Pool == nil:
		return nil, errors.New("server: no TUN device or address pool")
	case !cfg.Subnet.Contains(cfg.ServerAddr):
		return nil, fmt.Errorf("server: address %v outside subnet %v", cfg.ServerAddr, cfg.Subnet)
	case cfg.Pool6 != nil && (!cfg.Subnet6.Addr().Is6() || !cfg.Subnet6.Contains(cfg.ServerAddr6)):
		return nil, fmt.Errorf("server: IPv6 address %v outside IPv6 subnet %v", cfg.ServerAddr6, cfg.Subnet6)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	t := cfg.TLS.Clone()
	t.NextProtos = []string{ALPN}
	capture := tryOwnRecords(cfg.StdlibRecords)
	if capture {
		// Only where the own record layer will be used: otherwise no
		// traffic secret is ever captured.
		t = CaptureSecrets(t)
	}
	lim := cfg.Limits
	if lim == nil {
		lim = NewLimiter(LimitConfig{})
	}
	s := &Server{
		lim:      lim,
		cfg:      cfg,
		log:      cfg.Logger,
		stats:    cfg.Stats,
		mux:      NewMux(cfg.Dev, MuxConfig{Stats: cfg.Stats, Logger: cfg.Logger}),
		sessions: make(map[string]*Session),
		special:  make(map[string]*Session),
	}
	s.live.Store(new(liveOf(cfg)))
	s.capturing = capture
	s.tls = s.admitHello(t)
	return s, nil
}

// helloGrace is the least time a connection that waited for its slot has
// to show its ClientHello.
const helloGrace = 200 * time.Millisecond

// errNoResumption refuses a ClientHello on a reserved handshake slot that
// offers no session to resume.
var errNoResumption = errors.New("server busy: handshake slots are full and this client neither resumes a session nor comes from a known address")

// admitHello returns t with a GetConfigForClient that runs first on every
// ClientHello: the hello deadline no longer applies, and a connection
// admitted on a reserved slot must offer a session to resume
// (pre_shared_key, RFC 8446 section 4.2.11).
func (s *Server) admitHello(t *tls.Config) *tls.Config {
	out := t.Clone()
	inner := t.GetConfigForClient
	out.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		hi.Conn.SetReadDeadline(time.Time{})
		if _, ok := s.mustResume.Load(hi.Conn); ok && !slices.Contains(hi.Extensions, extensionPreSharedKey) {
			s.lim.RefuseResumption()
			return nil, errNoResumption
		}
		if inner != nil {
			return inner(hi)
		}
		return nil, nil
	}
	return out
}

// extensionPreSharedKey is the TLS extension a resuming ClientHello carries.
const extensionPreSharedKey = 41

// SetSessionTicketKeys sets the keys that seal and open TLS session
// tickets (see tls.Config.SetSessionTicketKeys): the first seals new
// tickets, each opens them. Handshakes in progress are not disturbed;
// it may be called at any time, e.g. after a rotation. Until it is
// first called, crypto/tls uses keys of its own. (ServerConfig.TLS must
// not have keys set: a clone would keep them and hide these.)
func (s *Server) SetSessionTicketKeys(keys [][32]byte) {
	s.tls.SetSessionTicketKeys(keys)
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return s.stats }

// Connections returns the number of connections open: handshaking or in
// a session (MaxConnections counts these).
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// PeakSessions returns the most sessions that were live at once.
func (s *Server) PeakSessions() int { return int(s.peak.Load()) }

// SessionInfo describes one live session for status output.
type SessionInfo struct {
	Identity      string
	Addrs         []netip.Addr   // tunnel addresses
	Nets          []netip.Prefix // accepted networks behind the client
	Remote        string         // underlay address of the client
	Started       time.Time      // when the session was established
	LastHandshake time.Time      // its TLS handshake or last KeyUpdate
	Resumed       bool           // the TLS handshake resumed a session
	TxBytes       uint64         // IP bytes sent to the client
	RxBytes       uint64         // IP bytes received from the client
	RTT           time.Duration  // last PING round trip; 0 if none measured
}

// SessionList returns the live sessions (one per identity), sorted by
// identity. It reads counters the data path keeps anyway, so it costs the
// sessions nothing.
func (s *Server) SessionList() []SessionInfo {
	s.mu.Lock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for id, sess := range s.sessions {
		tx, rx := sess.Bytes()
		out = append(out, SessionInfo{
			Identity:      id,
			Addrs:         sess.addrs,
			Nets:          sess.nets,
			Remote:        sess.info.remote(),
			Started:       sess.started,
			LastHandshake: sess.LastHandshake(),
			Resumed:       sess.info.Resumed,
			TxBytes:       tx,
			RxBytes:       rx,
			RTT:           sess.RTT(),
		})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.Identity, b.Identity) })
	return out
}

// ProbeRTT sends a PING on every live session whose round-trip time was
// not measured within maxAge, and waits until their PONGs arrived or ctx
// ends. The server otherwise pings only idle clients (clients ping it),
// so a busy session's RTT is measured on demand rather than by more
// keepalive traffic for everyone.
func (s *Server) ProbeRTT(ctx context.Context, maxAge time.Duration) {
	s.mu.Lock()
	list := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	s.mu.Unlock()
	probeRTT(ctx, list, maxAge)
}

// probeRTT sends a PING on each of sessions whose round-trip time was not
// measured within maxAge, and waits until their PONGs arrived, they
// ended, or ctx ends.
func probeRTT(ctx context.Context, sessions []*Session, maxAge time.Duration) {
	asked := time.Now()
	stale := slices.DeleteFunc(sessions, func(sess *Session) bool { return asked.Sub(sess.rttMeasured()) <= maxAge })
	for _, sess := range stale {
		sess.RequestPing()
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for len(stale) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stale = slices.DeleteFunc(stale, func(sess *Session) bool {
			select {
			case <-sess.Done():
				return true
			default:
			}
			return !sess.rttMeasured().Before(asked)
		})
	}
}

// Kick closes the live session of identity with CloseKicked and reason,
// which the client logs before it reconnects. It reports whether there
// was a session. (To keep a client out, revoke its certificate.)
func (s *Server) Kick(identity, reason string) bool {
	return s.closeIdentity(identity, CloseKicked, reason, "closing session on request")
}

// Replace closes the live session of identity with CloseReplaced and
// reason: a newer session of the same identity lives elsewhere (on
// another gateway of a fleet). The client reconnects as after any
// replacement. It reports whether there was a session.
func (s *Server) Replace(identity, reason string) bool {
	return s.closeIdentity(identity, CloseReplaced, reason, "closing session: replaced elsewhere")
}

// closeIdentity closes the live session of identity, if any, with code
// and reason, logging msg first. It reports whether there was a session.
func (s *Server) closeIdentity(identity string, code uint16, reason, msg string) bool {
	s.mu.Lock()
	sess := s.sessions[identity]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	s.log.Info(msg, "peer", identity, "reason", reason)
	sess.Close(code, reason)
	return true
}

// Drain takes this server out of service without ending it: from now on
// every new connection is closed at once (and counted), and the live
// sessions are closed with CloseDraining, gracefully (what is queued is
// delivered first), at most perSecond a second (0 or less: all at once),
// so that their clients reconnect, to another gateway, without a crowd.
// It returns the number of sessions it closed when none is left, or early
// when ctx ends. Only a restart ends the drain.
func (s *Server) Drain(ctx context.Context, perSecond float64) int {
	if s.draining.Swap(true) {
		s.log.Info("draining again: closing the sessions left")
	} else {
		s.log.Warn("draining: refusing new connections and moving clients off", "rate_per_second", perSecond)
	}
	var gap time.Duration
	if perSecond > 0 {
		gap = time.Duration(float64(time.Second) / perSecond)
	}
	closed := 0
	for ctx.Err() == nil {
		s.mu.Lock()
		var id string
		var sess *Session
		for id, sess = range s.sessions {
			break
		}
		s.mu.Unlock()
		if sess == nil {
			break
		}
		sess.Close(CloseDraining, "this gateway is being drained: reconnect, to another one")
		closed++
		// Wait for it to be gone (a graceful close takes up to 2 s),
		// and for the pace.
		t := time.Now()
		for ctx.Err() == nil && s.registered(id, sess) && time.Since(t) < 3*time.Second {
			sleepCtx(ctx, 10*time.Millisecond)
		}
		if gap > time.Since(t) {
			sleepCtx(ctx, gap-time.Since(t))
		}
	}
	return closed
}

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// registered reports whether sess is still id's registered session.
func (s *Server) registered(id string, sess *Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id] == sess
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Serve accepts connections on ln until ctx ends, then closes every session
// (telling clients the server shuts down) and returns. The TUN reader runs
// for as long as Serve does.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	hs := newHandshakers(ctx)
	muxErr := make(chan error, 1)
	go func() { muxErr <- s.mux.Run(ctx) }()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var err error
	var backoff time.Duration
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() != nil || errors.Is(aerr, net.ErrClosed) {
				break
			}
			// Out of descriptors (EMFILE, ENFILE), out of memory, a
			// connection reset before accept: none of these is a reason
			// to end the live sessions. Count, log (rate limited), back
			// off a little, go on.
			s.stats.AcceptErrors.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logLimit.warn(s.log, "accept", "accept failed; retrying", "err", aerr, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			continue
		}
		backoff = 0
		if s.draining.Load() {
			s.stats.RefusedDraining.Add(1)
			s.logLimit.warn(s.log, "draining", "refusing connection: this gateway is draining", "remote_addr", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if limit := s.live.Load().MaxConnections; limit > 0 && s.conns.Load() >= int64(limit) {
			s.lim.stats.RefusedConns.Add(1)
			s.stats.HandshakeFailures.Add(1)
			s.logLimit.warn(s.log, "conns", "refusing connection: too many connections open", "limit", limit, "remote_addr", c.RemoteAddr().String())
			c.Close()
			continue
		}
		// Pre-authentication limits, before any byte is read.
		adm, aerr := s.lim.Admit(SourceAddr(c.RemoteAddr()), time.Now())
		if aerr != nil {
			s.stats.HandshakeFailures.Add(1)
			s.logLimit.warn(s.log, "admit:"+aerr.Error(), "refusing connection: "+aerr.Error(), "remote_addr", c.RemoteAddr().String(), "limits", s.lim)
			c.Close()
			continue
		}
		s.conns.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.conns.Add(-1)
			s.handle(ctx, c, adm, hs)
		}()
	}
	cancel()
	wg.Wait()
	hs.wait()
	s.cfg.Dev.Close()
	if merr := <-muxErr; err == nil {
		err = merr
	}
	return err
}

// handle runs one connection from accept to the end of its session.
func (s *Server) handle(ctx context.Context, raw net.Conn, adm *Admission, hs *handshakers) {
	accepted := time.Now()
	live := s.live.Load() // one view of the settings for the whole connection
	releaseHandshake := adm.Release
	defer releaseHandshake() // idempotent; also frees the slot after a panic
	if err := adm.Wait(ctx); err != nil {
		// Every slot stayed taken for MaxQueueWait.
		s.stats.HandshakeFailures.Add(1)
		s.logLimit.warn(s.log, "admit:"+err.Error(), "refusing connection: "+err.Error()+" (queued too long)", "remote_addr", raw.RemoteAddr().String(), "limits", s.lim)
		raw.Close()
		return
	}
	remote := raw.RemoteAddr().String()
	// The connection's logger is made once its peer is known (named): a
	// With costs formatting and allocations that a connection failing
	// before then, whose lines name remote_addr themselves and are rate
	// limited, does not need.
	log, named := s.log, false
	defer func() {
		if r := recover(); r != nil {
			s.stats.Panics.Add(1)
			if named {
				log.Error("connection handler panicked", "panic", r)
			} else {
				log.Error("connection handler panicked", "remote_addr", remote, "panic", r)
			}
			raw.Close()
		}
	}()
	if s.cfg.TuneConn != nil {
		s.cfg.TuneConn(raw)
	}
	tr := newTLSTransport(raw, s.cfg.StdlibRecords, s.cfg.OwnAESGCM)
	tr.server(s.tls)
	hctx, cancel := context.WithTimeout(ctx, live.HandshakeTimeout)
	defer cancel()
	// The ClientHello deadline runs from accept: a client sends it at
	// once, so after a wait in the queue it is already there, and an idle
	// connection gives its slot back right away (after a short grace).
	// admitHello clears the deadline when the ClientHello arrives.
	helloBy := accepted.Add(live.HelloTimeout)
	if grace := time.Now().Add(helloGrace); helloBy.Before(grace) {
		helloBy = grace
	}
	raw.SetReadDeadline(helloBy)
	if adm.MustResume {
		s.mustResume.Store(tr.helloConn(), true)
	}
	var (
		id    string
		hello Hello
		err   error
	)
	hs.do(func() { id, hello, err = s.handshake(hctx, tr) })
	if adm.MustResume {
		s.mustResume.Delete(tr.helloConn())
	}
	releaseHandshake()
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		var pe *ProtocolError
		if errors.As(err, &pe) {
			writeControlFrame(hctx, tr, TypeClose, MarshalClose(CloseProtocol, pe.Err.Error()))
		}
		s.logLimit.warn(log, "handshake", "handshake failed", "remote_addr", remote, "err", err)
		tr.Close()
		return
	}
	log, named = s.log.With("remote_addr", remote, "peer", id), true
	releaseSession, err := s.lim.AcquireSession(id)
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		s.logLimit.warn(log, "sessions", "refusing client", "err", err)
		writeControlFrame(hctx, tr, TypeClose, MarshalClose(ClosePolicy, err.Error()))
		tr.Close()
		return
	}
	defer releaseSession()

	addr, err := s.cfg.Pool.Assign(id)
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		log.Warn("refusing client: no address", "err", err)
		writeControlFrame(hctx, tr, TypeClose, MarshalClose(ClosePolicy, "no tunnel address available: "+err.Error()))
		tr.Close()
		return
	}
	var addr6 netip.Addr
	if s.cfg.Pool6 != nil {
		if addr6, err = s.cfg.Pool6.Assign(id); err != nil {
			s.stats.HandshakeFailures.Add(1)
			log.Warn("refusing client: no IPv6 address", "err", err)
			writeControlFrame(hctx, tr, TypeClose, MarshalClose(ClosePolicy, "no IPv6 tunnel address available: "+err.Error()))
			tr.Close()
			return
		}
	}
	pol := s.policy(id)
	routes := live.Routes
	if pol.Routes != nil {
		routes = pol.Routes
	}
	gso := !s.cfg.NoOffload && s.mux.CanGSO()
	var caps uint32
	if s.capturing {
		// Only a server that will try the own record layer lets the
		// client keep its keys in-band; on crypto/tls it counts every
		// record of the connection, and the client had better rotate
		// by reconnecting. A hand-over refused after this CONFIG: see
		// CapKeyUpdate.
		caps |= CapKeyUpdate
	}
	if gso {
		caps |= CapGSO
	}
	cfg := Config{
		Addr:       netip.PrefixFrom(addr, s.cfg.Subnet.Bits()),
		ServerAddr: s.cfg.ServerAddr,
		MTU:        s.cfg.MTU,
		Routes:     routes,
		Keepalive:  live.Keepalive,
		Caps:       caps,
		DNS:        live.DNS,
	}
	allowed := []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}
	addrs := []netip.Addr{addr}
	if addr6.IsValid() {
		cfg.Addr6 = netip.PrefixFrom(addr6, s.cfg.Subnet6.Bits())
		cfg.Server6 = s.cfg.ServerAddr6
		allowed = append(allowed, netip.PrefixFrom(addr6, 128))
		addrs = append(addrs, addr6)
	}
	// Register before sending Config: once the client knows its address,
	// packets for it must find the session (they wait in its queue).
	sess := NewSession(SessionConfig{
		Transport:     tr,
		RekeyRecords:  s.cfg.RekeyRecords,
		PeerKeyUpdate: hello.Caps&CapKeyUpdate != 0,
		Dev:           s.cfg.Dev,
		Allowed:       allowed,
		MTU:           s.cfg.MTU,
		PeerGSO:       gso && hello.Caps&CapGSO != 0,
		AcceptGSO:     gso,
		Keepalive:     live.Keepalive,
		PingWhenIdle:  true,
		QueueLen:      live.QueueLen,
		ShutdownCode:  CloseShutdown,
		Peer:          id,
		Logger:        log,
		Stats:         s.stats,
	})
	sess.releaseLimit = releaseSession
	s.mu.Lock()
	if cur := s.live.Load(); cur != live {
		// SetLive ran during the handshake: the CONFIG not yet sent
		// carries the routes and DNS in force now (SetLive swaps under
		// s.mu, so it either sees this session or this sees its change).
		cfg.DNS = cur.DNS
		if pol.Routes == nil {
			cfg.Routes = cur.Routes
		}
	}
	// Networks behind the client: only what its policy allows and no
	// other client holds. Accepting them in the same hold of mu as the
	// registration keeps two clients from both winning a network. (The
	// session has not started: its allowed sources can still grow.)
	nets := s.acceptNets(log, id, hello.Advertise, pol.Advertise)
	cfg.Accepted = nets
	sess.cfg.Allowed = append(sess.cfg.Allowed, nets...)
	sess.addrs, sess.nets, sess.policy = addrs, nets, pol
	old := s.sessions[id]
	s.sessions[id] = sess
	if old == nil && s.cfg.Claimed != nil {
		s.cfg.Claimed(id)
	}
	if n := int64(len(s.sessions)); n > s.peak.Load() {
		s.peak.Store(n)
	}
	changed := s.setSpecialLocked(id, sess)
	if !sess.peerGSO {
		s.nonGSO++
	}
	// Read super-packets whole only while every client can take them.
	s.mux.SetGSO(gso && s.nonGSO == 0)
	s.mu.Unlock()
	others := s.mux.Add(sess, addrs...)
	if len(nets) > 0 {
		s.mux.SetNets(sess, nets)
	}
	if changed {
		s.peersChanged()
	}
	payload, err := MarshalConfig(cfg)
	if err == nil {
		err = writeControlFrame(hctx, tr, TypeConfig, payload)
	}
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		log.Warn("sending config failed", "err", err)
		s.unregister(id, sess)
		if old != nil {
			old.Close(CloseReplaced, "replaced by a connection that then failed")
		}
		tr.Close()
		return
	}
	cancel()
	// Only now retire the session this one replaces: it sends what it
	// still has queued and a Close, and keeps reading until the client
	// answers, so a reconnect or rotation loses nothing in flight.
	if old != nil {
		s.stats.SessionsReplaced.Add(1)
		// A retiring session no longer counts against the identity's
		// session limit: a client roaming twice in quick succession must
		// not be refused by its own lingering sessions.
		old.releaseLimit()
		old.Close(CloseReplaced, "replaced by a new connection from "+remote)
	}
	for _, o := range others {
		if o != old {
			o.Close(CloseReplaced, "address reassigned")
		}
	}

	s.stats.SessionsOpened.Add(1)
	if sess.info.Resumed {
		s.stats.SessionsResumed.Add(1)
	}
	s.lim.MarkKnown(SourceAddr(raw.RemoteAddr()), time.Now())
	attrs := []any{"tunnel_addr", cfg.Addr, "gso", sess.peerGSO, "software", hello.Software}
	if cfg.Addr6.IsValid() {
		attrs = append(attrs, "tunnel_addr6", cfg.Addr6)
	}
	if len(nets) > 0 {
		attrs = append(attrs, "networks", fmt.Sprint(nets))
	}
	log.Info("session established", append(attrs, sess.info.attrs()...)...)

	err = sess.Run(ctx)
	s.unregister(id, sess)
	s.stats.SessionsClosed.Add(1)
	log.Info("session closed", "tunnel_addr", cfg.Addr, "reason", err)
}

// handshake completes TLS (mutual, verified by crypto/tls against the CA),
// checks ALPN, derives the identity and reads the client's Hello. Nothing
// from the peer is parsed before the TLS handshake has verified it.
func (s *Server) handshake(ctx context.Context, tr *tlsTransport) (string, Hello, error) {
	if err := tr.handshake(ctx); err != nil {
		return "", Hello{}, fmt.Errorf("handshake: %w", err)
	}
	cs := *tr.Info().TLS
	if cs.Version != tls.VersionTLS13 {
		return "", Hello{}, fmt.Errorf("tls: negotiated %s, require TLS 1.3", tls.VersionName(cs.Version))
	}
	if err := checkALPN(cs); err != nil {
		return "", Hello{}, err
	}
	id, err := s.cfg.Identity(cs)
	if err != nil {
		return "", Hello{}, fmt.Errorf("client identity: %w", err)
	}
	p, err := tr.readControl(ctx, TypeHello)
	if err != nil {
		return id, Hello{}, err
	}
	h, err := UnmarshalHello(p)
	if err != nil {
		return id, Hello{}, &ProtocolError{Err: err}
	}
	return id, h, nil
}

// unregister removes sess from the routing table and the identity map,
// unless a newer session already took its place.
func (s *Server) unregister(id string, sess *Session) {
	s.mux.Remove(sess)
	s.mu.Lock()
	if s.sessions[id] == sess {
		delete(s.sessions, id)
		if s.cfg.Released != nil {
			s.cfg.Released(id)
		}
	}
	changed := false
	if s.special[id] == sess {
		delete(s.special, id)
		changed = true
	}
	if !sess.peerGSO {
		s.nonGSO--
	}
	s.mux.SetGSO(!s.cfg.NoOffload && s.nonGSO == 0)
	s.mu.Unlock()
	if changed {
		s.peersChanged()
	}
}

// setSpecialLocked makes sess the registered session of id in the set
// PeersChanged reports, if it has networks or reach_clients, and reports
// whether that set changed. The caller holds s.mu.
func (s *Server) setSpecialLocked(id string, sess *Session) bool {
	had := s.special[id] != nil
	if len(sess.nets) > 0 || sess.policy.ReachClients {
		s.special[id] = sess
		return true
	}
	delete(s.special, id)
	return had
}

// policy returns the policy for identity.
func (s *Server) policy(id string) Policy {
	if s.cfg.Policy != nil {
		return s.cfg.Policy(id)
	}
	p := s.cfg.DefaultPolicy
	p.Routes = nil
	return p
}

// acceptNets returns the prefixes of adv that identity id may announce:
// inside one of allowed, not a default route, not overlapping the tunnel
// subnets, and not overlapping a network another identity's live session
// holds. Each refusal is logged and counted. The caller holds s.mu.
func (s *Server) acceptNets(log *slog.Logger, id string, adv, allowed []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range adv {
		reason := ""
		switch {
		case p.Bits() == 0:
			reason = "a default route cannot be advertised"
		case p.Overlaps(s.cfg.Subnet) || (s.cfg.Subnet6.IsValid() && p.Overlaps(s.cfg.Subnet6)):
			reason = "overlaps the tunnel subnet"
		case !slices.ContainsFunc(allowed, func(a netip.Prefix) bool { return a.Bits() <= p.Bits() && a.Contains(p.Addr()) }):
			reason = "not allowed for this client (advertise in --clients)"
		case slices.Contains(out, p):
			continue
		default:
			for other, o := range s.special { // the sessions with networks
				if other == id {
					continue
				}
				if slices.ContainsFunc(o.nets, p.Overlaps) {
					reason = "overlaps a network of client " + other
					break
				}
			}
		}
		if reason != "" {
			s.stats.AdvertiseRefused.Add(1)
			log.Warn("refusing advertised network", "network", p, "reason", reason)
			continue
		}
		out = append(out, p)
	}
	return out
}

// Peers returns the live sessions' addresses, accepted networks and
// policies, sorted by identity.
func (s *Server) Peers() []Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	peers := make([]Peer, 0, len(s.sessions))
	for id, sess := range s.sessions {
		peers = append(peers, Peer{Identity: id, Addrs: sess.addrs, Nets: sess.nets, ReachClients: sess.policy.ReachClients})
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Identity, b.Identity) })
	return peers
}

// peersChanged reports the sessions with networks or reach_clients to
// PeersChanged. It costs what those few sessions cost, not what all do.
func (s *Server) peersChanged() {
	if s.cfg.PeersChanged == nil {
		return
	}
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	s.mu.Lock()
	peers := make([]Peer, 0, len(s.special))
	for id, sess := range s.special {
		peers = append(peers, Peer{Identity: id, Addrs: sess.addrs, Nets: sess.nets, ReachClients: sess.policy.ReachClients})
	}
	s.mu.Unlock()
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Identity, b.Identity) })
	s.cfg.PeersChanged(peers)
}

// Reconfigure closes the live session of identity, if any, with
// CloseReconfigure so that the client reconnects at once and receives its
// new configuration (after a --clients change). It reports whether there
// was a session.
func (s *Server) Reconfigure(identity, reason string) bool {
	return s.closeIdentity(identity, CloseReconfigure, reason, "closing session to apply a new configuration")
}

// Policies re-reads every live session's policy (after a --clients
// change): a session whose routes or advertise list changed is closed
// with CloseReconfigure (its client reconnects at once); a change of
// ReachClients alone is applied in place. Sessions whose policy did not
// change are untouched. It returns the identities it closed.
func (s *Server) Policies() []string {
	s.mu.Lock()
	var closing []*Session
	var ids []string
	changed := false
	for id, sess := range s.sessions {
		pol := s.policy(id)
		if pol.Equal(sess.policy) {
			continue
		}
		if pol.sameConfig(sess.policy) {
			sess.policy = pol // only ReachClients changed
			s.setSpecialLocked(id, sess)
			changed = true
			continue
		}
		closing = append(closing, sess)
		ids = append(ids, id)
	}
	s.mu.Unlock()
	if changed {
		s.peersChanged()
	}
	for i, sess := range closing {
		s.log.Info("closing session to apply a new configuration", "peer", ids[i], "reason", "client policy changed")
		sess.Close(CloseReconfigure, "client policy changed")
	}
	slices.Sort(ids)
	return ids
}

// CheckSessions closes every live session whose peer no longer passes
// CheckPeer (a revoked or expired certificate). It returns how many it
// closed.
func (s *Server) CheckSessions() int {
	if s.cfg.CheckPeer == nil {
		return 0
	}
	s.mu.Lock()
	var bad []*Session
	var reasons []string
	for _, sess := range s.sessions {
		var cs tls.ConnectionState // none: a transport without TLS
		if sess.info.TLS != nil {
			cs = *sess.info.TLS
		}
		if err := s.cfg.CheckPeer(cs); err != nil {
			bad = append(bad, sess)
			reasons = append(reasons, err.Error())
		}
	}
	s.mu.Unlock()
	for i, sess := range bad {
		s.log.Warn("closing session: peer no longer authorized", "peer", sess.Peer(), "reason", reasons[i])
		sess.Close(CloseRevoked, reasons[i])
	}
	return len(bad)
}

// rateLog logs at most one line per key per second, so a flood of bad
// connections cannot flood the log; the counters still count every one.
type rateLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (r *rateLog) warn(log *slog.Logger, key, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if r.last == nil {
		r.last = make(map[string]time.Time)
	}
	ok := now.Sub(r.last[key]) >= time.Second
	if ok {
		r.last[key] = now
	}
	r.mu.Unlock()
	if ok {
		log.Warn(msg, args...)
	}
}
