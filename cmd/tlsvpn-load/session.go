package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/tunnel"
)

// timing is how long the steps of one successful connection attempt took.
type timing struct {
	tcp     time.Duration // TCP connect
	tls     time.Duration // TLS handshake, after the TCP connect
	config  time.Duration // HELLO sent to CONFIG received, after the TLS handshake
	total   time.Duration // TCP connect start to CONFIG received
	resumed bool          // the TLS handshake resumed a session ticket
}

// connect runs one attempt: TCP connect from the identity's source
// address, TLS 1.3 with its certificate and ALPN tlsvpn/1, HELLO, CONFIG.
// It is tunnelc's handshake without the TUN device. Errors are wrapped in a
// *stageError naming the step.
func (g *gen) connect(ctx context.Context, id *identity) (*session, timing, error) {
	var tm timing
	start := time.Now()
	deadline := start.Add(g.o.connectTimeout)
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	if id.src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: id.src.AsSlice()}
		d.Control = dialControl
	}
	raw, err := d.DialContext(ctx, "tcp", g.o.server)
	if err != nil {
		return nil, tm, &stageError{"dial", err}
	}
	tm.tcp = time.Since(start)
	raw.SetDeadline(deadline)
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // as tunnelc: control frames must not wait for Nagle
	}
	c := tls.Client(raw, id.tls)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, tm, &stageError{"tls", err}
	}
	tm.tls = time.Since(start) - tm.tcp
	cs := c.ConnectionState()
	tm.resumed = cs.DidResume
	if cs.NegotiatedProtocol != tunnel.ALPN {
		raw.Close()
		return nil, tm, &stageError{"tls", errNoALPN}
	}
	cfg, err := g.protocolHandshake(c)
	if err != nil {
		raw.Close()
		return nil, tm, &stageError{"config", err}
	}
	tm.total = time.Since(start)
	tm.config = tm.total - tm.tcp - tm.tls
	raw.SetDeadline(time.Time{})
	return newSession(g, id, c, raw, cfg), tm, nil
}

// protocolHandshake sends HELLO and reads CONFIG, or the CLOSE that
// refuses the client (a *tunnel.PeerClosedError). The connection's
// deadline bounds it.
func (g *gen) protocolHandshake(c *tls.Conn) (tunnel.Config, error) {
	caps := tunnel.CapKeyUpdate // crypto/tls answers KeyUpdate
	if !g.o.noGSO {
		caps |= tunnel.CapGSO // DATA_GSO frames are read and discarded like DATA
	}
	hello := tunnel.MarshalHello(tunnel.Hello{Caps: caps, Software: "tlsvpn-load"})
	if _, err := c.Write(tunnel.AppendFrame(nil, tunnel.TypeHello, true, hello)); err != nil {
		// A TLS 1.3 server verifies the client certificate after the
		// client's handshake is done: its alert comes with the first read.
		if _, rerr := c.Read(make([]byte, 1)); rerr != nil {
			return tunnel.Config{}, rerr
		}
		return tunnel.Config{}, err
	}
	var hb [tunnel.HeaderLen]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return tunnel.Config{}, err
	}
	h, err := tunnel.ParseHeader(hb[:])
	if err != nil {
		return tunnel.Config{}, &tunnel.ProtocolError{Err: err}
	}
	if h.Type != tunnel.TypeConfig && h.Type != tunnel.TypeClose {
		return tunnel.Config{}, &tunnel.ProtocolError{Err: fmt.Errorf("got frame type 0x%02x, want CONFIG", h.Type)}
	}
	p := make([]byte, h.Len)
	if _, err := io.ReadFull(c, p); err != nil {
		return tunnel.Config{}, err
	}
	if h.Type == tunnel.TypeClose {
		code, reason, err := tunnel.UnmarshalClose(p)
		if err != nil {
			return tunnel.Config{}, &tunnel.ProtocolError{Err: err}
		}
		return tunnel.Config{}, &tunnel.PeerClosedError{Code: code, Reason: reason}
	}
	cfg, err := tunnel.UnmarshalConfig(p)
	if err != nil {
		return tunnel.Config{}, &tunnel.ProtocolError{Err: err}
	}
	return cfg, nil
}

// checkBit marks the payload of a --ping-check PING. Keepalive PINGs carry
// the sender's clock in nanoseconds, which stays below 2^63 until 2262.
const checkBit = 1 << 63

// errSilent ends a session from which nothing arrived for three keepalive
// intervals, the rule both tunneld and tunnelc apply.
var errSilent = errors.New("no frame from the server for 3 keepalive intervals")

