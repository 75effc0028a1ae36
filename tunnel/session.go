package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/tun"
)

// ProtocolError is a peer's violation of the wire protocol. The session
// closes with CloseProtocol and the error text as reason.
type ProtocolError struct{ Err error }

func (e *ProtocolError) Error() string { return "protocol error: " + e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

// PeerClosedError is returned by Session.Run when the peer sent Close.
type PeerClosedError struct {
	Code   uint16
	Reason string
}

func (e *PeerClosedError) Error() string {
	return fmt.Sprintf("peer closed the session: %s: %s", CloseCodeName(e.Code), e.Reason)
}

// CloseError is a local decision to end a session (Session.Close), sent to
// the peer as a Close frame.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("session closed: %s: %s", CloseCodeName(e.Code), e.Reason)
}

// ErrKeepaliveTimeout ends a session whose peer stayed silent past its
// deadline.
var ErrKeepaliveTimeout = errors.New("keepalive timeout: no frame from peer")

// SessionConfig configures a Session.
type SessionConfig struct {
	// Transport is the established connection to the peer (see
	// Transport). The session owns it and closes it when Run returns.
	Transport Transport
	// Dev receives the packets that arrive from the peer.
	Dev tun.Device
	// Allowed lists the inner source prefixes the peer may use; packets
	// from other sources are dropped and counted (anti-spoofing). Nil
	// allows any source (the client trusts its server's routing).
	Allowed []netip.Prefix
	// Keepalive is the ping interval; 0 disables pings and the deadline.
	Keepalive time.Duration
	// DeadAfter ends the session when nothing arrived for this long.
	// Zero means 3*Keepalive.
	DeadAfter time.Duration
	// PingWhenIdle sends a PING only after an interval in which nothing
	// arrived from the peer (a server whose clients ping it every
	// interval then sends none, halving the keepalive traffic of a gateway
	// with many idle clients); otherwise one every interval.
	PingWhenIdle bool
	// QueueLen bounds the chunks waiting for this session's writer; a full
	// queue drops and counts. Zero means DefaultQueueLen.
	QueueLen int
	// ShutdownCode is sent when the parent context ends the session
	// (CloseShutdown for a server, CloseNormal for a client).
	ShutdownCode uint16
	// MTU is the tunnel MTU; GSO segments from the peer must fit it.
	MTU int
	// PeerGSO: the peer accepts DATA_GSO frames, so super-packets may be
	// sent to it whole.
	PeerGSO bool
	// AcceptGSO: this side announced that it accepts DATA_GSO frames; Dev
	// must then be a tun.GSODevice with SupportsGSO.
	AcceptGSO bool
	// RekeyRecords: see ServerConfig.RekeyRecords (DataOptions).
	RekeyRecords uint64
	// PeerKeyUpdate: the peer announced CapKeyUpdate, so the transport
	// may send it KeyUpdate messages (DataOptions).
	PeerKeyUpdate bool
	// Peer names the peer in logs.
	Peer   string
	Logger *slog.Logger
	Stats  *Stats // shared counters; nil allocates private ones
}

// DefaultQueueLen is the default bound of a session's send queue, in chunks
// (a chunk is one super-packet or up to 64 KiB of coalesced packets).
const DefaultQueueLen = 32

// maxChunksPerWrite bounds how many queued chunks one batch write drains.
const maxChunksPerWrite = 16

