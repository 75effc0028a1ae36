package tunnel

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/cryptobyte"

	"tlsvpn/tunnel/internal/aesgcm"
)

// The data phase of a session runs on RecordConn, this package's own TLS
// 1.3 record layer (RFC 8446 section 5), instead of on the tls.Conn that
// made the handshake. The bytes on the wire do not change: they are the
// same application_data records under the same traffic keys and sequence
// numbers, and the peer's TLS stack reads them as it would read its own.
// What changes is where the bytes are: crypto/tls copies every record's
// plaintext into a buffer of its own before sealing it, and every received
// record from the socket into another buffer before opening it, then out
// again. RecordConn seals straight from the packet buffer into the send
// buffer and opens straight from the receive buffer into the packet
// buffer, so a 64 KiB super-packet is not copied in user space at all.
//
// The keys come from crypto/tls itself: the connection's KeyLogWriter
// hands its traffic secrets to the BatchConn under it (they never leave
// the process), and the BatchConn keeps every encrypted record of the
// handshake in both directions. BatchConn.Records proves from those
// records how many each side has sent under the application keys, and
// refuses to switch when anything is not proven (conn.go); the session
// then stays on crypto/tls.
//
// Only the AEADs are borrowed: AES-GCM from crypto/cipher (or, opted in,
// tunnel/internal/aesgcm) and ChaCha20-Poly1305 from golang.org/x/crypto.
// This file frames, numbers and checks records, and follows RFC 8446 where
// it says what a receiver must refuse; on a fatal error it sends the alert
// the RFC names when the connection is closed.

// TLS record layer constants (RFC 8446 sections 5 and 6).
const (
	// maxRecord is TLS 1.3's largest record plaintext.
	maxRecord                  = 16 << 10
	recordHeaderLen            = 5
	recordTypeChangeCipherSpec = 20
	recordTypeAlert            = 21
	recordTypeHandshake        = 22
	recordTypeAppData          = 23
	tagLen                     = 16
	// maxCiphertext is the largest TLSCiphertext.length a receiver must
	// accept: 2^14 + 256.
	maxCiphertext = maxRecord + 256
	// maxRecordWire is a whole record on the wire, header included.
	maxRecordWire = recordHeaderLen + maxCiphertext

	// Handshake message types after the handshake (RFC 8446 section 4).
	typeNewSessionTicket = 4
	typeKeyUpdate        = 24
	// maxHandshakeMsg bounds a post-handshake message, as crypto/tls does.
	maxHandshakeMsg = 64 << 10
	// maxUseless is how many records (or messages) in a row may carry no
	// application data before the peer is cut off: empty records,
	// user_canceled alerts, tickets and key updates. crypto/tls's limit.
	maxUseless = 16
)

// Alert descriptions (RFC 8446 section 6).
const (
	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertProtocolVersion   = 70
	alertInternalError     = 80
	alertUserCanceled      = 90
)

// Per-key record limits. AES-GCM keys are good for about 2^24.5 full
// records (RFC 8446 section 5.5); ChaCha20-Poly1305's limit is far higher,
// but one limit keeps the rules simple.
const (
	// DefaultRekeyRecords is how many records the own record layer sends
	// (or receives) under one traffic key before it updates the keys
	// in-band, when the peer accepts KeyUpdate.
	DefaultRekeyRecords = 1 << 23
	// MaxRecordsPerKey is where a session closes with CloseRekey when it
	// cannot update its keys in-band; the peer then reconnects.
	MaxRecordsPerKey = 1 << 24
	// recordLimit is where the record layers themselves refuse to seal or
	// open another record under a key, whatever the session does: the
	// margin above MaxRecordsPerKey leaves room for the session's CLOSE,
	// and the limit stays below 2^24.5.
	recordLimit = MaxRecordsPerKey + 1<<20
)

var (
	errRecordClosed = errors.New("tls record layer: connection closed")
	errKeyExhausted = errors.New("tls record layer: the sending key has protected its limit of records; a new key or session is needed")
)

