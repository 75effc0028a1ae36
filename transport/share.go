package transport

// Port sharing: tunneld's port also serves a real website. ShareListener
// wraps the TCP listener; every accepted connection is classified by its
// TLS ClientHello in a goroutine of its own (a slow or silent client never
// holds up the others), and
//
//   - a ClientHello that offers the VPN's ALPN ("tlsvpn/1") makes the
//     connection one that Accept returns, with the ClientHello's bytes
//     handed back first, so that the VPN's TLS server reads them as if
//     nothing had looked;
//   - everything else (a ClientHello without that ALPN, bytes that are not
//     TLS at all such as plain HTTP to port 443, a ClientHello that does
//     not complete within the peek timeout, silence) is relayed byte for
//     byte, the bytes already read first, to the backend (the web server),
//     optionally after a PROXY protocol v2 header that names the client.
//     Garbage is relayed rather than closed: the web server answers it as
//     it would on a port of its own (nginx: "400 The plain HTTP request
//     was sent to HTTPS port"), so the port looks like the website's.
//
// Only connections for the VPN leave Accept: relayed ones never reach the
// VPN's admission (tunnel.Limiter: handshake slots, per-source budgets,
// --max-connections). The two stages have their own bounds instead:
//
//   - Peeking: at most MaxPeeking connections wait for their ClientHello
//     at once, at most MaxPeekingPerSource from one source address (IPv6:
//     one /64), each for at most PeekTimeout. A connection beyond a bound
//     evicts the oldest waiting one (of its source, else of all): it is
//     not refused. So a flood of silent connections cannot keep a VPN
//     client out for long: the client's ClientHello arrives one round
//     trip after its connection is accepted and is classified at once,
//     and it is lost only if, within that round trip, more connections
//     arrive than MaxPeeking (from MaxPeeking/MaxPeekingPerSource sources
//     or more); a flood from fewer sources evicts only its own. An evicted
//     or timed-out connection goes to the backend like any other non-VPN
//     connection.
//   - Relaying: at most MaxRelays relays are open at once (more are
//     closed at once and counted); a relay with no byte in either
//     direction for IdleTimeout is closed.

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of ShareConfig's zero fields.
const (
	DefaultShareMaxRelays           = 1024
	DefaultShareIdleTimeout         = 5 * time.Minute
	DefaultShareMaxPeeking          = 1024
	DefaultShareMaxPeekingPerSource = 64
	DefaultSharePeekTimeout         = 5 * time.Second
	DefaultShareDialTimeout         = 5 * time.Second
)

// ShareConfig configures a ShareListener.
type ShareConfig struct {
	// ALPN is the protocol whose connections Accept returns (the VPN's,
	// tunnel.ALPN). Required.
	ALPN string
	// Backend is the TCP ADDR:PORT every other connection is relayed
	// to. Required.
	Backend string
	// ProxyProtocol sends a PROXY protocol v2 header before the relayed
	// bytes, naming the client's address and port and the address it
	// connected to.
	ProxyProtocol bool
	// MaxRelays caps the relays open at once; 0: DefaultShareMaxRelays,
	// negative: no cap.
	MaxRelays int
	// IdleTimeout closes a relay with no byte in either direction for
	// this long; 0: DefaultShareIdleTimeout.
	IdleTimeout time.Duration
	// MaxPeeking and MaxPeekingPerSource cap the connections whose
	// ClientHello is awaited; 0: the defaults.
	MaxPeeking, MaxPeekingPerSource int
	// PeekTimeout is how long a connection has to send a complete
	// ClientHello; 0: DefaultSharePeekTimeout.
	PeekTimeout time.Duration
	// DialTimeout bounds connecting to the backend; 0:
	// DefaultShareDialTimeout.
	DialTimeout time.Duration
	// Dial connects to the backend; nil: a net.Dialer.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger // nil: discard
	Stats  *ShareStats  // nil: a new one (see ShareListener.Stats)
}

