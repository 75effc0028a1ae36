package tunnel

import (
	"crypto/tls"
	"log/slog"
	"net"
	"time"
)

// Transport is the connection a Session runs over: a reliable, ordered
// byte stream of frames to and from one peer that the transport has
// authenticated, and what is known about that connection. The Session
// sees nothing else of it: TLS over TCP (transport_tls.go), which the
// Client's Connect and the Server's accept path build, is one
// implementation; a transport made another way plugs into NewSession
// unchanged.
//
// A transport is established (its handshakes done) before it is given to
// a session, which then owns it; until the session runs, its maker may
// still write control frames on it (the server's CONFIG). From Run on,
// calls come from the session's goroutines as follows: ReadFull from its
// reader only; Write, WriteOwned, Hold, Flush and SetWriteDeadline one at
// a time, under the session's write lock; TrySend from the reader while it
// holds that lock. Info and Usage may be called from any goroutine at any
// time. Close and CloseDrain may be called while a ReadFull or a write is
// blocked and make it return.
//
// Methods that take a []byte do not keep it after they return.
type Transport interface {
	// StartData is called once, by Session.Run before its goroutines
	// start: the protocol handshake is over and the data phase begins. A
	// transport may move to a faster path for it (the TLS transport hands
	// the stream over to this package's own record layer). One that
	// cannot stays on the path it has, logging why to o.Logger.
	StartData(o DataOptions)

	// ReadFull fills p with the next bytes of the peer's frame stream, as
	// io.ReadFull does (io.EOF only when no byte came before the end).
	// With slack it may also overwrite the byte after p, which must be
	// within cap(p): a transport that decrypts in place can then open a
	// packet straight into its buffer.
	ReadFull(p []byte, slack bool) error

	// Write sends p, one or more whole frames, at once unless writes are
	// gathered (Hold). It does not modify p.
	Write(p []byte) (int, error)
	// WriteOwned is Write for frames in a buffer the caller does not
	// touch until it returns: the transport may work in it, and in the
	// byte after it within cap(p), restoring every byte before it
	// returns. A head > 0 says p[:head] is the header (and GSO metadata)
	// of one frame framed in place, whose payload p[head:] starts at a
	// packet buffer's start: a transport that seals records puts the
	// header in a record of its own, so the peer can open the payload
	// straight into its packet buffer. A byte stream ignores head.
	WriteOwned(p []byte, head int) error
	// Hold gathers the writes that follow until Flush, which sends them
	// together (one write, up to a bound the transport sets), with
	// anything the transport asked its writer for (DataOptions.Wake), and
	// stops gathering. The session holds for each batch of frames it
	// writes, and calls Flush alone when woken.
	Hold()
	Flush() error
	// SetWriteDeadline bounds the writes that follow (a session saying
	// goodbye to a peer that may be stuck); the zero time removes it.
	SetWriteDeadline(t time.Time) error
	// TrySend sends frame, one small whole frame (a PONG), at once if that
	// needs no waiting: on the reader's goroutine, so that answering a
	// PING does not also wake the writer. It returns false, having done
	// nothing, when it cannot; the session then gives the frame to its
	// writer.
	TrySend(frame []byte) (bool, error)

	// Close closes the connection without waiting on the peer (a TLS
	// transport still sends its close_notify, or the fatal alert of an
	// error in the peer's records). Blocked calls return.
	Close() error
	// CloseDrain closes gracefully, after the session's reader stopped
	// with frames of the peer possibly unread: it tells the peer that no
	// more data follows (TLS close_notify, TCP FIN), then reads and
	// discards what the peer still sends, for at most d and a bounded
	// amount, and closes. Closing at once would let TCP answer the unread
	// data with a reset, which can destroy the session's last frame (its
	// CLOSE) before the peer read it.
	CloseDrain(d time.Duration)
	// Release is called once, after Close or CloseDrain, when no other
	// call runs or will run: the transport may give its buffers back to
	// their pools.
	Release()

	// Info returns what is known about the established connection. It
	// does not change over the transport's life.
	Info() TransportInfo
	// Usage returns how far the current keys have been used, for the
	// per-key limits and status. It is cheap: the session reads it once
	// per batch it writes.
	Usage() KeyUsage
}

// TransportInfo describes an established transport, for status, logs and
// the server's checks of its peers.
type TransportInfo struct {
	// Remote is the peer's underlay address; nil if the transport has
	// none.
	Remote net.Addr
	// Resumed: the handshake resumed an earlier session (no full
	// authentication this time).
	Resumed bool
	// TLS is the handshake's state on a TLS transport (peer certificates,
	// version, cipher suite, ALPN), nil on others.
	TLS *tls.ConnectionState
}

// remote returns Remote as a string, or "" without one.
func (i TransportInfo) remote() string {
	if i.Remote == nil {
		return ""
	}
	return i.Remote.String()
}

// attrs returns slog attributes describing the connection (TLSAttrs on a
// TLS transport).
func (i TransportInfo) attrs() []any {
	if i.TLS == nil {
		return []any{"resumed", i.Resumed}
	}
	return TLSAttrs(*i.TLS)
}

// KeyUsage is how far a transport's current keys have been used.
type KeyUsage struct {
	// Records counts the records sent or received under the current keys,
	// whichever is more: exact, or an upper bound. A transport with no
	// per-key limit reports 0.
	Records uint64
	// Updated is when the keys last changed after the handshake (a TLS
	// KeyUpdate in either direction); zero if they never did.
	Updated time.Time
	// InBand: the transport changes its keys by itself before Records
	// reaches the per-key limits, so the session never has to be
	// replaced for them.
	InBand bool
}

// DataOptions are a session's settings for the data phase of its
// transport (StartData).
type DataOptions struct {
	// KeyUpdate: the peer announced CapKeyUpdate, so the transport may
	// update its keys in-band.
	KeyUpdate bool
	// RekeyRecords is how many records one key protects before an in-band
	// update; 0 means DefaultRekeyRecords.
	RekeyRecords uint64
	// Wake asks the session's writer to call Flush soon: the transport
	// found something to send while reading (a KeyUpdate). It does not
	// block.
	Wake   func()
	Stats  *Stats
	Logger *slog.Logger
}