// Session moves packets between one Transport (TLS over TCP) and the TUN
// device. Run starts two goroutines: the writer (queue -> transport, and
// PINGs and PONGs) and the reader (transport -> TUN). The shared
// keepalive wheel (keepalive.go) schedules PINGs and ends a session whose
// peer went silent.
type Session struct {
	// Immutable after NewSession.
	cfg     SessionConfig
	t       Transport
	info    TransportInfo // t.Info()
	log     *slog.Logger
	stats   *Stats
	queue   chan *chunk
	pongs   chan [PingLen]byte
	pingDue chan struct{}   // the keepalive wheel: send a PING
	done    chan struct{}   // closed when Run returns
	peerGSO bool            // may send DATA_GSO
	gdev    tun.GSODevice   // non-nil: DATA_GSO accepted and written whole
	rxc     rxRecordCounter // non-nil: the transport counts the peer's records (checkRxRecords)

	congested atomic.Bool // queue overflowed; the mux drops without waiting

	wmu  sync.Mutex    // serializes frame writes on t
	wake chan struct{} // the transport has something to send (DataOptions.Wake)

	started time.Time // when NewSession ran
	// Set by the server before registering the session; addrs and nets
	// are immutable, policy is guarded by the server's mu.
	addrs  []netip.Addr
	nets   []netip.Prefix
	policy Policy
	// releaseLimit frees the session's slot in the server's limiter; set
	// by the server before Run, idempotent.
	releaseLimit func()

	ctx    context.Context // set by Run; canceled with the cause of the end
	cancel context.CancelCauseFunc
	// closeMu guards cancel and closing: a Close before Run is kept
	// until Run starts (which then ends at once).
	closeMu sync.Mutex
	closing error

	rxFrames atomic.Uint64 // frames received; the control loop watches it
	rxIP     atomic.Uint64 // IP bytes received
	txIP     atomic.Uint64 // IP bytes sent
	rttNanos atomic.Int64  // last ping round trip
	rttAt    atomic.Int64  // when rttNanos was measured (Unix nanoseconds)

	// Reader-goroutine state. The receive buffers are taken from the
	// shared pool as packets arrive and go back after each write to the
	// TUN, so an idle session holds none.
	hdr     [HeaderLen]byte
	ctl     [PingLen]byte
	rxCap   int       // the device's batch size: packets per TUN write
	rx      []*chunk  // receive buffers, one per batch slot (nil until used)
	rxBatch [][]byte  // slices of rx handed to Dev.Write
	rxK     int       // packets waiting in rx
	rxBytes uint64    // their IP bytes
	ctlN    int       // control frames since ctlT
	ctlT    time.Time // start of the control-frame window

	// Mux-reader-goroutine state (see Mux.dispatch).
	open    *chunk
	touched bool
	// muxAddrs are the addresses the mux routes to this session (guarded
	// by Mux.mu), so Remove visits only these.
	muxAddrs []netip.Addr
}

// NewSession returns a session ready to Run.
func NewSession(cfg SessionConfig) *Session {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 3 * cfg.Keepalive
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stats := cfg.Stats
	if stats == nil {
		stats = new(Stats)
	}
	batch := cfg.Dev.BatchSize()
	if batch < 1 {
		batch = 1
	}
	s := &Session{
		cfg:          cfg,
		t:            cfg.Transport,
		info:         cfg.Transport.Info(),
		log:          log,
		stats:        stats,
		queue:        make(chan *chunk, cfg.QueueLen),
		pongs:        make(chan [PingLen]byte, 4),
		pingDue:      make(chan struct{}, 1),
		done:         make(chan struct{}),
		peerGSO:      cfg.PeerGSO,
		started:      time.Now(),
		ctlT:         time.Now(),
		releaseLimit: func() {},
		wake:         make(chan struct{}, 1),
		rxCap:        batch,
	}
	if g, ok := cfg.Dev.(tun.GSODevice); ok && cfg.AcceptGSO && g.SupportsGSO() {
		s.gdev = g
	}
	s.rxc, _ = cfg.Transport.(rxRecordCounter)
	if s.cfg.MTU == 0 {
		s.cfg.MTU = 1500
	}
	return s
}

// Peer returns the peer's name.
func (s *Session) Peer() string { return s.cfg.Peer }

// RTT returns the last measured ping round-trip time, or 0.
func (s *Session) RTT() time.Duration { return time.Duration(s.rttNanos.Load()) }