// recordError is a fatal error found in the peer's records. The record
// layer sends its alert when the connection is closed.
type recordError struct {
	alert uint8
	msg   string
}

func (e *recordError) Error() string {
	return fmt.Sprintf("tls: %s (alert: %s)", e.msg, strings.TrimPrefix(tls.AlertError(e.alert).Error(), "tls: "))
}

// OwnRecordLayer reports whether the data phase may run on the own record
// layer in this process, and why not: in FIPS 140 mode (GODEBUG=fips140=on
// or only) every record stays with crypto/tls, whose AES-GCM is the FIPS
// module's.
func OwnRecordLayer() error {
	if fips140.Enabled() {
		return errors.New("FIPS 140 mode is on: records stay with crypto/tls")
	}
	return nil
}

// OwnAESGCMCheck reports whether tlsvpn's own AES-GCM (--own-aes-gcm) can
// run in this process; when it cannot, the record layer uses Go's.
func OwnAESGCMCheck() error {
	if err := OwnRecordLayer(); err != nil {
		return err
	}
	return aesgcm.Check()
}

// trafficKeys are one direction's AEAD and IV, derived from a traffic
// secret (RFC 8446 section 7.3), and the secret itself, from which a
// KeyUpdate derives the next one (section 7.2).
type trafficKeys struct {
	aead   cipher.AEAD
	iv     [12]byte
	suite  uint16
	secret []byte
	own    bool // AES-GCM from tunnel/internal/aesgcm
}

// newTrafficKeys derives the key and IV for suite from a traffic secret.
// With own, AES-GCM is tlsvpn's own where OwnAESGCMCheck allows it, and
// Go's otherwise.
func newTrafficKeys(suite uint16, secret []byte, own bool) (*trafficKeys, error) {
	h, keyLen, err := suiteParams(suite)
	if err != nil {
		return nil, err
	}
	if len(secret) != h().Size() {
		return nil, fmt.Errorf("traffic secret is %d bytes, want %d", len(secret), h().Size())
	}
	key, err := hkdf.Expand(h, secret, hkdfLabel("key", keyLen), keyLen)
	if err != nil {
		return nil, err
	}
	iv, err := hkdf.Expand(h, secret, hkdfLabel("iv", 12), 12)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	k := &trafficKeys{suite: suite, secret: append([]byte(nil), secret...)}
	if k.aead, k.own, err = newAEAD(suite, key, own); err != nil {
		return nil, err
	}
	copy(k.iv[:], iv)
	return k, nil
}

// suiteParams returns a TLS 1.3 suite's hash and AEAD key length.
func suiteParams(suite uint16) (func() hash.Hash, int, error) {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		return sha256.New, 16, nil
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return sha256.New, 32, nil
	case tls.TLS_AES_256_GCM_SHA384:
		return sha512.New384, 32, nil
	}
	return nil, 0, fmt.Errorf("cipher suite %s is not supported by the record layer", tls.CipherSuiteName(suite))
}

// newAEAD returns the record layer's AEAD for suite and key: x/crypto's
// ChaCha20-Poly1305, or AES-GCM from crypto/cipher unless own asks for
// tlsvpn's own and it may run here (then isOwn is true).
func newAEAD(suite uint16, key []byte, own bool) (a cipher.AEAD, isOwn bool, err error) {
	if suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		a, err = chacha20poly1305.New(key)
		return a, false, err
	}
	if own && OwnAESGCMCheck() == nil {
		if a, err = aesgcm.New(key); err == nil {
			return a, true, nil
		}
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, false, err
	}
	a, err = cipher.NewGCM(b)
	return a, false, err
}

// next returns the keys of the next generation: application_traffic_
// secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length).
func (k *trafficKeys) next() (*trafficKeys, error) {
	h, _, err := suiteParams(k.suite)
	if err != nil {
		return nil, err
	}
	secret, err := hkdf.Expand(h, k.secret, hkdfLabel("traffic upd", len(k.secret)), len(k.secret))
	if err != nil {
		return nil, err
	}
	defer clear(secret)
	return newTrafficKeys(k.suite, secret, k.own)
}

