package tunnel

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// tlsTransport is the Transport of TLS 1.3 over TCP. crypto/tls makes the
// handshake on a BatchConn (conn.go), which gathers writes and follows the
// records; StartData then hands the stream over to a RecordConn, this
// package's own record layer (record.go), when BatchConn.Records proves
// that safe, and otherwise the data phase stays on crypto/tls. The bytes
// on the wire are the same either way.
//
// Client.Connect and Server's accept path make one: newTLSTransport, then
// client or server, then handshake, then the protocol handshake
// (clientHello, readControl).
type tlsTransport struct {
	// Immutable after handshake.
	raw    net.Conn // the TCP connection
	bc     *BatchConn
	stdlib bool // keep the data phase on crypto/tls (StdlibRecords)
	own    bool // tlsvpn's own AES-GCM on the record layer (OwnAESGCM)
	info   TransportInfo

	// Set before the handshake, and by StartData before the session's
	// goroutines start.
	tc   *tls.Conn   // nil after the hand-over: crypto/tls is not used again
	conn net.Conn    // where frames go: tc, or rc after the hand-over
	rc   *RecordConn // non-nil: the data phase runs on the own record layer
	wake func()      // DataOptions.Wake

	// For Usage, from other goroutines: rc, and whether its keys are
	// updated in-band (the peer accepts KeyUpdate).
	rcLoaded atomic.Pointer[RecordConn]
	inBand   atomic.Bool
}

// newTLSTransport wraps raw, a TCP connection, for a TLS handshake.
// stdlib and own are StdlibRecords and OwnAESGCM of the client or server
// configuration.
func newTLSTransport(raw net.Conn, stdlib, own bool) *tlsTransport {
	return &tlsTransport{raw: raw, bc: NewBatchConn(raw), stdlib: stdlib, own: own}
}

// tryOwnRecords reports whether a side configured with StdlibRecords
// stdlib tries to move its data phase to the own record layer. Only such a
// side captures traffic secrets, and only such a side announces
// CapKeyUpdate: on crypto/tls the per-key record limit is kept by
// BatchConn, which counts every record of the connection because it cannot
// see key updates.
func tryOwnRecords(stdlib bool) bool { return !stdlib && OwnRecordLayer() == nil }

// client makes t the client side of a TLS handshake under cfg. Its
// traffic secrets are captured for the hand-over only when the own record
// layer will be used; otherwise they are never known outside crypto/tls.
func (t *tlsTransport) client(cfg *tls.Config) {
	if tryOwnRecords(t.stdlib) {
		t.tc = t.bc.Client(cfg)
	} else {
		t.tc = tls.Client(t.bc, cfg)
	}
	t.conn = t.tc
}

// server makes t the server side of a TLS handshake under cfg (made with
// CaptureSecrets when the own record layer will be used).
func (t *tlsTransport) server(cfg *tls.Config) {
	t.tc = tls.Server(t.bc, cfg)
	t.conn = t.tc
}

// helloConn is the connection crypto/tls reads the ClientHello from: the
// server's GetConfigForClient sees it as tls.ClientHelloInfo.Conn.
func (t *tlsTransport) helloConn() net.Conn { return t.bc }

// handshake completes the TLS handshake and records what Info reports.
func (t *tlsTransport) handshake(ctx context.Context) error {
	if err := t.tc.HandshakeContext(ctx); err != nil {
		return err
	}
	cs := t.tc.ConnectionState()
	t.info = TransportInfo{Remote: t.raw.RemoteAddr(), Resumed: cs.DidResume, TLS: &cs}
	return nil
}

// clientHello runs the client's protocol handshake (ClientHandshake).
func (t *tlsTransport) clientHello(ctx context.Context, h Hello) (Config, error) {
	cfg, n, err := clientHandshake(ctx, t.tc, h)
	t.bc.noteAppRead(n)
	return cfg, err
}

// readControl reads one control frame of the handshake (see the function
// of that name).
func (t *tlsTransport) readControl(ctx context.Context, want byte) ([]byte, error) {
	p, err := readControl(ctx, t.tc, want)
	if err == nil {
		t.bc.noteAppRead(HeaderLen + len(p))
	}
	return p, err
}

