package tunnel

import (
	"net"
	"sync"
)

// BatchConn wraps the TCP connection under a tls.Conn so that the records
// of one batch leave in one send. crypto/tls writes every record (at most
// 16 KiB) with its own Write on the underlying conn, so a 64 KiB batch would
// cost four or five syscalls; between Hold and Flush those writes are
// gathered in a buffer instead.
//
// Only the session's writer calls Hold and Flush, under the session's write
// lock; Read and the other net.Conn methods pass straight through.
type BatchConn struct {
	net.Conn

	mu      sync.Mutex // guards the fields below
	holding bool
	buf     []byte // gathered bytes; capacity kept between batches

	// Read side, used only by the tls.Conn's reader (under its lock).
	rbuf       []byte
	rpos, rend int
}

// readBuf is the read-ahead buffer: crypto/tls asks the socket for about
// one record at a time, so without it a 64 KiB super-packet costs four or
// five read system calls instead of a fraction of one.
const readBuf = 256 << 10

// Read implements net.Conn, reading ahead into a buffer.
func (c *BatchConn) Read(p []byte) (int, error) {
	if c.rpos == c.rend {
		if len(p) >= readBuf {
			return c.Conn.Read(p)
		}
		if c.rbuf == nil {
			c.rbuf = make([]byte, readBuf)
		}
		n, err := c.Conn.Read(c.rbuf)
		c.rpos, c.rend = 0, n
		if n == 0 {
			return 0, err
		}
	}
	n := copy(p, c.rbuf[c.rpos:c.rend])
	c.rpos += n
	return n, nil
}

// maxGather bounds the gather buffer: above it, Write sends what it has.
const maxGather = 256 << 10

// NewBatchConn wraps c. The returned conn is what tls.Client or tls.Server
// should be given.
func NewBatchConn(c net.Conn) *BatchConn {
	return &BatchConn{Conn: c}
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