// rttMeasured returns when RTT was last measured (zero: never).
func (s *Session) rttMeasured() time.Time {
	if n := s.rttAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// RequestPing asks the writer to send a PING now (the PONG updates RTT),
// unless one is already due. It does not wait.
func (s *Session) RequestPing() {
	select {
	case s.pingDue <- struct{}{}:
	default:
	}
}

// Started returns when the session was created (its transport's
// handshake had just completed).
func (s *Session) Started() time.Time { return s.started }

// LastHandshake returns when the session's keys last changed: its TLS
// handshake, or a later in-band KeyUpdate (either direction).
func (s *Session) LastHandshake() time.Time {
	if t := s.t.Usage().Updated; t.After(s.started) {
		return t
	}
	return s.started
}

// TransportInfo returns what the session's transport reported about its
// connection when the session was made.
func (s *Session) TransportInfo() TransportInfo { return s.info }

// Bytes returns the IP bytes this session sent to its peer (tx) and
// received from it (rx). The counters are atomics the data path keeps
// anyway; reading them costs the data path nothing.
func (s *Session) Bytes() (tx, rx uint64) { return s.txIP.Load(), s.rxIP.Load() }

// Close ends the session, telling the peer why. It returns at once; Run
// returns when the session is down. Safe to call before Run (Run then
// ends at once) and more than once (the first reason wins). It starts no
// goroutine, so a session that never runs leaves nothing behind.
func (s *Session) Close(code uint16, reason string) {
	cause := &CloseError{Code: code, Reason: reason}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.cancel != nil {
		s.cancel(cause)
	} else if s.closing == nil {
		s.closing = cause
	}
}

// Run runs the session until ctx ends, the peer leaves, or an error occurs,
// and returns why it ended: a *PeerClosedError, *CloseError,
// *ProtocolError, ErrKeepaliveTimeout, the parent context's cause, or an
// I/O error.
func (s *Session) Run(ctx context.Context) error {
	s.closeMu.Lock()
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	if s.closing != nil {
		s.cancel(s.closing)
	}
	s.closeMu.Unlock()
	defer s.cancel(nil)
	defer close(s.done)
	s.t.StartData(DataOptions{
		KeyUpdate:    s.cfg.PeerKeyUpdate,
		RekeyRecords: s.cfg.RekeyRecords,
		Wake:         s.wakeWriter,
		Stats:        s.stats,
		Logger:       s.log,
	})

	var wg sync.WaitGroup
	guard := func(f func() error) {
		defer func() {
			if r := recover(); r != nil {
				s.stats.Panics.Add(1)
				s.log.Error("session goroutine panicked", "peer", s.cfg.Peer, "panic", r)
				s.cancel(&CloseError{Code: CloseInternal, Reason: "internal error"})
			}
		}()
		if err := f(); err != nil {
			s.cancel(err)
		}
	}
	run := func(f func() error, done chan struct{}) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if done != nil {
				defer close(done)
			}
			guard(f)
		}()
	}
	readerDone := make(chan struct{})
	run(s.writeLoop, nil)
	run(s.readLoop, readerDone)
	// Pings are scheduled by the shared keepalive wheel (keepalive.go),
	// which also ends a session whose peer went silent; PINGs and PONGs
	// are written by the writer.
	if s.cfg.Keepalive > 0 {
		wheel.add(s, time.Now())
		defer wheel.remove(s)
	}

	<-s.ctx.Done()
	cause := context.Cause(s.ctx)
	if ctx.Err() != nil && cause == context.Cause(ctx) {
		cause = &CloseError{Code: s.cfg.ShutdownCode, Reason: "shutting down"}
	}
	if s.sayGoodbye(cause) {
		// We closed first: keep reading until the peer's Close (or EOF),
		// so packets it sent before seeing ours still reach the TUN.
		t := time.NewTimer(lingerTimeout)
		select {
		case <-readerDone:
		case <-t.C:
		}
		t.Stop()
	}
	var pe *ProtocolError
	if errors.As(cause, &pe) && stopped(readerDone) {
		// The reader stopped at the peer's error with more of its bytes
		// possibly unread: closing now would send a reset, which can
		// destroy our CLOSE in the peer's receive queue before it reads
		// it. Half-close and discard what still comes, briefly.
		s.t.CloseDrain(time.Second)
	} else {
		s.t.Close()
	}
	wg.Wait()
	for len(s.queue) > 0 {
		putChunk(<-s.queue)
	}
	s.t.Release() // the reader and writer are gone
	return cause
}