// StartData implements Transport: it moves the data phase to a
// RecordConn when it can; otherwise it stays on crypto/tls (still
// gathering writes) and the captured secrets are dropped.
func (t *tlsTransport) StartData(o DataOptions) {
	log, stats := o.Logger, o.Stats
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stats == nil {
		stats = new(Stats)
	}
	if t.stdlib {
		t.bc.Forget()
		log.Debug("data phase on crypto/tls's record layer (stdlib TLS records requested)")
		return
	}
	if err := OwnRecordLayer(); err != nil {
		t.bc.Forget()
		log.Debug("data phase on crypto/tls's record layer", "reason", err)
		return
	}
	suite := t.info.TLS.CipherSuite
	rc, err := t.bc.Records(suite, t.own)
	if err != nil {
		// Our own peers always allow the hand-over: this is an unusual
		// peer (or a bug), and costs speed, not correctness.
		t.bc.Forget()
		stats.RecordHandOverRefusals.Add(1)
		log.Warn("data phase stays on crypto/tls: record hand-over not proven safe", "err", err)
		return
	}
	rc.setOptions(recordOptions{keyUpdate: o.KeyUpdate, rekeyAt: o.RekeyRecords, stats: stats, wake: o.Wake})
	stats.RecordHandOvers.Add(1)
	log.Debug("data phase handed over to tlsvpn's TLS 1.3 record layer",
		"cipher_suite", tls.CipherSuiteName(suite), "own_aes_gcm", rc.OwnAESGCM(), "key_update", o.KeyUpdate)
	t.conn, t.rc, t.wake = rc, rc, o.Wake
	t.tc = nil // with its buffers
	t.rcLoaded.Store(rc)
	t.inBand.Store(o.KeyUpdate)
}

// ReadFull implements Transport.
func (t *tlsTransport) ReadFull(p []byte, slack bool) error {
	if t.rc != nil {
		return t.rc.ReadFull(p, slack)
	}
	_, err := io.ReadFull(t.tc, p)
	return err
}

// Write implements Transport.
func (t *tlsTransport) Write(p []byte) (int, error) { return t.conn.Write(p) }

// WriteOwned implements Transport. On the record layer p is sealed
// without a copy; on crypto/tls (which copies anyway) head is ignored, so
// a frame goes in one record there.
func (t *tlsTransport) WriteOwned(p []byte, head int) error {
	if t.rc == nil {
		_, err := t.conn.Write(p)
		return err
	}
	if head > 0 {
		if _, err := t.rc.WriteOwned(p[:head]); err != nil {
			return err
		}
		p = p[head:]
	}
	_, err := t.rc.WriteOwned(p)
	return err
}

// Hold implements Transport.
func (t *tlsTransport) Hold() {
	if t.rc != nil {
		t.rc.Hold()
	} else {
		t.bc.Hold()
	}
}

// Flush implements Transport.
func (t *tlsTransport) Flush() error {
	if t.rc != nil {
		return t.rc.Flush()
	}
	return t.bc.Flush()
}

// SetWriteDeadline implements Transport.
func (t *tlsTransport) SetWriteDeadline(d time.Time) error { return t.raw.SetWriteDeadline(d) }

// TrySend implements Transport: only the record layer can (RecordConn.TrySend).
func (t *tlsTransport) TrySend(frame []byte) (bool, error) {
	if t.rc == nil {
		return false, nil
	}
	ok, flush, err := t.rc.TrySend(frame)
	if flush && t.wake != nil {
		t.wake()
	}
	return ok, err
}

// Close implements Transport: it sends close_notify (or the fatal alert
// of an error in the peer's records) and closes the TCP connection.
func (t *tlsTransport) Close() error { return t.conn.Close() }

// CloseDrain implements Transport: close_notify, then FIN, then at most d
// and 4 MiB of the peer's data read and discarded.
func (t *tlsTransport) CloseDrain(d time.Duration) {
	if t.rc != nil {
		t.rc.sendCloseAlert()
	} else {
		t.tc.CloseWrite() // close_notify
	}
	if cw, ok := t.raw.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		t.raw.SetReadDeadline(time.Now().Add(d))
		io.CopyN(io.Discard, t.raw, 4<<20)
	}
	t.conn.Close()
}

// Release implements Transport.
func (t *tlsTransport) Release() {
	if t.rc != nil {
		t.rc.freeBuffers()
	}
}

// Info implements Transport.
func (t *tlsTransport) Info() TransportInfo { return t.info }

// Usage implements Transport. The record count is exact on the own
// record layer; on crypto/tls it counts every encrypted record of the
// connection, the handshake's included (an upper bound).
func (t *tlsTransport) Usage() KeyUsage {
	if rc := t.rcLoaded.Load(); rc != nil {
		return KeyUsage{Records: max(rc.TxSeq(), rc.RxSeq()), Updated: rc.KeysUpdated(), InBand: t.inBand.Load()}
	}
	tx, rx := t.bc.Counts()
	return KeyUsage{Records: max(tx, rx)}
}

// RxRecords returns the records received under the peer's current keys:
// exact on the own record layer; on crypto/tls every record of the
// connection, which cannot see the peer's KeyUpdates. Unlike Usage it
// takes no lock a writer holds, so the session's reader can ask it once
// per batch it receives (see Session.readFrame).
func (t *tlsTransport) RxRecords() uint64 {
	if rc := t.rcLoaded.Load(); rc != nil {
		return rc.RxSeq()
	}
	_, rx := t.bc.Counts()
	return rx
}