// wipe forgets the traffic secret (the AEAD's expanded key stays with the
// garbage collector: crypto/cipher offers no way to clear it).
func (k *trafficKeys) wipe() { clear(k.secret) }

// hkdfLabel is the HkdfLabel structure of HKDF-Expand-Label with an empty
// context (RFC 8446 section 7.1).
func hkdfLabel(label string, length int) string {
	b := binary.BigEndian.AppendUint16(nil, uint16(length))
	b = append(b, byte(len("tls13 ")+len(label)))
	b = append(b, "tls13 "...)
	b = append(b, label...)
	b = append(b, 0)
	return string(b)
}

// nonce writes the per-record nonce for seq: the IV XORed with the
// big-endian sequence number.
func (k *trafficKeys) nonce(seq uint64, out *[12]byte) {
	*out = k.iv
	for i := range 8 {
		out[4+i] ^= byte(seq >> (56 - 8*i))
	}
}

// open opens the whole record rec (header included) sent with sequence
// number seq, appending the inner plaintext to dst. nonce is scratch
// space (kept by the caller so it does not escape per call).
func (k *trafficKeys) open(dst, rec []byte, seq uint64, nonce *[12]byte) ([]byte, error) {
	k.nonce(seq, nonce)
	out, err := k.aead.Open(dst, nonce[:], rec[recordHeaderLen:], rec[:recordHeaderLen])
	if err != nil {
		return nil, errors.New("bad record MAC")
	}
	return out, nil
}

// splitInner removes the zero padding from an inner plaintext and returns
// its content and content type; ok is false when it is all zeros.
func splitInner(inner []byte) (content []byte, typ byte, ok bool) {
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return nil, 0, false
	}
	return inner[:i], inner[i], true
}

// RecordConn is the TLS 1.3 record layer of a session's data phase (see
// the comment at the top of this file). Create it with BatchConn.Records.
//
// Write, Hold and Flush may be called from one goroutine
// while Read and ReadFull are called from another. Writes between Hold and
// Flush are gathered into one send, as with BatchConn.
type RecordConn struct {
	net.Conn // the TCP connection: addresses and deadlines pass through

	client    bool   // the TLS client side: may receive NewSessionTicket
	keyUpdate bool   // the peer accepts KeyUpdate: update keys in-band
	rekeyAt   uint64 // records under one key before an in-band update
	stats     *Stats // KeyUpdate counters; may be nil
	wake      func() // asks the writer to call Flush; may be nil

	// pending holds work for the writer that the reader found: answer a
	// peer's update_requested, or ask the peer to update its key.
	pending atomic.Uint32
	rxCount atomic.Uint64 // rxSeq, for other goroutines
	alert   atomic.Uint32 // 1 + the fatal alert to send at Close; 0: none
	// keysAt is when either direction last changed keys with a KeyUpdate
	// (Unix nanoseconds; 0: never), for status output. Set once per key
	// change, never per record.
	keysAt atomic.Int64

	wmu     sync.Mutex // guards the write side
	holding bool
	out     []byte  // sealed records not yet sent, in *outBuf
	outBuf  *[]byte // from sendPool while a write is gathered; nil when idle
	tx      *trafficKeys
	txSeq   uint64
	wnonce  [12]byte
	werr    error

	// Read side, used by one reader at a time.
	rx        *trafficKeys
	rxSeq     uint64
	requested bool // asked the peer to update its current key
	useless   int  // records in a row without application data
	hs        []byte
	rnonce    [12]byte
	in        recvBuf
	plain     []byte // decrypted content not yet returned (in in.buf)
	rerr      error
}

// Bits of RecordConn.pending.
const (
	pendingAnswer  = 1 << iota // the peer sent update_requested
	pendingRequest             // ask the peer to update its sending key
)

// outCap is the send buffer's capacity: a full gather plus one record.
const outCap = maxGather + maxRecordWire