// wakeWriter asks the writer to Flush the transport (DataOptions.Wake).
func (s *Session) wakeWriter() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// RekeysInBand reports whether the session keeps its keys under the
// per-key record limit by itself, with KeyUpdate (on the own record
// layer, with a peer that accepts KeyUpdate); otherwise the client opens
// a new session in time.
func (s *Session) RekeysInBand() bool { return s.t.Usage().InBand }

// readFull fills p from the transport. With slack, the byte after p may
// be overwritten (it must be within cap(p)).
func (s *Session) readFull(p []byte, slack bool) error {
	return s.t.ReadFull(p, slack)
}

// Usage returns the TLS records sent or received under this session's
// current keys, whichever is more, and the IP bytes moved both ways. The
// record count is exact on the own record layer; on crypto/tls it counts
// every encrypted record of the connection (an upper bound); see
// KeyUsage.
func (s *Session) Usage() (records, bytes uint64) {
	return s.t.Usage().Records, s.txIP.Load() + s.rxIP.Load()
}

// Done is closed when Run has returned.
func (s *Session) Done() <-chan struct{} { return s.done }

// stopped reports whether done is closed.
func stopped(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// lingerTimeout bounds how long a session that sent Close keeps reading
// for the peer's remaining packets and its Close.
const lingerTimeout = 2 * time.Second

// sayGoodbye sends what is still queued and a Close frame, giving up after
// a second so a stuck peer cannot hold the session open. It returns true
// when the peer is expected to answer with its own Close (we closed
// first, gracefully).
func (s *Session) sayGoodbye(cause error) (linger bool) {
	var code uint16
	var reason string
	drain := false
	var ce *CloseError
	var pe *ProtocolError
	var pc *PeerClosedError
	switch {
	case errors.As(cause, &ce):
		code, reason = ce.Code, ce.Reason
		drain = ce.Code == CloseNormal || ce.Code == CloseShutdown || ce.Code == CloseReplaced || ce.Code == CloseReconfigure || ce.Code == CloseKicked || ce.Code == CloseDraining
		linger = drain
	case errors.As(cause, &pc):
		// The peer closed first and lingers for our answer.
		code, reason, drain = CloseNormal, "close acknowledged", true
	case errors.As(cause, &pe):
		code, reason = CloseProtocol, pe.Err.Error()
		s.stats.ProtocolErrors.Add(1)
	case errors.Is(cause, ErrKeepaliveTimeout):
		code, reason = CloseTimeout, cause.Error()
		s.stats.KeepaliveTimeouts.Add(1)
	default:
		return false // the connection is broken
	}
	s.t.SetWriteDeadline(time.Now().Add(time.Second))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for drain {
		select {
		case c := <-s.queue:
			c.markEnd()
			_, err := s.t.Write(c.bytes())
			putChunk(c)
			if err != nil {
				return false
			}
		default:
			drain = false
		}
	}
	payload := MarshalClose(code, reason)
	if _, err := s.t.Write(appendControl(make([]byte, 0, HeaderLen+len(payload)), TypeClose, payload)); err != nil {
		return false
	}
	return linger
}

// writeLoop sends queued chunks. Each wake-up drains what is queued into
// one gathered send and marks the last frame with FlagEnd.
func (s *Session) writeLoop() error {
	for {
		select {
		case c := <-s.queue:
			if err := s.writeChunks(c); err != nil {
				return err
			}
		case <-s.wake:
			s.wmu.Lock()
			err := s.t.Flush()
			s.wmu.Unlock()
			if err != nil {
				return s.ioErr("write", err)
			}
		case p := <-s.pongs:
			if err := s.writeControl(TypePong, p[:]); err != nil {
				return err
			}
		case <-s.pingDue:
			var p [PingLen]byte
			binary.BigEndian.PutUint64(p[:], uint64(time.Now().UnixNano()))
			if err := s.writeControl(TypePing, p[:]); err != nil {
				return err
			}
		case <-s.ctx.Done():
			return nil
		}
	}
}

func (s *Session) writeChunks(c *chunk) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.t.Hold()
	var pkts, bytes uint64
	var err error
	for i := 1; c != nil; i++ {
		var next *chunk
		if i < maxChunksPerWrite {
			select {
			case next = <-s.queue:
			default:
			}
		}
		if next == nil {
			c.markEnd()
		}
		if err == nil {
			err = s.writeChunk(c)
			pkts += uint64(c.pkts)
			bytes += uint64(c.ipBytes)
		}
		putChunk(c)
		c = next
	}
	if ferr := s.t.Flush(); err == nil {
		err = ferr
	}
	if len(s.queue) <= cap(s.queue)/2 {
		s.congested.Store(false)
	}
	if err != nil {
		return s.ioErr("write", err)
	}
	s.stats.TxPackets.Add(pkts)
	s.stats.TxBytes.Add(bytes)
	s.txIP.Add(bytes)
	// The record layers refuse to go much further (recordLimit); closing
	// here leaves room for the CLOSE. With KeyUpdate the counts restart
	// with each key and never get here.
	if s.t.Usage().Records > MaxRecordsPerKey {
		return &CloseError{Code: CloseRekey, Reason: "TLS record limit of this key reached: reconnect"}
	}
	return nil
}