// ShareStats counts what a ShareListener did. Every field is updated
// atomically and may be read at any time.
type ShareStats struct {
	Tunnel  atomic.Uint64 // connections that offered the VPN's ALPN, handed to Accept
	Relayed atomic.Uint64 // connections relayed to the backend (a relay slot taken)
	// OtherTLS, NotTLS and NoHello count the connections meant for the
	// backend by why; those then refused (RefusedRelays) are included.
	OtherTLS atomic.Uint64 // a ClientHello without the VPN's ALPN
	NotTLS   atomic.Uint64 // bytes that are not a well-formed TLS ClientHello
	NoHello  atomic.Uint64 // no complete ClientHello within the peek timeout, or evicted
	Evicted  atomic.Uint64 // waits for a ClientHello cut short by a newer connection (peek bounds)
	// RefusedRelays counts connections closed because MaxRelays relays
	// were open.
	RefusedRelays atomic.Uint64
	BackendErrors atomic.Uint64 // the backend could not be reached
	IdleTimeouts  atomic.Uint64 // relays closed after IdleTimeout without a byte
	BytesIn       atomic.Uint64 // relayed from clients to the backend (PROXY header not counted)
	BytesOut      atomic.Uint64 // relayed from the backend to clients
	Relaying      atomic.Int64  // relays open now
	Peeking       atomic.Int64  // connections whose ClientHello is awaited now
}

// ShareListener is a net.Listener that shares its port with a backend:
// Accept returns only connections that offer the VPN's ALPN; the others
// are relayed (see the file comment for the rules and bounds). Its
// goroutines start with the first Accept; Close ends them all.
type ShareListener struct {
	ln    net.Listener // immutable
	cfg   ShareConfig  // immutable after New, defaults filled in
	log   *slog.Logger
	stats *ShareStats

	maxRelays atomic.Int64 // live (SetLimits); <= 0: no cap
	idle      atomic.Int64 // live (SetLimits), nanoseconds

	start   sync.Once
	ready   chan net.Conn // VPN connections for Accept
	errs    chan error    // accept errors for Accept
	done    chan struct{} // closed by Close
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing sync.Once

	mu       sync.Mutex // guards the fields below
	closed   bool
	waiting  *list.List                // *peek, oldest first
	bySource map[netip.Addr]*list.List // *peek per source key, oldest first
	relays   map[*relayConns]struct{}  // relays open (or being dialed)
	warned   map[string]time.Time      // when a warning of each kind was last logged
}

// relayConns are the two ends of a relay; b is guarded by the
// listener's mu (nil until the backend answers).
type relayConns struct{ c, b net.Conn }

// peek is a connection whose ClientHello is awaited; guarded by the
// listener's mu.
type peek struct {
	conn    net.Conn
	src     netip.Addr
	all     *list.Element // in waiting; nil once out
	mine    *list.Element // in bySource[src]
	evicted bool
}