// session is one established connection after CONFIG. One goroutine reads
// every frame; PINGs and DATA leave from timers; writes are serialized by
// wmu, so each frame is one write and frames never interleave.
type session struct {
	g       *gen
	id      *identity
	c       *tls.Conn
	raw     net.Conn
	cfg     tunnel.Config
	started time.Time

	wmu sync.Mutex

	closing  atomic.Bool // we sent CLOSE: the server's CLOSE is its answer
	gotClose atomic.Bool // a CLOSE from the server arrived
	stopped  atomic.Bool // the reader ended: timers must not write

	pingT, dataT *time.Timer
	pong         chan uint64 // --ping-check PONG payloads

	closeOnce sync.Once
	closeOut  string // close's outcome; set once

	done   chan struct{} // closed when the reader ends
	endErr error         // why the reader ended; set before done is closed
}

func newSession(g *gen, id *identity, c *tls.Conn, raw net.Conn, cfg tunnel.Config) *session {
	return &session{g: g, id: id, c: c, raw: raw, cfg: cfg, started: time.Now(),
		pong: make(chan uint64, 1), done: make(chan struct{})}
}

// start runs the reader and arms the keepalive and traffic timers.
func (s *session) start() {
	// Timers are made stopped and armed afterwards, so a callback never
	// sees its own field unset.
	if ka := s.cfg.Keepalive; ka > 0 {
		s.pingT = time.AfterFunc(math.MaxInt64, s.sendKeepalive)
		s.pingT.Reset(ka)
	}
	if pps := s.g.o.traffic; pps > 0 && !s.id.churn && s.cfg.ServerAddr.Is4() {
		every := time.Duration(float64(time.Second) / pps)
		frame := tunnel.AppendFrame(nil, tunnel.TypeData, true, udpPacket(s.cfg, s.id.idx, s.g.o.trafficSize))
		s.dataT = time.AfterFunc(math.MaxInt64, func() { s.sendData(frame, every) })
		// A random phase, so sessions that came up together do not send
		// in lockstep.
		s.dataT.Reset(rand.N(every) + time.Millisecond)
	}
	go func() {
		err := s.readLoop()
		s.endErr = err
		s.stopped.Store(true)
		// Whatever ended the session, its descriptor goes now: a lost
		// session's must not wait for the garbage collector, or a restart
		// of the server doubles the generator's descriptors.
		s.c.Close()
		if s.pingT != nil {
			s.pingT.Stop()
		}
		if s.dataT != nil {
			s.dataT.Stop()
		}
		close(s.done)
	}()
}

// write sends one frame. A write that cannot finish in 10 s means the
// server stopped reading; the error then ends the attempt to send.
func (s *session) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.raw.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := s.c.Write(b)
	return err
}

func (s *session) sendKeepalive() {
	if s.stopped.Load() {
		return
	}
	var p [tunnel.PingLen]byte
	binary.BigEndian.PutUint64(p[:], uint64(time.Now().UnixNano()))
	if s.write(tunnel.AppendFrame(nil, tunnel.TypePing, true, p[:])) != nil {
		return // the reader sees the broken connection and ends the session
	}
	s.g.pingsSent.Add(1)
	if !s.stopped.Load() {
		s.pingT.Reset(s.cfg.Keepalive)
	}
}

func (s *session) sendData(frame []byte, every time.Duration) {
	if s.stopped.Load() || s.closing.Load() {
		return
	}
	if s.write(frame) != nil {
		return
	}
	s.g.txData.Add(1)
	s.g.txBytes.Add(uint64(len(frame) - tunnel.HeaderLen))
	if !s.stopped.Load() {
		s.dataT.Reset(every)
	}
}

