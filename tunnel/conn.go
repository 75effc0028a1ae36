package tunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// BatchConn wraps the TCP connection under a tls.Conn. It does three jobs:
//
//   - Gathering: crypto/tls writes every record (at most 16 KiB) with its
//     own Write on the underlying conn, so a 64 KiB batch would cost four
//     or five syscalls; between Hold and Flush those writes are gathered in
//     a buffer instead.
//   - Read-ahead: crypto/tls asks for about one record at a time; reading
//     ahead into a large buffer saves most of those read syscalls. Reads
//     never go past the end of the record crypto/tls is reading, so what
//     it has not asked for stays here.
//   - Hand-over: it follows the record stream in both directions, counts
//     the records (so the per-key limit holds on crypto/tls too) and, on a
//     connection made to capture them (Client, CaptureSecrets), keeps the
//     traffic secrets that crypto/tls logs and every encrypted record of
//     the handshake, so that Records can prove where the stream stands and
//     take it over with this package's own record layer (record.go).
//
// Only the session's writer calls Hold and Flush, under the session's write
// lock; Read is called only by the tls.Conn's reader.
type BatchConn struct {
	net.Conn

	mu      sync.Mutex // guards the write side and the secrets
	holding bool
	buf     []byte  // gathered bytes, in *bufp
	bufp    *[]byte // from sendPool between Hold and Flush
	client  bool    // the TLS client side: decides which secret is whose
	gone    bool    // handed over to a RecordConn
	tx, rx  recordTracker

	// Record counts for Usage, read from other goroutines.
	txRecords, rxRecords atomic.Uint64
	// appRead is how many bytes of application data the tls.Conn's user
	// has read (noteAppRead): what crypto/tls decrypted beyond it is
	// still in its buffer.
	appRead int64

	// Read side, used only by the tls.Conn's reader (under its lock).
	in recvBuf
}

// readBuf is the read-ahead buffer's size.
const readBuf = 256 << 10

var (
	errHandedOver  = errors.New("connection handed over to the session's record layer")
	errRecordLimit = errors.New("tls: the per-key record limit is reached; a new session is needed")
)

// Read implements net.Conn, reading ahead into a buffer but returning no
// more than the rest of the current TLS record.
func (c *BatchConn) Read(p []byte) (int, error) {
	if c.gone {
		return 0, errHandedOver
	}
	if c.in.pos == c.in.end {
		if n, err := c.in.fill(c.Conn, 1); n == 0 {
			return 0, err
		}
	}
	next := c.in.bytes()
	n := copy(p[:min(len(p), c.rx.until(next))], next)
	c.rx.observe(next[:n])
	c.in.pos += n
	c.rxRecords.Store(c.rx.records)
	if c.rx.records > recordLimit {
		return 0, errRecordLimit
	}
	return n, nil
}

// maxGather bounds the gather buffer: above it, Write sends what it has.
const maxGather = 256 << 10

// NewBatchConn wraps c. The returned conn is what tls.Client or tls.Server
// should be given; use Client, or a config from CaptureSecrets on the
// server, to make the hand-over to Records possible.
func NewBatchConn(c net.Conn) *BatchConn {
	return &BatchConn{Conn: c}
}

// Client returns a TLS client on c with a copy of cfg whose key log goes
// to c (and nowhere else). Use tls.Client(c, cfg) for a client whose
// records stay with crypto/tls: its secrets are then never captured.
func (c *BatchConn) Client(cfg *tls.Config) *tls.Conn {
	cfg = cfg.Clone()
	cfg.KeyLogWriter = keyLog{c}
	c.client = true
	return tls.Client(c, cfg)
}

// CaptureSecrets returns a copy of a server config under which every
// connection made on a *BatchConn logs its secrets to that BatchConn (and
// nowhere else). It composes with a GetConfigForClient already set.
func CaptureSecrets(cfg *tls.Config) *tls.Config {
	out := cfg.Clone()
	inner := cfg.GetConfigForClient
	out.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		use := out
		if inner != nil {
			c, err := inner(hi)
			if err != nil {
				return nil, err
			}
			if c != nil {
				use = c
			}
		}
		bc, ok := hi.Conn.(*BatchConn)
		if !ok {
			return use, nil
		}
		c := use.Clone()
		c.GetConfigForClient = nil
		c.KeyLogWriter = keyLog{bc}
		return c, nil
	}
	return out
}