// NewShareListener wraps ln, which it then owns (Close closes it).
func NewShareListener(ln net.Listener, cfg ShareConfig) (*ShareListener, error) {
	if cfg.ALPN == "" || cfg.Backend == "" {
		return nil, errors.New("port sharing needs the VPN's ALPN and a backend address")
	}
	if cfg.MaxPeeking <= 0 {
		cfg.MaxPeeking = DefaultShareMaxPeeking
	}
	if cfg.MaxPeekingPerSource <= 0 {
		cfg.MaxPeekingPerSource = DefaultShareMaxPeekingPerSource
	}
	if cfg.PeekTimeout <= 0 {
		cfg.PeekTimeout = DefaultSharePeekTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultShareDialTimeout
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	l := &ShareListener{
		ln: ln, cfg: cfg, log: cfg.Logger, stats: cfg.Stats,
		ready: make(chan net.Conn), errs: make(chan error), done: make(chan struct{}),
		waiting: list.New(), bySource: map[netip.Addr]*list.List{},
		relays: map[*relayConns]struct{}{}, warned: map[string]time.Time{},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.stats == nil {
		l.stats = new(ShareStats)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.SetLimits(cfg.MaxRelays, cfg.IdleTimeout)
	return l, nil
}

// SetLimits changes the relay cap and idle timeout (0: the defaults,
// maxRelays negative: no cap). A lower cap closes no open relay; a new
// idle timeout applies to open relays from their next read.
func (l *ShareListener) SetLimits(maxRelays int, idle time.Duration) {
	if maxRelays == 0 {
		maxRelays = DefaultShareMaxRelays
	}
	if idle <= 0 {
		idle = DefaultShareIdleTimeout
	}
	l.maxRelays.Store(int64(maxRelays))
	l.idle.Store(int64(idle))
}

// Limits returns the relay cap (negative: none) and idle timeout in force.
func (l *ShareListener) Limits() (maxRelays int, idle time.Duration) {
	return int(l.maxRelays.Load()), time.Duration(l.idle.Load())
}

// Stats returns the listener's counters.
func (l *ShareListener) Stats() *ShareStats { return l.stats }

// Addr is the wrapped listener's address.
func (l *ShareListener) Addr() net.Addr { return l.ln.Addr() }

// Accept returns the next connection that offered the VPN's ALPN. Its
// Read returns the ClientHello's bytes first. An error from the wrapped
// listener's Accept (other than its closing) is passed on once, after
// which accepting goes on (after a short pause); after Close, Accept
// returns net.ErrClosed.
func (l *ShareListener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		l.wg.Add(1)
		go l.acceptLoop()
	})
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the wrapped listener, every connection still waiting for
// its ClientHello and every relay, and waits for the listener's
// goroutines to end. Connections already returned by Accept are the
// caller's. Close may be called more than once.
func (l *ShareListener) Close() error {
	var err error
	l.closing.Do(func() {
		close(l.done)
		l.cancel()
		err = l.ln.Close()
		l.mu.Lock()
		l.closed = true
		for e := l.waiting.Front(); e != nil; e = e.Next() {
			e.Value.(*peek).conn.Close()
		}
		for r := range l.relays {
			r.c.Close()
			if r.b != nil {
				r.b.Close()
			}
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// acceptLoop accepts until the listener is closed, starting a goroutine
// per connection.
func (l *ShareListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				// Closed under us: make Accept return. (Close waits
				// for this goroutine, so not from it.)
				go l.Close()
				return
			}
			// Out of descriptors and the like: tell Accept's caller
			// (who counts and logs it), pause, go on.
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			continue
		}
		backoff = 0
		// The deadline before the connection can be evicted, whose
		// deadline in the past must win.
		c.SetReadDeadline(time.Now().Add(l.cfg.PeekTimeout))
		p := &peek{conn: c, src: sourceKey(c.RemoteAddr())}
		if !l.addPeek(p) {
			c.Close()
			return
		}
		l.wg.Add(1)
		go l.classify(p)
	}
}

// addPeek registers p as waiting for its ClientHello, evicting the oldest
// waiting connection of its source, or of all, when p would exceed a
// bound. It returns false once the listener is closed.
func (l *ShareListener) addPeek(p *peek) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	mine := l.bySource[p.src]
	if mine == nil {
		mine = list.New()
		l.bySource[p.src] = mine
	}
	switch {
	case mine.Len() >= l.cfg.MaxPeekingPerSource:
		l.evictLocked(mine.Front().Value.(*peek))
	case l.waiting.Len() >= l.cfg.MaxPeeking:
		l.evictLocked(l.waiting.Front().Value.(*peek))
	}
	p.all = l.waiting.PushBack(p)
	p.mine = mine.PushBack(p)
	l.stats.Peeking.Add(1)
	return true
}

// evictLocked ends p's wait: its read fails at once with a timeout, and
// it is relayed with what it sent so far.
func (l *ShareListener) evictLocked(p *peek) {
	l.removeLocked(p)
	p.evicted = true
	l.stats.Evicted.Add(1)
	p.conn.SetReadDeadline(time.Unix(1, 0))
}

// removeLocked takes p out of the waiting lists (once).
func (l *ShareListener) removeLocked(p *peek) {
	if p.all == nil {
		return
	}
	l.waiting.Remove(p.all)
	mine := l.bySource[p.src]
	mine.Remove(p.mine)
	if mine.Len() == 0 {
		delete(l.bySource, p.src)
	}
	p.all, p.mine = nil, nil
	l.stats.Peeking.Add(-1)
}

// classify reads p's ClientHello and hands the connection to Accept or to
// the relay.
func (l *ShareListener) classify(p *peek) {
	defer l.wg.Done()
	c := p.conn
	raw, msg, err := readClientHello(c)
	l.mu.Lock()
	l.removeLocked(p)
	evicted := p.evicted
	l.mu.Unlock()
	var protos []string
	if err == nil {
		protos, err = helloALPN(msg)
	}
	switch {
	case err == nil && slices.Contains(protos, l.cfg.ALPN):
		c.SetReadDeadline(time.Time{})
		l.stats.Tunnel.Add(1)
		select {
		case l.ready <- &SharedConn{Conn: c, pending: raw}:
		case <-l.done:
			c.Close()
		}
		return
	case err == nil:
		l.stats.OtherTLS.Add(1)
	case errors.Is(err, errNotTLS) || errors.Is(err, errNotHello) || errors.Is(err, errMalformed):
		l.stats.NotTLS.Add(1)
	case evicted || errors.Is(err, os.ErrDeadlineExceeded):
		l.stats.NoHello.Add(1)
	case len(raw) > 0 && errors.Is(err, io.ErrUnexpectedEOF):
		// Half a hello and a FIN: the backend gets both.
		l.stats.NoHello.Add(1)
	default:
		// Closed or reset before sending anything worth passing on.
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if l.log.Enabled(l.ctx, slog.LevelDebug) {
		l.log.Debug("relaying connection to the shared port's backend", "remote_addr", c.RemoteAddr().String(), "alpn", protos, "why", relayReason(err, evicted))
	}
	l.relay(c, raw)
}

// relayReason says why a connection is relayed, for debug logs.
func relayReason(err error, evicted bool) string {
	switch {
	case err == nil:
		return "ClientHello without the VPN's ALPN"
	case evicted:
		return "evicted while waiting for a ClientHello"
	}
	return err.Error()
}

// relay connects c to the backend, sends first (the bytes already read
// from c) after the PROXY header if configured, and copies both ways
// until both sides are done, or either fails, or the relay is idle for
// the idle timeout. It closes c.
func (l *ShareListener) relay(c net.Conn, first []byte) {
	r := l.takeRelay(c)
	if r == nil {
		l.stats.RefusedRelays.Add(1)
		l.warn("refused", "relayed connection refused: the shared port's relays are all taken (--share-max-conns)",
			"limit", l.maxRelays.Load())
		c.Close()
		return
	}
	defer l.dropRelay(r)
	l.stats.Relayed.Add(1)
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.DialTimeout)
	b, err := l.cfg.Dial(ctx, "tcp", l.cfg.Backend)
	cancel()
	if err != nil {
		l.stats.BackendErrors.Add(1)
		l.warn("dial", "the shared port's backend cannot be reached; closing the relayed connection", "backend", l.cfg.Backend, "err", err)
		c.Close()
		return
	}
	defer b.Close()
	defer c.Close()
	if !l.setBackend(r, b) {
		return // closed meanwhile
	}
	var out []byte
	if l.cfg.ProxyProtocol {
		out = AppendProxyHeader(out, addrPort(c.RemoteAddr()), addrPort(c.LocalAddr()))
	}
	out = append(out, first...)
	b.SetWriteDeadline(time.Now().Add(time.Duration(l.idle.Load())))
	if _, err := b.Write(out); err != nil {
		l.stats.BackendErrors.Add(1)
		l.warn("dial", "writing to the shared port's backend", "backend", l.cfg.Backend, "err", err)
		return
	}
	l.stats.BytesIn.Add(uint64(len(first)))
	var last atomic.Int64 // unix nanoseconds of the last byte either way
	last.Store(time.Now().UnixNano())
	var timedOut atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.pipe(b, c, &l.stats.BytesIn, &last, &timedOut)
	}()
	l.pipe(c, b, &l.stats.BytesOut, &last, &timedOut)
	<-done
	if timedOut.Load() {
		l.stats.IdleTimeouts.Add(1)
	}
}

// pipe copies src to dst until src ends (then dst's write side is
// closed, and the other direction goes on), an error (both are closed),
// or the relay is idle: no byte either way, as last records, for the
// idle timeout in force.
func (l *ShareListener) pipe(dst, src net.Conn, count *atomic.Uint64, last *atomic.Int64, timedOut *atomic.Bool) {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	for {
		idle := time.Duration(l.idle.Load())
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				if errors.Is(werr, os.ErrDeadlineExceeded) {
					timedOut.Store(true)
				}
				break
			}
			count.Add(uint64(n))
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction is busy
			}
			timedOut.Store(true)
			break
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return // half close: the other direction may go on
			}
		}
		break
	}
	src.Close()
	dst.Close()
}