// readLoop reads frames until the connection ends. It answers PINGs,
// discards DATA, hands --ping-check PONGs to pingCheck, and answers a
// CLOSE from the server with its own, as tunnelc does. It returns nil when
// the server answered our CLOSE.
func (s *session) readLoop() error {
	var hb [tunnel.HeaderLen]byte
	var small [tunnel.PingLen]byte
	dead := 3 * s.cfg.Keepalive
	for {
		if dead > 0 {
			s.raw.SetReadDeadline(time.Now().Add(dead))
		}
		if _, err := io.ReadFull(s.c, hb[:]); err != nil {
			return s.readErr(err)
		}
		h, err := tunnel.ParseHeader(hb[:])
		if err != nil {
			return &tunnel.ProtocolError{Err: err}
		}
		switch h.Type {
		case tunnel.TypeData, tunnel.TypeDataGSO:
			if _, err := io.CopyN(io.Discard, s.c, int64(h.Len)); err != nil {
				return s.readErr(err)
			}
			s.g.rxData.Add(1)
			s.g.rxBytes.Add(uint64(h.Len))
		case tunnel.TypePing:
			if _, err := io.ReadFull(s.c, small[:]); err != nil {
				return s.readErr(err)
			}
			s.g.pingsRecv.Add(1)
			if err := s.write(tunnel.AppendFrame(nil, tunnel.TypePong, true, small[:])); err != nil {
				return s.readErr(err)
			}
		case tunnel.TypePong:
			if _, err := io.ReadFull(s.c, small[:]); err != nil {
				return s.readErr(err)
			}
			v := binary.BigEndian.Uint64(small[:])
			if v&checkBit != 0 {
				select {
				case s.pong <- v:
				default:
				}
			} else {
				s.g.pongsRecv.Add(1)
				s.g.noteRTT(time.Duration(time.Now().UnixNano() - int64(v)))
			}
		case tunnel.TypeClose:
			p := make([]byte, h.Len)
			if _, err := io.ReadFull(s.c, p); err != nil {
				return s.readErr(err)
			}
			s.gotClose.Store(true)
			if s.closing.Load() {
				return nil
			}
			code, reason, err := tunnel.UnmarshalClose(p)
			if err != nil {
				return &tunnel.ProtocolError{Err: err}
			}
			s.write(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, "close acknowledged")))
			return &tunnel.PeerClosedError{Code: code, Reason: reason}
		default:
			return &tunnel.ProtocolError{Err: fmt.Errorf("unexpected frame type 0x%02x during the session", h.Type)}
		}
	}
}

func (s *session) readErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && !s.closing.Load() {
		return errSilent
	}
	return err
}

// Outcomes of closing a session ourselves, for the report.
const (
	closeAcked   = "server answered CLOSE"
	closeEOF     = "connection ended without the server's CLOSE"
	closeNoReply = "no answer within --close-wait"
	closeGone    = "session had already ended"
	closeFailed  = "CLOSE could not be sent"
)

// close sends CLOSE (code 0) and waits up to wait for the server's answer,
// as tunnelc does on exit, then closes the connection. A churn session can
// reach the end of its life while the run closes everything: the second
// caller waits for the first and gets its outcome, so one CLOSE is sent.
func (s *session) close(reason string, wait time.Duration) string {
	s.closeOnce.Do(func() { s.closeOut = s.doClose(reason, wait) })
	return s.closeOut
}

func (s *session) doClose(reason string, wait time.Duration) string {
	select {
	case <-s.done:
		return closeGone
	default:
	}
	s.closing.Store(true)
	out := closeAcked
	if err := s.write(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, reason))); err != nil {
		out = closeFailed
	} else {
		t := time.NewTimer(wait)
		select {
		case <-s.done:
		case <-t.C:
		}
		t.Stop()
	}
	s.c.Close()
	<-s.done
	switch {
	case out == closeFailed:
	case s.gotClose.Load():
		out = closeAcked
	case s.endErr != nil && !errors.Is(s.endErr, net.ErrClosed):
		out = closeEOF
	default:
		out = closeNoReply
	}
	return out
}

// pingCheck sends a PING with a marked payload and waits for its PONG.
func (s *session) pingCheck(timeout time.Duration) (time.Duration, error) {
	var p [tunnel.PingLen]byte
	want := uint64(checkBit) | uint64(s.id.idx)
	binary.BigEndian.PutUint64(p[:], want)
	start := time.Now()
	if err := s.write(tunnel.AppendFrame(nil, tunnel.TypePing, true, p[:])); err != nil {
		return 0, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case v := <-s.pong:
			if v == want {
				return time.Since(start), nil
			}
		case <-s.done:
			if s.endErr != nil {
				return 0, fmt.Errorf("session ended: %w", s.endErr)
			}
			return 0, errors.New("session ended")
		case <-t.C:
			return 0, errNoPong
		}
	}
}

var errNoPong = errors.New("no PONG within --ping-timeout")

// udpPacket builds the --traffic packet: IPv4/UDP from the session's
// tunnel address to the server's, to the discard port 9, with a valid
// header checksum (the server's kernel drops packets without one) and no
// UDP checksum (0 is allowed over IPv4).
func udpPacket(cfg tunnel.Config, idx, size int) []byte {
	p := make([]byte, 28+size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], uint16(idx))
	p[8] = 64 // TTL
	p[9] = 17 // UDP
	src, dst := cfg.Addr.Addr().As4(), cfg.ServerAddr.As4()
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[10:], ipChecksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:], uint16(40000+idx%20000))
	binary.BigEndian.PutUint16(p[22:], 9)
	binary.BigEndian.PutUint16(p[24:], uint16(8+size))
	for i := range size {
		p[28+i] = byte(i)
	}
	return p
}

// ipChecksum is the Internet checksum (RFC 1071) of b.
func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