// keyLog receives one connection's key log lines from crypto/tls and keeps
// the handshake and application traffic secrets.
type keyLog struct{ c *BatchConn }

func (k keyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var client, app bool
	switch string(f[0]) {
	case "CLIENT_HANDSHAKE_TRAFFIC_SECRET":
		client = true
	case "SERVER_HANDSHAKE_TRAFFIC_SECRET":
	case "CLIENT_TRAFFIC_SECRET_0":
		client, app = true, true
	case "SERVER_TRAFFIC_SECRET_0":
		app = true
	default:
		return len(line), nil
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return 0, err
	}
	k.c.mu.Lock()
	defer k.c.mu.Unlock()
	t := &k.c.rx
	if client == k.c.client {
		t = &k.c.tx
	}
	t.setSecret(secret, app)
	return len(line), nil
}

// noteAppRead records that the tls.Conn's user read n bytes of
// application data.
func (c *BatchConn) noteAppRead(n int) { c.appRead += int64(n) }

// Counts returns the records seen so far in each direction (all
// encrypted records, the handshake's included: an upper bound of those
// under the current keys while the session is on crypto/tls).
func (c *BatchConn) Counts() (tx, rx uint64) {
	return c.txRecords.Load(), c.rxRecords.Load()
}

// Hold starts gathering writes until Flush.
func (c *BatchConn) Hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// Write implements net.Conn. While holding it copies p into the gather
// buffer (it does not keep p), sending early only when the buffer is full.
// It refuses to send past the per-key record limit.
func (c *BatchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return 0, errHandedOver
	}
	c.tx.observe(p)
	c.txRecords.Store(c.tx.records)
	if c.tx.records > recordLimit {
		return 0, errRecordLimit
	}
	if !c.holding {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > maxGather && len(c.buf) > 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= maxGather {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.bufp = sendPool.Get().(*[]byte)
		c.buf = (*c.bufp)[:0]
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// Flush sends the gathered bytes in one Write and stops gathering.
func (c *BatchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	return c.flushLocked()
}

// flushLocked sends the gathered bytes. Outside Hold the gather buffer
// then goes back to the pool.
func (c *BatchConn) flushLocked() error {
	var err error
	if len(c.buf) > 0 {
		_, err = c.Conn.Write(c.buf)
		c.buf = c.buf[:0]
	}
	if !c.holding && c.bufp != nil {
		sendPool.Put(c.bufp)
		c.buf, c.bufp = nil, nil
	}
	return err
}

// Forget drops the captured secrets and kept records and stops keeping
// them: the session stays on crypto/tls.
func (c *BatchConn) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tx.forget()
	c.rx.forget()
}

// Records hands the connection over to a RecordConn that continues the
// TLS 1.3 stream of the tls.Conn made on c, whose negotiated cipher suite
// is suite. Call it only when the tls.Conn has finished its handshake and
// will not be used again. It switches only when it can prove, from the
// records it kept, where each direction stands:
//
//   - every encrypted record seen in a direction opens, in order, under
//     that direction's handshake key with sequence numbers 0, 1, ... and
//     then under its application key with 0, 1, ...: so the next own
//     record's sequence number is exactly the count, and no (key, nonce)
//     pair crypto/tls used is used again;
//   - after the handshake, only NewSessionTicket messages and application
//     data were sent (a KeyUpdate would have changed keys), and no
//     handshake message is left incomplete;
//   - crypto/tls holds no decrypted application data that its user has
//     not read (noteAppRead), and no record half read.
//
// On error nothing changed and the tls.Conn remains usable; the caller
// should call Forget. own selects tlsvpn's own AES-GCM (newTrafficKeys).
func (c *BatchConn) Records(suite uint16, own bool) (*RecordConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return nil, errHandedOver
	}
	if c.holding || len(c.buf) > 0 {
		return nil, errors.New("record hand-over: writes are being gathered")
	}
	tx, err := c.tx.prove(suite, own)
	if err != nil {
		return nil, fmt.Errorf("record hand-over, sending side: %w", err)
	}
	rx, err := c.rx.prove(suite, own)
	if err != nil {
		return nil, fmt.Errorf("record hand-over, receiving side: %w", err)
	}
	if rx.appBytes != c.appRead {
		return nil, fmt.Errorf("record hand-over: crypto/tls decrypted %d bytes of application data and %d were read; the rest is still in its buffer", rx.appBytes, c.appRead)
	}
	rc := newRecordConn(c.Conn, tx.keys, tx.seq, rx.keys, rx.seq, c.in.bytes())
	rc.client = c.client
	c.gone = true
	c.in.free()
	c.tx.forget()
	c.rx.forget()
	return rc, nil
}

