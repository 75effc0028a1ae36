package tunnel

import (
	"crypto/cipher"
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
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"tlsvpn/tunnel/internal/aesgcm"
)

// The data phase of a session runs on RecordConn, this package's own TLS
// 1.3 record layer (RFC 8446 section 5), instead of on the tls.Conn that
// made the handshake. The bytes on the wire do not change: they are the
// same application_data records under the same traffic keys and sequence
// numbers, and the peer's crypto/tls (or RecordConn) reads them as it
// would read its own. What changes is where the bytes are: crypto/tls
// copies every record's plaintext into a buffer of its own before sealing
// it, and every received record from the socket into another buffer before
// opening it, then out again. RecordConn seals straight from the packet
// buffer into the send buffer and opens straight from the receive buffer
// into the packet buffer, so a 64 KiB super-packet is not copied in user
// space at all.
//
// The keys come from crypto/tls itself: the connection's KeyLogWriter
// hands its traffic secrets to the BatchConn under it (they never leave
// the process), and the BatchConn follows the record stream in both
// directions during the handshake to learn how many records each side has
// sent under those secrets. BatchConn.Records checks that count by opening
// the records it kept, and refuses to switch if anything does not add up;
// the session then stays on crypto/tls.

// TLS record layer constants (RFC 8446 section 5).
const (
	recordHeaderLen     = 5
	recordTypeAlert     = 21
	recordTypeHandshake = 22
	recordTypeAppData   = 23
	tagLen              = 16
	// maxCiphertext is the largest TLSCiphertext.length a receiver must
	// accept: 2^14 + 256.
	maxCiphertext = maxRecord + 256
	// maxRecordWire is a whole record on the wire, header included.
	maxRecordWire    = recordHeaderLen + maxCiphertext
	alertCloseNotify = 0
)

var (
	errBadRecordMAC = errors.New("tls: bad record MAC: a record from the peer does not authenticate")
	errRecordClosed = errors.New("tls record layer: connection closed")
)

// trafficKeys are one direction's AEAD and IV, derived from a traffic
// secret (RFC 8446 section 7.3).
type trafficKeys struct {
	aead cipher.AEAD
	iv   [12]byte
}

// newTrafficKeys derives the key and IV for suite from a traffic secret.
func newTrafficKeys(suite uint16, secret []byte) (*trafficKeys, error) {
	var k trafficKeys
	var key, iv []byte
	var err error
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256:
		n := 16
		if suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
			n = 32
		}
		key, iv, err = expandKeyIV(sha256.New, secret, n)
	case tls.TLS_AES_256_GCM_SHA384:
		key, iv, err = expandKeyIV(sha512.New384, secret, 32)
	default:
		return nil, fmt.Errorf("cipher suite %s is not supported by the record layer", tls.CipherSuiteName(suite))
	}
	if err != nil {
		return nil, err
	}
	if suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		k.aead, err = chacha20poly1305.New(key)
	} else {
		k.aead, err = aesgcm.New(key)
	}
	if err != nil {
		return nil, err
	}
	copy(k.iv[:], iv)
	return &k, nil
}

func expandKeyIV[H hash.Hash](h func() H, secret []byte, keyLen int) (key, iv []byte, err error) {
	if len(secret) != h().Size() {
		return nil, nil, fmt.Errorf("traffic secret is %d bytes, want %d", len(secret), h().Size())
	}
	if key, err = hkdf.Expand(h, secret, hkdfLabel("key", keyLen), keyLen); err != nil {
		return nil, nil, err
	}
	iv, err = hkdf.Expand(h, secret, hkdfLabel("iv", 12), 12)
	return key, iv, err
}

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
		return nil, errBadRecordMAC
	}
	return out, nil
}

// splitInner removes the zero padding from an inner plaintext and returns
// its content and content type.
func splitInner(inner []byte) (content []byte, typ byte, err error) {
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return nil, 0, errors.New("tls: record without a content type")
	}
	return inner[:i], inner[i], nil
}

// RecordConn is the TLS 1.3 record layer of a session's data phase (see
// the comment at the top of this file). Create it with BatchConn.Records.
//
// Write, Hold and Flush may be called from one goroutine while Read and
// ReadFull are called from another. Writes between Hold and Flush are
// gathered into one send, as with BatchConn.
type RecordConn struct {
	net.Conn // the TCP connection: addresses and deadlines pass through

	wmu     sync.Mutex // guards the write side
	holding bool
	out     []byte // sealed records not yet sent
	tx      *trafficKeys
	txSeq   uint64
	wnonce  [12]byte
	werr    error

	// Read side, used by one reader at a time.
	rx     *trafficKeys
	rxSeq  uint64
	rnonce [12]byte
	rbuf   []byte
	rpos   int
	rend   int
	plain  []byte // decrypted content not yet returned (in rbuf)
	rerr   error
}

// outCap is the send buffer's capacity: a full gather plus one record.
const outCap = maxGather + maxRecordWire