// copyBufs are the relays' copy buffers.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// takeRelay registers a relay of c if the cap allows (nil if not, or
// once the listener is closed).
func (l *ShareListener) takeRelay(c net.Conn) *relayConns {
	l.mu.Lock()
	defer l.mu.Unlock()
	if limit := l.maxRelays.Load(); l.closed || limit > 0 && int64(len(l.relays)) >= limit {
		return nil
	}
	r := &relayConns{c: c}
	l.relays[r] = struct{}{}
	l.stats.Relaying.Add(1)
	return r
}

// setBackend records the backend end of r, so that Close closes it;
// false once the listener is closed.
func (l *ShareListener) setBackend(r *relayConns, b net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.b = b
	return !l.closed
}

// dropRelay gives r's slot back.
func (l *ShareListener) dropRelay(r *relayConns) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.relays, r)
	l.stats.Relaying.Add(-1)
}

// warnEvery is the least time between two warnings of one kind: a flood
// must not flood the log too.
const warnEvery = 10 * time.Second

// warn logs msg unless a warning of the same kind was logged in the last
// warnEvery.
func (l *ShareListener) warn(kind, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	last, ok := l.warned[kind]
	if !ok || now.Sub(last) >= warnEvery {
		l.warned[kind] = now
	}
	l.mu.Unlock()
	if !ok || now.Sub(last) >= warnEvery {
		l.log.Warn(msg, args...)
	}
}