// recordTracker follows one direction's TLS record stream before the
// hand-over: where each record ends, how many encrypted records went by,
// and, once the direction's handshake traffic secret is known, a copy of
// each encrypted record (the rest of the handshake and the first frames),
// so Records can prove where the stream stands.
type recordTracker struct {
	hsSecret []byte // handshake traffic secret; nil until logged
	secret   []byte // application traffic secret; nil until logged
	hdr      [recordHeaderLen]byte
	hdrN     int  // header bytes seen of the current record
	left     int  // body bytes still to come of the current record
	keep     bool // the current record is being kept
	cur      []byte
	kept     [][]byte
	size     int    // bytes in kept
	over     bool   // something cannot be proven: no hand-over on this connection
	records  uint64 // encrypted (outer application_data) records seen
}

// Bounds on what a tracker keeps. A hand-over happens after a handful of
// records (a server's handshake flight is about six); a connection that
// goes past these stays on crypto/tls.
const (
	maxKeptRecords = 32
	maxKeptBytes   = 64 << 10
)

// setSecret records a traffic secret from the key log. A secret logged
// twice with another value leaves nothing to prove.
func (t *recordTracker) setSecret(secret []byte, app bool) {
	p := &t.hsSecret
	if app {
		p = &t.secret
	}
	if *p != nil && !bytes.Equal(*p, secret) {
		t.over = true
	}
	*p = secret
}

// forget drops the secrets and kept records, and keeps none from now on.
func (t *recordTracker) forget() {
	clear(t.hsSecret)
	clear(t.secret)
	t.hsSecret, t.secret = nil, nil
	t.kept, t.cur, t.keep, t.size = nil, nil, false, 0
	t.over = true
}

// until returns how many of the bytes in next belong to the current
// record (header and body), given next starts where the stream is.
func (t *recordTracker) until(next []byte) int {
	if t.left > 0 {
		return t.left
	}
	need := recordHeaderLen - t.hdrN
	if len(next) < need {
		return need
	}
	var h [recordHeaderLen]byte
	copy(h[:], t.hdr[:t.hdrN])
	copy(h[t.hdrN:], next[:need])
	return need + int(binary.BigEndian.Uint16(h[3:5]))
}

// observe follows the stream through p.
func (t *recordTracker) observe(p []byte) {
	for len(p) > 0 {
		if t.left == 0 {
			n := copy(t.hdr[t.hdrN:], p)
			t.hdrN += n
			p = p[n:]
			if t.hdrN < recordHeaderLen {
				return
			}
			t.left = int(binary.BigEndian.Uint16(t.hdr[3:5]))
			t.keep = false
			if t.hdr[0] == recordTypeAppData {
				t.records++
				switch {
				case t.over:
				case t.hsSecret == nil:
					// An encrypted record before the key that should
					// protect it was logged: its place in the sequence
					// cannot be proven.
					t.over = true
				case len(t.kept) == maxKeptRecords || t.size+recordHeaderLen+t.left > maxKeptBytes:
					t.over = true
					t.kept = nil
				default:
					t.keep = true
					t.cur = append(make([]byte, 0, recordHeaderLen+t.left), t.hdr[:]...)
				}
			}
			if t.left == 0 {
				t.finish()
			}
			continue
		}
		n := min(len(p), t.left)
		if t.keep {
			t.cur = append(t.cur, p[:n]...)
		}
		t.left -= n
		p = p[n:]
		if t.left == 0 {
			t.finish()
		}
	}
}