// newRecordConn returns a RecordConn on c whose next records are sent and
// expected with sequence numbers txSeq and rxSeq, and whose receive
// buffer starts with pending (bytes already read from c).
func newRecordConn(c net.Conn, tx *trafficKeys, txSeq uint64, rx *trafficKeys, rxSeq uint64, pending []byte) *RecordConn {
	rc := &RecordConn{
		Conn:  c,
		out:   make([]byte, 0, outCap),
		tx:    tx,
		txSeq: txSeq,
		rx:    rx,
		rxSeq: rxSeq,
		rbuf:  make([]byte, readBuf),
	}
	rc.rend = copy(rc.rbuf, pending)
	return rc
}

// TxSeq returns the number of records sent so far under the current key
// (the next record's sequence number).
func (c *RecordConn) TxSeq() uint64 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.txSeq
}

// Hold starts gathering records until Flush.
func (c *RecordConn) Hold() {
	c.wmu.Lock()
	c.holding = true
	c.wmu.Unlock()
}

// Flush sends the gathered records in one write and stops gathering.
func (c *RecordConn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.holding = false
	return c.sendLocked()
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
		if len(c.out)+recordHeaderLen+n+1+tagLen > cap(c.out) {
			if err := c.sendLocked(); err != nil {
				return total - len(p), err
			}
		}
		c.sealLocked(recordTypeAppData, p[:n], owned)
		p = p[n:]
	}
	if !c.holding {
		if err := c.sendLocked(); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// sealLocked appends one record carrying content of type typ to c.out.
// With owned, the content type byte is put after content in its own
// buffer (saved and restored) so the AEAD reads the plaintext where it is.
func (c *RecordConn) sealLocked(typ byte, content []byte, owned bool) {
	n := len(content)
	l := n + 1 + tagLen
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
		return
	}
	c.out = append(c.out, content...)
	c.out = append(c.out, typ)
	c.out = c.tx.aead.Seal(c.out[:start], c.wnonce[:], c.out[start:], hdr)
}

func (c *RecordConn) sendLocked() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		c.werr = err
	}
	return err
}

// Close sends a close_notify alert (unless a write is in progress: then
// closing the socket is what ends it) and closes the connection.
func (c *RecordConn) Close() error {
	if c.wmu.TryLock() {
		if c.werr == nil {
			c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.sealLocked(recordTypeAlert, []byte{1, alertCloseNotify}, false)
			c.sendLocked()
		}
		c.werr = errRecordClosed
		c.wmu.Unlock()
	}
	return c.Conn.Close()
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
		rec, err := c.nextRecord()
		if err != nil {
			c.rerr = err
			return 0, err
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
			c.rerr = err
			return 0, err
		}
		c.rxSeq++
		content, typ, err := splitInner(inner)
		if err == nil {
			err = c.handleType(typ, content)
		}
		if err != nil {
			c.rerr = err
			return 0, err
		}
		if direct {
			if len(content) > 0 {
				return len(content), nil
			}
			continue
		}
		c.plain = content
	}
}

// handleType checks a record's content type: application data passes,
// close_notify ends the stream, anything else is an error.
func (c *RecordConn) handleType(typ byte, content []byte) error {
	switch typ {
	case recordTypeAppData:
		return nil
	case recordTypeAlert:
		if len(content) != 2 {
			return errors.New("tls: malformed alert record")
		}
		if content[1] == alertCloseNotify {
			return io.EOF
		}
		return fmt.Errorf("remote error: %w", tls.AlertError(content[1]))
	case recordTypeHandshake:
		return fmt.Errorf("tls: peer sent a post-handshake message (type %d) during the data phase; this record layer does not handle it", firstByte(content))
	default:
		return fmt.Errorf("tls: unexpected inner content type %d", typ)
	}
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// nextRecord returns the next whole record from the socket, header
// included, as a slice of rbuf. The caller must have used up c.plain.
func (c *RecordConn) nextRecord() ([]byte, error) {
	for {
		avail := c.rend - c.rpos
		if avail == 0 {
			c.rpos, c.rend = 0, 0
		}
		if avail >= recordHeaderLen {
			h := c.rbuf[c.rpos:]
			if h[0] != recordTypeAppData {
				return nil, fmt.Errorf("tls: unexpected record type %d after the handshake", h[0])
			}
			l := int(binary.BigEndian.Uint16(h[3:5]))
			if l > maxCiphertext {
				return nil, fmt.Errorf("tls: record of %d bytes exceeds the limit of %d", l, maxCiphertext)
			}
			if l < tagLen+1 {
				return nil, fmt.Errorf("tls: record of %d bytes is too short", l)
			}
			if avail >= recordHeaderLen+l {
				rec := c.rbuf[c.rpos : c.rpos+recordHeaderLen+l]
				c.rpos += recordHeaderLen + l
				return rec, nil
			}
		}
		if len(c.rbuf)-c.rend < maxRecordWire {
			c.rend = copy(c.rbuf, c.rbuf[c.rpos:c.rend])
			c.rpos = 0
		}
		n, err := c.Conn.Read(c.rbuf[c.rend:])
		c.rend += n
		if n == 0 && err != nil {
			if err == io.EOF && avail > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