// newRecordConn returns a RecordConn on c whose next records are sent and
// expected with sequence numbers txSeq and rxSeq, and whose receive
// buffer starts with pending (bytes already read from c). It sends no
// KeyUpdate until setOptions allows it.
func newRecordConn(c net.Conn, tx *trafficKeys, txSeq uint64, rx *trafficKeys, rxSeq uint64, pending []byte) *RecordConn {
	rc := &RecordConn{
		Conn:    c,
		tx:      tx,
		txSeq:   txSeq,
		rx:      rx,
		rxSeq:   rxSeq,
		rekeyAt: DefaultRekeyRecords,
	}
	rc.rxCount.Store(rxSeq)
	rc.in.load(pending)
	return rc
}

// recordOptions are a session's settings for its record layer.
type recordOptions struct {
	keyUpdate bool   // the peer announced CapKeyUpdate
	rekeyAt   uint64 // 0: DefaultRekeyRecords
	stats     *Stats
	wake      func()
}

// setOptions applies o; call it before the RecordConn is used.
func (c *RecordConn) setOptions(o recordOptions) {
	c.keyUpdate, c.stats, c.wake = o.keyUpdate, o.stats, o.wake
	c.rekeyAt = DefaultRekeyRecords
	if o.rekeyAt > 0 {
		c.rekeyAt = min(o.rekeyAt, MaxRecordsPerKey/2)
	}
}

// KeysUpdated returns when the keys last changed with a KeyUpdate in
// either direction, or the zero time if they never did.
func (c *RecordConn) KeysUpdated() time.Time {
	if n := c.keysAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// OwnAESGCM reports whether the keys use tlsvpn's own AES-GCM.
func (c *RecordConn) OwnAESGCM() bool { return c.rx.own }

// TxSeq returns the number of records sent so far under the current
// sending key (the next record's sequence number).
func (c *RecordConn) TxSeq() uint64 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.txSeq
}

// RxSeq returns the number of records received so far under the peer's
// current key.
func (c *RecordConn) RxSeq() uint64 { return c.rxCount.Load() }

// Hold starts gathering records until Flush.
func (c *RecordConn) Hold() {
	c.wmu.Lock()
	c.holding = true
	c.wmu.Unlock()
}

// Flush stops gathering and sends, in one write, the gathered records
// and the KeyUpdate the reader asked for (wake) if it is still pending:
// the answer to a peer's update_requested, or a request for the peer to
// update its key. (Data writes send a pending KeyUpdate too, first.)
func (c *RecordConn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.holding = false
	if c.werr == nil && c.pending.Load() != 0 {
		if err := c.updateLocked(); err != nil {
			c.werr = err
			return err
		}
	}
	return c.sendLocked()
}

// TrySend seals p (a whole frame) in a record and tries to send it at
// once without blocking, for a reader that answers a PING itself instead
// of waking the writer. It returns false, having done nothing, when the
// write side is busy or the connection cannot write without blocking
// (not a socket). It returns true when the record is sealed: sent, or,
// if the socket buffer was full, left for the writer's next send (then
// flush is true and the caller must wake the writer to Flush).
func (c *RecordConn) TrySend(p []byte) (ok, flush bool, err error) {
	sc, isSock := c.Conn.(syscall.Conn)
	if !isSock || !c.wmu.TryLock() {
		return false, false, nil
	}
	defer c.wmu.Unlock()
	if c.werr != nil || c.holding || len(c.out) > 0 {
		return false, false, c.werr
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, false, nil
	}
	if err := c.sealLocked(recordTypeAppData, p, false); err != nil {
		c.werr = err
		return true, false, err
	}
	var n int
	var werr error
	if err := raw.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), c.out)
		return true // one attempt: never wait for the socket here
	}); err != nil {
		werr = err
	}
	if n < 0 {
		n = 0
	}
	switch {
	case n == len(c.out):
		c.out = c.out[:0]
		c.sendLocked() // gives the send buffer back
		return true, false, nil
	case werr == nil || errors.Is(werr, syscall.EAGAIN) || errors.Is(werr, syscall.EINTR):
		// Part or none of the record went out: the rest goes with the
		// writer's next send, in order.
		c.out = append(c.out[:0], c.out[n:]...)
		return true, true, nil
	}
	c.werr = werr
	return true, false, werr
}

