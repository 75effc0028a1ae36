package certstest

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeBuffer is how many writes each direction of a pipe holds before Write blocks: plenty
// for a TLS handshake and a few records.
const pipeBuffer = 64

// pipe returns the two ends of an in-memory, buffered, full-duplex connection. Unlike
// net.Pipe, a Write returns once the data is queued, so both ends may write at once: a TLS 1.3
// server sends its NewSessionTicket while the client sends its Finished (always on a resumed
// handshake), which deadlocks over net.Pipe. It blocks only on channels, so inside a
// testing/synctest bubble a stuck exchange is durably blocked and deadlines fire at once.
func pipe() (net.Conn, net.Conn) {
	ab, ba := make(chan []byte, pipeBuffer), make(chan []byte, pipeBuffer)
	aClosed, bClosed := make(chan struct{}), make(chan struct{})
	a := &pipeConn{in: ba, out: ab, closed: aClosed, peerClosed: bClosed}
	b := &pipeConn{in: ab, out: ba, closed: bClosed, peerClosed: aClosed}
	return a, b
}

// Pipe returns the two ends of an in-memory, buffered, full-duplex connection (see pipe):
// for TLS over an in-memory connection, in a testing/synctest bubble or outside one.
func Pipe() (net.Conn, net.Conn) { return pipe() }

// pipeConn is one end of [pipe]. Read is used by one goroutine at a time, as is Write.
type pipeConn struct {
	in         <-chan []byte
	out        chan<- []byte
	closed     chan struct{} // closed by Close
	peerClosed <-chan struct{}
	closeOnce  sync.Once

	pending []byte // rest of the last chunk received; owned by the reader

	mu                          sync.Mutex
	readDeadline, writeDeadline time.Time // guarded by mu
}

func (c *pipeConn) Read(b []byte) (int, error) {
	timeout, stop, expired := c.timer(&c.readDeadline)
	defer stop()
	if expired {
		return 0, os.ErrDeadlineExceeded
	}
	if len(c.pending) == 0 {
		select {
		case c.pending = <-c.in:
		case <-c.closed:
			return 0, net.ErrClosed
		case <-c.peerClosed:
			select { // deliver what the peer wrote before closing
			case c.pending = <-c.in:
			default:
				return 0, io.EOF
			}
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *pipeConn) Write(b []byte) (int, error) {
	timeout, stop, expired := c.timer(&c.writeDeadline)
	defer stop()
	if expired {
		return 0, os.ErrDeadlineExceeded
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.peerClosed:
		return 0, io.ErrClosedPipe
	default:
	}
	select {
	case c.out <- append([]byte(nil), b...):
		return len(b), nil
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.peerClosed:
		return 0, io.ErrClosedPipe
	case <-timeout:
		return 0, os.ErrDeadlineExceeded
	}
}

// timer returns a channel that fires at *deadline (nil if none is set) and its stop func,
// or expired if the deadline has passed: then the operation fails at once, as on net.Pipe,
// even if it could proceed.
func (c *pipeConn) timer(deadline *time.Time) (timeout <-chan time.Time, stop func() bool, expired bool) {
	c.mu.Lock()
	d := *deadline
	c.mu.Unlock()
	if d.IsZero() {
		return nil, func() bool { return false }, false
	}
	left := time.Until(d)
	if left <= 0 {
		return nil, func() bool { return false }, true
	}
	t := time.NewTimer(left)
	return t.C, t.Stop, false
}

func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline, c.writeDeadline = t, t
	return nil
}

func (c *pipeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return nil
}

func (c *pipeConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDeadline = t
	return nil
}

func (c *pipeConn) LocalAddr() net.Addr  { return pipeAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