func (t *recordTracker) finish() {
	if t.keep {
		t.kept = append(t.kept, t.cur)
		t.size += len(t.cur)
	}
	t.cur, t.keep, t.hdrN = nil, false, 0
}

// proof is where one direction stands at the hand-over.
type proof struct {
	keys     *trafficKeys // the application keys
	seq      uint64       // records sent under them
	appBytes int64        // application data bytes in those records
}

// prove derives the direction's keys and proves how many records were
// sent under them (see BatchConn.Records). It does not change t.
func (t *recordTracker) prove(suite uint16, own bool) (proof, error) {
	switch {
	case t.over:
		return proof{}, errors.New("not every encrypted record of the connection was kept (too many, or one came before its key was logged)")
	case t.hsSecret == nil || t.secret == nil:
		return proof{}, errors.New("traffic secrets not captured (no key log on this connection)")
	case t.hdrN != 0 || t.left != 0:
		return proof{}, errors.New("in the middle of a record")
	case uint64(len(t.kept)) != t.records:
		// Two counts of the same records, one from the headers, one of
		// what was kept: a record missing at the end would not show in
		// the trial openings below.
		return proof{}, fmt.Errorf("%d encrypted records went by but %d were kept", t.records, len(t.kept))
	}
	hk, err := newTrafficKeys(suite, t.hsSecret, false)
	if err != nil {
		return proof{}, err
	}
	defer hk.wipe()
	ak, err := newTrafficKeys(suite, t.secret, own)
	if err != nil {
		return proof{}, err
	}
	var (
		hsSeq, seq uint64
		app        bool
		hs         []byte // post-handshake messages
		appBytes   int64
		nonce      [12]byte
	)
	for i, r := range t.kept {
		if !app {
			inner, err := hk.open(nil, r, hsSeq, &nonce)
			if err == nil {
				if _, typ, ok := splitInner(inner); !ok || typ != recordTypeHandshake {
					return proof{}, fmt.Errorf("record %d under the handshake key is not a handshake record", i)
				}
				hsSeq++
				continue
			}
			app = true
		}
		inner, err := ak.open(nil, r, seq, &nonce)
		if err != nil {
			return proof{}, fmt.Errorf("record %d opens neither under the handshake key with sequence number %d nor under the application key with %d", i, hsSeq, seq)
		}
		seq++
		content, typ, ok := splitInner(inner)
		if !ok {
			return proof{}, fmt.Errorf("record %d under the application key has no content type", i)
		}
		if typ != recordTypeHandshake && len(hs) > 0 {
			return proof{}, fmt.Errorf("record %d interrupts a handshake message", i)
		}
		switch typ {
		case recordTypeAppData:
			appBytes += int64(len(content))
		case recordTypeHandshake:
			hs = append(hs, content...)
			for len(hs) >= 4 {
				n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
				if len(hs) < 4+n {
					break
				}
				if hs[0] != typeNewSessionTicket {
					return proof{}, fmt.Errorf("handshake message of type %d after the handshake (only NewSessionTicket is taken over)", hs[0])
				}
				hs = hs[4+n:]
			}
		default:
			return proof{}, fmt.Errorf("record %d under the application key has content type %d", i, typ)
		}
	}
	if len(hs) > 0 {
		return proof{}, errors.New("a post-handshake message is incomplete")
	}
	// Without a record under the application key, seq is 0: every record
	// seen opened under the handshake key, so none was sealed under the
	// application key unseen.
	return proof{keys: ak, seq: seq, appBytes: appBytes}, nil
}