// Write implements net.Conn: p is sealed into records of at most 16 KiB.
func (c *RecordConn) Write(p []byte) (int, error) {
	return c.write(p, false)
}

// WriteOwned is Write for a buffer the caller owns outright: to seal
// without copying, it may overwrite the byte after each record's share of
// p (up to one byte past len(p), within cap(p)) while it works. It
// restores every byte before it returns.
func (c *RecordConn) WriteOwned(p []byte) (int, error) {
	return c.write(p, true)
}

func (c *RecordConn) write(p []byte, owned bool) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	total := len(p)
	for len(p) > 0 {
		n := min(len(p), maxRecord)
		if err := c.sealLocked(recordTypeAppData, p[:n], owned); err != nil {
			c.werr = err
			return total - len(p), err
		}
		p = p[n:]
	}
	if !c.holding {
		if err := c.sendLocked(); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// sealLocked appends one record carrying content of type typ to c.out,
// after a KeyUpdate when one is due.
func (c *RecordConn) sealLocked(typ byte, content []byte, owned bool) error {
	if c.pending.Load() != 0 || (c.keyUpdate && c.txSeq >= c.rekeyAt) {
		if err := c.updateLocked(); err != nil {
			return err
		}
	}
	return c.sealRawLocked(typ, content, owned)
}

// updateLocked sends a KeyUpdate and moves to the next sending key when
// the peer asked for one (RFC 8446 section 4.6.3: before the next
// application data), when this side asks the peer to update its key, or
// when the sending key has protected rekeyAt records.
func (c *RecordConn) updateLocked() error {
	p := c.pending.Swap(0)
	request := p&pendingRequest != 0 && c.keyUpdate
	if p&pendingAnswer == 0 && !request && !(c.keyUpdate && c.txSeq >= c.rekeyAt) {
		return nil
	}
	msg := [5]byte{typeKeyUpdate, 0, 0, 1, 0}
	if request {
		msg[4] = 1 // update_requested
	}
	if err := c.sealRawLocked(recordTypeHandshake, msg[:], false); err != nil {
		return err
	}
	next, err := c.tx.next()
	if err != nil {
		return err
	}
	c.tx.wipe()
	c.tx, c.txSeq = next, 0
	c.keysAt.Store(time.Now().UnixNano())
	if c.stats != nil {
		c.stats.KeyUpdatesSent.Add(1)
	}
	return nil
}

// sealRawLocked appends one record carrying content of type typ to c.out,
// sending what is gathered first when there is no room. With owned, the
// content type byte is put after content in its own buffer (saved and
// restored) so the AEAD reads the plaintext where it is.
func (c *RecordConn) sealRawLocked(typ byte, content []byte, owned bool) error {
	n := len(content)
	l := n + 1 + tagLen
	if c.out == nil {
		c.outBuf = sendPool.Get().(*[]byte)
		c.out = (*c.outBuf)[:0]
	} else if len(c.out)+recordHeaderLen+l > cap(c.out) {
		if err := c.sendLocked(); err != nil {
			return err
		}
	}
	if c.txSeq >= recordLimit {
		return errKeyExhausted
	}
	start := len(c.out) + recordHeaderLen
	c.out = append(c.out, recordTypeAppData, 3, 3, byte(l>>8), byte(l))
	hdr := c.out[start-recordHeaderLen : start]
	c.tx.nonce(c.txSeq, &c.wnonce)
	c.txSeq++
	if owned && cap(content) > n {
		inner := content[:n+1]
		saved := inner[n]
		inner[n] = typ
		c.out = c.tx.aead.Seal(c.out, c.wnonce[:], inner, hdr)
		inner[n] = saved
		return nil
	}
	c.out = append(c.out, content...)
	c.out = append(c.out, typ)
	c.out = c.tx.aead.Seal(c.out[:start], c.wnonce[:], c.out[start:], hdr)
	return nil
}

// sendLocked sends the gathered records. Outside Hold, the send buffer
// then goes back to the pool: an idle connection holds none.
func (c *RecordConn) sendLocked() error {
	var err error
	if len(c.out) > 0 {
		_, err = c.Conn.Write(c.out)
		c.out = c.out[:0]
		if err != nil {
			c.werr = err
		}
	}
	if !c.holding && c.outBuf != nil {
		sendPool.Put(c.outBuf)
		c.out, c.outBuf = nil, nil
	}
	return err
}

// Close sends an alert and closes the connection: the fatal alert of an
// error found in the peer's records, or close_notify. It waits at most a
// second for a write in progress (a stuck peer cannot hold it); when that
// write fails, no alert follows it.
func (c *RecordConn) Close() error {
	c.sendCloseAlert()
	return c.Conn.Close()
}

// sendCloseAlert is Close without closing the connection: it sends the
// alert once and refuses every later write.
func (c *RecordConn) sendCloseAlert() {
	c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.wmu.Lock()
	if c.werr == nil {
		msg := []byte{1, alertCloseNotify} // warning level, as RFC 8446 section 6.1 sends it
		if a := c.alert.Load(); a > 0 {
			msg = []byte{2, byte(a - 1)}
		}
		if c.sealRawLocked(recordTypeAlert, msg, false) == nil {
			c.sendLocked()
		}
	}
	c.werr = errRecordClosed
	c.wmu.Unlock()
}

// freeBuffers gives the receive and send buffers back to their pools;
// call it only when no Read or Write can run any more.
func (c *RecordConn) freeBuffers() {
	c.plain = nil
	c.in.free()
	c.wmu.Lock()
	if c.outBuf != nil {
		sendPool.Put(c.outBuf)
		c.out, c.outBuf = nil, nil
	}
	c.wmu.Unlock()
}

// Read implements net.Conn: it returns decrypted application data.
func (c *RecordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return c.read(p, false)
}

// ReadFull fills p with application data, like io.ReadFull. When slack is
// set, it may also write the one byte past len(p) (which must then be
// within cap(p)): that lets a record whose content ends exactly at the end
// of p be opened straight into p, its content-type byte landing past it.
func (c *RecordConn) ReadFull(p []byte, slack bool) error {
	for len(p) > 0 {
		n, err := c.read(p, slack)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		p = p[n:]
	}
	return nil
}

// read returns at least one byte of application data in p, or an error.
// Errors are permanent.
func (c *RecordConn) read(p []byte, slack bool) (int, error) {
	for {
		if len(c.plain) > 0 {
			n := copy(p, c.plain)
			c.plain = c.plain[n:]
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		n, err := c.readRecord(p, slack)
		if err != nil {
			var re *recordError
			if errors.As(err, &re) {
				c.alert.Store(1 + uint32(re.alert))
			}
			c.rerr = err
			return 0, err
		}
		if c.rxSeq >= c.rekeyAt && c.keyUpdate && !c.requested {
			// Ask the peer to update its key (after the record is
			// handled: a KeyUpdate from the peer restarts the count):
			// the request goes with this side's next record.
			c.requested = true
			c.pending.Or(pendingRequest)
			if c.wake != nil {
				c.wake()
			}
		}
		if n > 0 {
			return n, nil
		}
	}
}

// fail returns a fatal record error with its alert.
func fail(alert uint8, format string, args ...any) error {
	return &recordError{alert: alert, msg: fmt.Sprintf(format, args...)}
}

// readRecord reads, opens and handles the next record. Application data
// goes straight into p when it fits (n is then its length) or into
// c.plain; every other record is handled here and n is 0. The checks and
// their order follow RFC 8446 section 5 and crypto/tls, so that a peer
// sees the same behaviour before and after the hand-over.
func (c *RecordConn) readRecord(p []byte, slack bool) (n int, err error) {
	rec, err := c.nextRecord()
	if err != nil {
		return 0, err
	}
	if rec[0] == recordTypeChangeCipherSpec {
		// RFC 8446 section 5: after the peer's Finished it is an
		// unexpected record type (crypto/tls drops it).
		return 0, fail(alertUnexpectedMessage, "change_cipher_spec record after the handshake")
	}
	if c.rxSeq >= recordLimit {
		return 0, fail(alertUnexpectedMessage, "the peer sent more than %d records under one key without a KeyUpdate", uint64(recordLimit))
	}
	innerLen := len(rec) - recordHeaderLen - tagLen
	room := len(p)
	if slack {
		room = cap(p)
	}
	var inner []byte
	direct := innerLen <= room && innerLen-1 <= len(p)
	if direct {
		inner, err = c.rx.open(p[:0], rec, c.rxSeq, &c.rnonce)
	} else {
		inner, err = c.rx.open(rec[recordHeaderLen:recordHeaderLen], rec, c.rxSeq, &c.rnonce)
	}
	if err != nil {
		return 0, fail(alertBadRecordMAC, "a record from the peer does not authenticate (bad record MAC)")
	}
	c.rxSeq++
	c.rxCount.Store(c.rxSeq)
	if rec[0] != recordTypeAppData {
		return 0, fail(alertUnexpectedMessage, "record of outer type %d after the handshake", rec[0])
	}
	if len(inner) > maxRecord+1 {
		return 0, fail(alertRecordOverflow, "inner plaintext of %d bytes exceeds 2^14 + 1", len(inner))
	}
	content, typ, ok := splitInner(inner)
	if !ok {
		return 0, fail(alertUnexpectedMessage, "record with no content type (all zeros or empty)")
	}
	if typ != recordTypeHandshake && len(c.hs) > 0 {
		return 0, fail(alertUnexpectedMessage, "a record of type %d in the middle of a handshake message", typ)
	}
	switch typ {
	case recordTypeAppData:
		if len(content) == 0 {
			return 0, c.uselessRecord()
		}
		c.useless = 0
		if direct {
			return len(content), nil
		}
		c.plain = content
		return 0, nil
	case recordTypeAlert:
		if len(content) != 2 {
			return 0, fail(alertUnexpectedMessage, "malformed alert record of %d bytes", len(content))
		}
		switch content[1] {
		case alertCloseNotify:
			return 0, io.EOF
		case alertUserCanceled:
			// A closure alert that crypto/tls, BoringSSL and others drop
			// (RFC 8446 section 6.1); the close_notify that should follow
			// ends the stream.
			return 0, c.uselessRecord()
		}
		return 0, fmt.Errorf("remote error: %w", tls.AlertError(content[1]))
	case recordTypeHandshake:
		if len(content) == 0 {
			return 0, fail(alertUnexpectedMessage, "empty handshake record")
		}
		return 0, c.handshake(content)
	}
	return 0, fail(alertUnexpectedMessage, "unexpected inner content type %d", typ)
}

// uselessRecord counts a record that carries no application data.
func (c *RecordConn) uselessRecord() error {
	c.useless++
	if c.useless > maxUseless {
		return fail(alertUnexpectedMessage, "more than %d records in a row without application data", maxUseless)
	}
	return nil
}

// handshake takes a handshake record's content: post-handshake messages,
// possibly split over several records. A client accepts (and drops)
// NewSessionTicket, both sides accept KeyUpdate; anything else is fatal.
func (c *RecordConn) handshake(content []byte) error {
	c.hs = append(c.hs, content...)
	for len(c.hs) >= 4 {
		typ := c.hs[0]
		n := int(c.hs[1])<<16 | int(c.hs[2])<<8 | int(c.hs[3])
		if n > maxHandshakeMsg {
			return fail(alertInternalError, "post-handshake message of %d bytes exceeds %d", n, maxHandshakeMsg)
		}
		if len(c.hs) < 4+n {
			return nil // the rest comes in the next record
		}
		msg, rest := c.hs[4:4+n], c.hs[4+n:]
		if typ != typeNewSessionTicket && typ != typeKeyUpdate {
			return fail(alertUnexpectedMessage, "post-handshake message of type %d", typ)
		}
		c.useless++
		if c.useless > maxUseless {
			return fail(alertUnexpectedMessage, "more than %d messages and records in a row without application data", maxUseless)
		}
		switch typ {
		case typeNewSessionTicket:
			if !validTicket(msg) {
				return fail(alertDecodeError, "malformed NewSessionTicket")
			}
			if !c.client {
				return fail(alertUnexpectedMessage, "a client sent a NewSessionTicket")
			}
			// The session cache belongs to crypto/tls, which is gone: the
			// ticket is dropped, as RFC 8446 section 4.6.1 allows.
		case typeKeyUpdate:
			if n != 1 || msg[0] > 1 {
				return fail(alertDecodeError, "malformed KeyUpdate")
			}
			if len(rest) > 0 {
				// RFC 8446 section 5.1: a key change must align with a
				// record boundary.
				return fail(alertUnexpectedMessage, "data after a KeyUpdate in its record")
			}
			next, err := c.rx.next()
			if err != nil {
				return fail(alertInternalError, "key update: %v", err)
			}
			c.rx.wipe()
			c.rx, c.rxSeq, c.requested = next, 0, false
			c.rxCount.Store(0)
			c.keysAt.Store(time.Now().UnixNano())
			// A request of ours not sent yet is moot: the key it was
			// about is gone. (An answer is update_not_requested.)
			c.pending.And(^uint32(pendingRequest))
			if c.stats != nil {
				c.stats.KeyUpdatesReceived.Add(1)
			}
			if msg[0] == 1 { // update_requested: answer before the next data
				c.pending.Or(pendingAnswer)
				if c.wake != nil {
					c.wake()
				}
			}
		}
		c.hs = append(c.hs[:0], rest...)
	}
	if len(c.hs) == 0 {
		c.hs = nil
	}
	return nil
}

// validTicket reports whether msg is a well-formed NewSessionTicket body
// (RFC 8446 section 4.6.1).
func validTicket(msg []byte) bool {
	s := cryptobyte.String(msg)
	var nonce, label, exts cryptobyte.String
	if !s.Skip(8) || // ticket_lifetime, ticket_age_add
		!s.ReadUint8LengthPrefixed(&nonce) ||
		!s.ReadUint16LengthPrefixed(&label) ||
		!s.ReadUint16LengthPrefixed(&exts) ||
		!s.Empty() {
		return false
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return false
		}
		if typ == 42 { // early_data: max_early_data_size
			var max uint32
			if !data.ReadUint32(&max) || !data.Empty() {
				return false
			}
		}
	}
	return true
}

// nextRecord returns the next whole record from the socket, header
// included, as a slice of the receive buffer. The caller must have used
// up c.plain.
func (c *RecordConn) nextRecord() ([]byte, error) {
	need := recordHeaderLen
	for {
		if h := c.in.bytes(); len(h) >= recordHeaderLen {
			if v := binary.BigEndian.Uint16(h[1:3]); v != tls.VersionTLS12 {
				return nil, fail(alertProtocolVersion, "record with version 0x%04x, want 0x0303", v)
			}
			l := int(binary.BigEndian.Uint16(h[3:5]))
			if l > maxCiphertext {
				return nil, fail(alertRecordOverflow, "record of %d bytes exceeds 2^14 + 256", l)
			}
			need = recordHeaderLen + l
			if len(h) >= need {
				c.in.pos += need
				return h[:need], nil
			}
		}
		avail := c.in.end - c.in.pos
		n, err := c.in.fill(c.Conn, need)
		if n == 0 && err != nil {
			if err == io.EOF && avail > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