// sourceKey is the source a connection counts against in the peek
// bounds: its IPv4 address, or its IPv6 /64 (one host usually has a
// whole /64).
func sourceKey(a net.Addr) netip.Addr {
	ip := addrPort(a).Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// addrPort is a's address and port (zero if a is not TCP or IP).
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// SharedConn is a connection ShareListener.Accept returned: the
// ClientHello bytes read to classify it come first from Read, then the
// socket's. Everything else is the socket's own: NetConn returns it (a
// *net.TCPConn from a TCP listener) for socket options, SyscallConn and
// CloseWrite reach it directly. The bytes read ahead are exactly the
// ClientHello's records, which a TLS server reads before anything else,
// so reading the socket directly (SyscallConn) once the TLS handshake is
// under way misses nothing.
type SharedConn struct {
	net.Conn
	pending []byte // read by Read only (one reader, as for any net.Conn)
}

// Read returns the read-ahead bytes first, then reads the socket.
func (c *SharedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the accepted connection itself.
func (c *SharedConn) NetConn() net.Conn { return c.Conn }

// SyscallConn returns the socket's raw connection (syscall.Conn), or an
// error wrapping errors.ErrUnsupported if it has none.
func (c *SharedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, fmt.Errorf("shared connection over %T: %w", c.Conn, errors.ErrUnsupported)
}

// CloseWrite shuts the socket's write side (a TCP FIN).
func (c *SharedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("shared connection over %T: %w", c.Conn, errors.ErrUnsupported)
}