// writeChunk writes one chunk's frames. A chunk framed in place tells
// the transport where its frame's header ends and the packet starts
// (WriteOwned): on the record layer the header and GSO metadata then go
// in a record of their own, so the receiver can open every record of the
// packet straight into its packet buffer.
func (s *Session) writeChunk(c *chunk) error {
	head := 0
	if c.start != 0 { // framed in place: the chunk starts with the frame's header
		head = tun.Headroom - c.start
	}
	return s.t.WriteOwned(c.bytes(), head)
}

// writeControl sends one control frame.
func (s *Session) writeControl(typ byte, payload []byte) error {
	var b [HeaderLen + PingLen]byte
	frame := appendControl(b[:0], typ, payload)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.t.Write(frame); err != nil {
		return s.ioErr("write", err)
	}
	return nil
}

// ioErr turns an I/O error into the session's end cause. When the session
// is already ending, the error is a consequence and cancel ignores it.
func (s *Session) ioErr(op string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: connection closed by peer without Close frame: %w", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// readLoop reads frames, hands data packets to the TUN in batches and
// answers control frames.
func (s *Session) readLoop() error {
	for {
		if err := s.readFrame(); err != nil {
			s.flushRx()
			s.releaseRx()
			return err
		}
	}
}

// flushRx writes the packets gathered in s.rx to the TUN in one call.
func (s *Session) flushRx() error {
	k := s.rxK
	if k == 0 {
		return nil
	}
	defer s.releaseRx()
	anyGSO := false
	for i := 0; i < k; i++ {
		s.rxBatch[i] = s.rx[i].buf[:s.rx[i].end]
		anyGSO = anyGSO || s.rx[i].gso
	}
	var err error
	if anyGSO {
		// Write every packet whole with its own virtio-net header (plain
		// packets get an empty one), keeping the batch's order.
		for i := 0; i < k; i++ {
			if !s.rx[i].gso {
				clear(s.rx[i].buf[tun.Headroom-tun.VirtioNetHdrLen : tun.Headroom])
			}
			s.rx[i].gso = false
		}
		_, err = s.gdev.WriteGSO(s.rxBatch[:k], tun.Headroom)
	} else {
		_, err = s.cfg.Dev.Write(s.rxBatch[:k], tun.Headroom)
	}
	bytes := s.rxBytes
	s.rxK, s.rxBytes = 0, 0
	if err != nil {
		if errors.Is(err, tun.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("write tun: %w", err)
		}
		s.stats.DropTUNWrite.Add(uint64(k))
		return nil
	}
	s.stats.RxPackets.Add(uint64(k))
	s.stats.RxBytes.Add(bytes)
	s.rxIP.Add(bytes)
	return nil
}

// pongNow answers the PING in s.ctl: on the reader's own goroutine when
// the write side is idle and the socket takes the record at once (an idle
// gateway's keepalive then costs one wake-up per PING, not two), otherwise
// through the writer.
func (s *Session) pongNow() error {
	if s.wmu.TryLock() {
		var b [HeaderLen + PingLen]byte
		ok, err := s.t.TrySend(appendControl(b[:0], TypePong, s.ctl[:]))
		s.wmu.Unlock()
		if err != nil {
			return s.ioErr("write", err)
		}
		if ok {
			return nil
		}
	}
	select {
	case s.pongs <- s.ctl:
	default: // the peer pings faster than we answer: skip
	}
	return nil
}

// releaseRx returns the receive buffers to the pool after a write to the
// TUN (or at the end): the next batch takes fresh ones.
func (s *Session) releaseRx() {
	for i, c := range s.rx {
		if c != nil {
			putChunk(c)
			s.rx[i] = nil
		}
	}
}

// readFrame reads and handles one frame. Data packets are read straight
// into their own receive buffer; the batch goes to the TUN when the sender
// marked its end or the buffers are full.
func (s *Session) readFrame() error {
	if err := s.readFull(s.hdr[:], false); err != nil {
		return s.ioErr("read", err)
	}
	h, err := ParseHeader(s.hdr[:])
	if err != nil {
		return &ProtocolError{Err: err}
	}
	s.rxFrames.Add(1)
	switch h.Type {
	case TypeData:
		c, ok, err := s.readPacket(h.Len)
		if err != nil {
			return err
		}
		if ok {
			s.accept(c, h.Len, false)
		}
	case TypeDataGSO:
		if s.gdev == nil {
			return &ProtocolError{Err: errors.New("DATA_GSO frame, but this side did not offer GSO")}
		}
		if err := s.readFull(s.ctl[:GSOMetaLen], false); err != nil {
			return s.ioErr("read", err)
		}
		g, _ := ParseGSO(s.ctl[:GSOMetaLen])
		n := h.Len - GSOMetaLen
		c, ok, err := s.readPacket(n)
		if err != nil {
			return err
		}
		if ok {
			vh, err := virtioFor(g, c.buf[tun.Headroom:tun.Headroom+n], s.cfg.MTU)
			if err != nil {
				return &ProtocolError{Err: err}
			}
			vh.Encode(c.buf[tun.Headroom-tun.VirtioNetHdrLen:])
			s.accept(c, n, true)
		}
	case TypePing:
		if err := s.readFull(s.ctl[:], false); err != nil {
			return s.ioErr("read", err)
		}
		if err := s.countControl(); err != nil {
			return err
		}
		if err := s.pongNow(); err != nil {
			return err
		}
	case TypePong:
		if err := s.readFull(s.ctl[:], false); err != nil {
			return s.ioErr("read", err)
		}
		if err := s.countControl(); err != nil {
			return err
		}
		sent := int64(binary.BigEndian.Uint64(s.ctl[:]))
		now := time.Now().UnixNano()
		if rtt := now - sent; rtt >= 0 && rtt < int64(time.Minute) {
			s.rttNanos.Store(rtt)
			s.rttAt.Store(now)
		}
	case TypeClose:
		p := make([]byte, h.Len)
		if err := s.readFull(p, false); err != nil {
			return s.ioErr("read", err)
		}
		code, reason, err := UnmarshalClose(p)
		if err != nil {
			return &ProtocolError{Err: err}
		}
		return &PeerClosedError{Code: code, Reason: reason}
	default:
		return &ProtocolError{Err: fmt.Errorf("unexpected %s frame during session", typeName(h.Type))}
	}
	// E ends the sender's write, whatever the frame's type: what was
	// gathered goes to the TUN now (a [DATA, PING+E] write included).
	if h.End || s.rxK == s.rxCap {
		if err := s.flushRx(); err != nil {
			return err
		}
		return s.checkRxRecords()
	}
	return nil
}

// rxRecordCounter is a transport that counts the records it receives
// under the peer's current keys (the TLS transport).
type rxRecordCounter interface{ RxRecords() uint64 }

// checkRxRecords closes with CloseRekey once the peer's records under its
// current keys pass MaxRecordsPerKey, as the writer does for its own
// (writeChunks), so that a session that only receives is also told to
// reconnect in time, with a CLOSE, rather than cut off by the record
// layer's hard limit. That happens on crypto/tls, which cannot see the
// peer's KeyUpdates, when the peer rotates in-band: it was told it may
// (CapKeyUpdate) before this side's hand-over to the own record layer
// was refused.
func (s *Session) checkRxRecords() error {
	if s.rxc != nil && s.rxc.RxRecords() > MaxRecordsPerKey {
		return &CloseError{Code: CloseRekey, Reason: "TLS record limit of the peer's key reached: reconnect"}
	}
	return nil
}

// readPacket reads an n-byte packet into the next receive slot and checks
// it: well-formed IP and, on a server, an allowed source. ok is false when
// the packet was dropped (and counted); err only for I/O errors.
func (s *Session) readPacket(n int) (c *chunk, ok bool, err error) {
	if s.rx == nil {
		s.rx = make([]*chunk, s.rxCap)
		s.rxBatch = make([][]byte, s.rxCap)
	}
	if c = s.rx[s.rxK]; c == nil {
		c = getChunk()
		s.rx[s.rxK] = c
	}
	p := c.buf[tun.Headroom : tun.Headroom+n]
	if err := s.readFull(p, true); err != nil {
		return nil, false, s.ioErr("read", err)
	}
	switch {
	case !checkIP(p):
		s.stats.DropMalformed.Add(1)
		return c, false, nil
	case s.cfg.Allowed != nil && !s.allowedSrc(srcAddr(p)):
		s.stats.DropSpoofed.Add(1)
		return c, false, nil
	}
	return c, true, nil
}

// accept adds the packet in slot c to the batch for the TUN.
func (s *Session) accept(c *chunk, n int, gso bool) {
	c.end = tun.Headroom + n
	c.gso = gso
	s.rxK++
	s.rxBytes += uint64(n)
}

// maxControlRate bounds the control frames a peer may send per second; a
// flood ends its session (we would otherwise spend a write per ping).
const maxControlRate = 100

// countControl counts a control frame and refuses a flood.
func (s *Session) countControl() error {
	s.stats.ControlFrames.Add(1)
	s.ctlN++
	if s.ctlN <= maxControlRate {
		return nil
	}
	now := time.Now()
	if now.Sub(s.ctlT) < time.Second {
		return &ProtocolError{Err: fmt.Errorf("control frame flood: %d control frames within a second (limit %d)", s.ctlN, maxControlRate)}
	}
	s.ctlN, s.ctlT = 0, now
	return nil
}

func (s *Session) allowedSrc(a netip.Addr) bool {
	for _, p := range s.cfg.Allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
