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
//   - Hand-over: it follows the record stream in both directions and keeps
//     the traffic secrets that crypto/tls logs (see Client and
//     CaptureSecrets), so that Records can take the connection over with
//     this package's own record layer after the handshake (record.go).
//
// Only the session's writer calls Hold and Flush, under the session's write
// lock; Read is called only by the tls.Conn's reader.
type BatchConn struct {
	net.Conn

	mu      sync.Mutex // guards the write side and the secrets
	holding bool
	buf     []byte // gathered bytes; capacity kept between batches
	client  bool   // the TLS client side: decides which secret is whose
	gone    bool   // handed over to a RecordConn
	tx, rx  recordTracker

	// Read side, used only by the tls.Conn's reader (under its lock).
	rbuf       []byte
	rpos, rend int
}

// readBuf is the read-ahead buffer's size.
const readBuf = 256 << 10

var errHandedOver = errors.New("connection handed over to the session's record layer")

// Read implements net.Conn, reading ahead into a buffer but returning no
// more than the rest of the current TLS record.
func (c *BatchConn) Read(p []byte) (int, error) {
	if c.gone {
		return 0, errHandedOver
	}
	if c.rpos == c.rend {
		if c.rbuf == nil {
			c.rbuf = make([]byte, readBuf)
		}
		n, err := c.Conn.Read(c.rbuf)
		c.rpos, c.rend = 0, n
		if n == 0 {
			return 0, err
		}
	}
	next := c.rbuf[c.rpos:c.rend]
	n := copy(p[:min(len(p), c.rx.until(next))], next)
	c.rx.observe(next[:n])
	c.rpos += n
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
// to c (and nowhere else).
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
// the application traffic secrets.
type keyLog struct{ c *BatchConn }

func (k keyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var client bool
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		client = true
	case "SERVER_TRAFFIC_SECRET_0":
	default:
		return len(line), nil
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return 0, err
	}
	k.c.mu.Lock()
	defer k.c.mu.Unlock()
	if client == k.c.client {
		k.c.tx.secret = secret
	} else {
		k.c.rx.secret = secret
	}
	return len(line), nil
}

// Hold starts gathering writes until Flush.
func (c *BatchConn) Hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// Write implements net.Conn. While holding it copies p into the gather
// buffer (it does not keep p), sending early only when the buffer is full.
func (c *BatchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return 0, errHandedOver
	}
	c.tx.observe(p)
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
		c.buf = make([]byte, 0, maxGather)
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

func (c *BatchConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// Records hands the connection over to a RecordConn that continues the
// TLS 1.3 stream of the tls.Conn made on c, whose negotiated cipher suite
// is suite. Call it only when the tls.Conn has finished its handshake, has
// nothing buffered (every record it read was read to the end), and will
// not be used again. On error nothing changed and the tls.Conn remains
// usable.
func (c *BatchConn) Records(suite uint16) (*RecordConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return nil, errHandedOver
	}
	if c.holding || len(c.buf) > 0 {
		return nil, errors.New("record hand-over: writes are being gathered")
	}
	tx, txSeq, err := c.tx.keys(suite)
	if err != nil {
		return nil, fmt.Errorf("record hand-over, sending side: %w", err)
	}
	rx, rxSeq, err := c.rx.keys(suite)
	if err != nil {
		return nil, fmt.Errorf("record hand-over, receiving side: %w", err)
	}
	rc := newRecordConn(c.Conn, tx, txSeq, rx, rxSeq, c.rbuf[c.rpos:c.rend])
	c.gone = true
	c.rbuf, c.buf = nil, nil
	c.tx, c.rx = recordTracker{}, recordTracker{}
	return rc, nil
}

// recordTracker follows one direction's TLS record stream before the
// hand-over: where each record ends, and, once the direction's traffic
// secret is known, a copy of each application_data record (a handful:
// the rest of the handshake and the first frames), so Records can find
// which of them is the first under that secret.
type recordTracker struct {
	secret []byte // application traffic secret; nil until logged
	hdr    [recordHeaderLen]byte
	hdrN   int  // header bytes seen of the current record
	left   int  // body bytes still to come of the current record
	keep   bool // the current record is being kept
	cur    []byte
	kept   [][]byte
	size   int  // bytes in kept
	over   bool // too much to keep: no hand-over on this connection
}

// Bounds on what a tracker keeps. A hand-over happens after a few small
// records; a connection that goes past these stays on crypto/tls.
const (
	maxKeptRecords = 16
	maxKeptBytes   = 64 << 10
)

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
			t.keep = t.hdr[0] == recordTypeAppData && t.secret != nil && !t.over
			if t.keep && (len(t.kept) == maxKeptRecords || t.size+recordHeaderLen+t.left > maxKeptBytes) {
				t.keep, t.over = false, true
				t.kept = nil
			}
			if t.keep {
				t.cur = append(make([]byte, 0, recordHeaderLen+t.left), t.hdr[:]...)
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

// keys derives the direction's keys and counts the records already sent
// under them: the kept records from the first one that opens with
// sequence number 0, each of the others having to open with its own.
func (t *recordTracker) keys(suite uint16) (*trafficKeys, uint64, error) {
	switch {
	case t.secret == nil:
		return nil, 0, errors.New("traffic secret not captured (no key log on this connection)")
	case t.over:
		return nil, 0, errors.New("too many records before the hand-over")
	case t.hdrN != 0 || t.left != 0:
		return nil, 0, errors.New("in the middle of a record")
	}
	k, err := newTrafficKeys(suite, t.secret)
	if err != nil {
		return nil, 0, err
	}
	first := -1
	for i, r := range t.kept {
		if _, err := k.open(nil, r, 0, new([12]byte)); err == nil {
			first = i
			break
		}
	}
	if first < 0 {
		// No record was sent under the secret, unless one was missed:
		// then a later one opens with a later sequence number.
		for _, r := range t.kept {
			for seq := range uint64(maxKeptRecords) {
				if _, err := k.open(nil, r, seq+1, new([12]byte)); err == nil {
					return nil, 0, fmt.Errorf("a record under the traffic secret opens with sequence number %d, but none with 0", seq+1)
				}
			}
		}
		return k, 0, nil
	}
	seq := uint64(1)
	for _, r := range t.kept[first+1:] {
		if _, err := k.open(nil, r, seq, new([12]byte)); err != nil {
			return nil, 0, fmt.Errorf("record %d under the traffic secret does not open: %w", seq, err)
		}
		seq++
	}
	return k, seq, nil
}
