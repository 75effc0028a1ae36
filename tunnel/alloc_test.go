package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"tlsvpn/tun"
)

// discardDevice is a tun.Device that drops writes and serves reads from a
// fixed set of packets, without allocating.
type discardDevice struct {
	pkts    [][]byte
	written int
}

func (d *discardDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for ; n < len(bufs) && n < len(d.pkts); n++ {
		sizes[n] = copy(bufs[n][offset:], d.pkts[n])
	}
	return n, nil
}
func (d *discardDevice) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		d.written += len(b) - offset
	}
	return d.written, nil
}
func (d *discardDevice) BatchSize() int        { return 64 }
func (d *discardDevice) MTU() (int, error)     { return 1500, nil }
func (d *discardDevice) Name() (string, error) { return "discard", nil }
func (d *discardDevice) Close() error          { return nil }

// loopConn serves its data over and over to Read and discards writes.
type loopConn struct {
	net.Conn // nil: other methods are not used
	data     []byte
	off      int
	written  int
}

func (c *loopConn) Read(b []byte) (int, error) {
	n := copy(b, c.data[c.off:])
	c.off = (c.off + n) % len(c.data)
	return n, nil
}
func (c *loopConn) Write(b []byte) (int, error)      { c.written += len(b); return len(b), nil }
func (c *loopConn) SetWriteDeadline(time.Time) error { return nil }
func (c *loopConn) Close() error                     { return nil }

func testPacket(src, dst netip.Addr, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	p[2], p[3] = byte(n>>8), byte(n)
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func skipIfRace(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items); run without -race")
	}
}

var (
	allocClient = netip.MustParseAddr("100.64.0.2")
	allocServer = netip.MustParseAddr("100.64.0.1")
)

// connTransport carries frames in the clear on a net.Conn, one write per
// call: the session's own cost, with no record layer under it.
type connTransport struct{ net.Conn }

func (c connTransport) StartData(DataOptions) {}
func (c connTransport) ReadFull(p []byte, _ bool) error {
	_, err := io.ReadFull(c.Conn, p)
	return err
}
func (c connTransport) WriteOwned(p []byte, _ int) error {
	_, err := c.Conn.Write(p)
	return err
}
func (c connTransport) Hold()                        {}
func (c connTransport) Flush() error                 { return nil }
func (c connTransport) TrySend([]byte) (bool, error) { return false, nil }
func (c connTransport) CloseDrain(time.Duration)     { c.Close() }
func (c connTransport) Release()                     {}
func (c connTransport) Info() TransportInfo          { return TransportInfo{} }
func (c connTransport) Usage() KeyUsage              { return KeyUsage{} }

// newAllocSession returns a session over conn (a connTransport), ready
// for its reader's and writer's methods to be called directly.
func newAllocSession(t testing.TB, conn net.Conn, dev tun.Device) *Session {
	s := NewSession(SessionConfig{
		Transport: connTransport{conn},
		Dev:       dev,
		Allowed:   []netip.Prefix{netip.PrefixFrom(allocClient, 32)},
		QueueLen:  256,
	})
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	t.Cleanup(func() { s.cancel(nil) })
	return s
}

// TestSendPathAllocs pins zero allocations per packet for the send path:
// TUN batch -> dispatch by destination -> framing -> one gathered write.
func TestSendPathAllocs(t *testing.T) {
	skipIfRace(t)
	dev := &discardDevice{}
	for i := range 64 {
		size := 100 + i*20
		if i%16 == 0 {
			size = 9000 // framed in place
		}
		dev.pkts = append(dev.pkts, testPacket(allocServer, allocClient, size))
	}
	conn := &loopConn{}
	s := newAllocSession(t, conn, dev)
	m := NewMux(dev, MuxConfig{})
	m.Add(s, allocClient)
	step := func() {
		n, raw, _ := m.read()
		m.dispatch(n, raw)
		for len(s.queue) > 0 {
			if err := s.writeChunks(<-s.queue); err != nil {
				t.Fatal(err)
			}
		}
	}
	step() // warm the chunk pool
	if allocs := testing.AllocsPerRun(200, step); allocs != 0 {
		t.Fatalf("send path: %v allocs per batch of 64 packets, want 0", allocs)
	}
	if s.stats.DropQueueFull.Load() != 0 || conn.written == 0 {
		t.Fatalf("send path dropped %d packets, wrote %d bytes", s.stats.DropQueueFull.Load(), conn.written)
	}
}

// TestReceivePathAllocs pins zero allocations per packet for the receive
// path: frame header -> payload into its own buffer -> checks -> one TUN
// write per batch.
func TestReceivePathAllocs(t *testing.T) {
	skipIfRace(t)
	var stream []byte
	for i := range 64 {
		stream = AppendFrame(stream, TypeData, i == 63, testPacket(allocClient, allocServer, 60+i*20))
	}
	dev := &discardDevice{}
	s := newAllocSession(t, &loopConn{data: stream}, dev)
	checkReceiveAllocs(t, "receive path", s, 64, 200)
}

// checkReceiveAllocs reads batches of frames from s (a stream that
// repeats), once to warm up and then runs times under
// testing.AllocsPerRun. No batch may allocate, and every frame must have
// been delivered as a packet.
func checkReceiveAllocs(t *testing.T, path string, s *Session, frames, runs int) {
	t.Helper()
	step := func() {
		for range frames {
			if err := s.readFrame(); err != nil {
				t.Fatal(err)
			}
		}
	}
	step()
	if allocs := testing.AllocsPerRun(runs, step); allocs != 0 {
		t.Fatalf("%s: %v allocs per batch of %d frames, want 0", path, allocs, frames)
	}
	// AllocsPerRun runs step once more than runs, to warm up.
	if got, want := s.stats.RxPackets.Load(), uint64(frames*(runs+2)); got != want {
		t.Fatalf("RxPackets = %d, want %d", got, want)
	}
}

// BenchmarkSendPath measures dispatch + framing + write for batches of
// 64 packets of 1400 bytes.
func BenchmarkSendPath(b *testing.B) {
	dev := &discardDevice{}
	for range 64 {
		dev.pkts = append(dev.pkts, testPacket(allocServer, allocClient, 1400))
	}
	s := newAllocSession(b, &loopConn{}, dev)
	m := NewMux(dev, MuxConfig{})
	m.Add(s, allocClient)
	b.ReportAllocs()
	b.SetBytes(64 * 1400)
	for b.Loop() {
		n, raw, _ := m.read()
		m.dispatch(n, raw)
		for len(s.queue) > 0 {
			s.writeChunks(<-s.queue)
		}
	}
}

// BenchmarkReceivePath measures frame parsing, checks and batching.
func BenchmarkReceivePath(b *testing.B) {
	var stream []byte
	for i := range 64 {
		stream = AppendFrame(stream, TypeData, i == 63, testPacket(allocClient, allocServer, 1400))
	}
	s := newAllocSession(b, &loopConn{data: stream}, &discardDevice{})
	b.ReportAllocs()
	b.SetBytes(64 * 1400)
	for b.Loop() {
		for range 64 {
			s.readFrame()
		}
	}
}

// gsoDevice is a discardDevice whose ReadGSO serves its packets with
// virtio-net headers describing TCPv4 super-packets.
type gsoDevice struct{ discardDevice }

func (d *gsoDevice) SupportsGSO() bool { return true }
func (d *gsoDevice) ReadGSO(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, _ := d.Read(bufs, sizes, offset)
	for i := range n {
		h := tun.VirtioHdr{Flags: tun.VirtioFlagNeedsCsum, CsumStart: 20, CsumOffset: 16}
		if sizes[i] > 1500 {
			h.GSOType, h.GSOSize, h.HdrLen = tun.VirtioGSOTCPv4, 1448, 52
		}
		h.Encode(bufs[i][offset-tun.VirtioNetHdrLen:])
	}
	return n, nil
}
func (d *gsoDevice) WriteGSO(bufs [][]byte, offset int) (int, error) { return d.Write(bufs, offset) }

// TestGSOSendPathAllocs pins zero allocations for the super-packet path:
// ReadGSO batch -> DATA_GSO frames (in place or coalesced) -> write, on
// crypto/tls's path (a plain conn here) and on the record layer, where
// in-place chunks are sealed without a copy, their headers in records of
// their own, all gathered into one send.
func TestGSOSendPathAllocs(t *testing.T) {
	skipIfRace(t)
	for _, records := range []bool{false, true} {
		name := "conn"
		if records {
			name = "record layer"
		}
		t.Run(name, func(t *testing.T) {
			dev := &gsoDevice{}
			for i := range maxGSOBatch {
				size := 60
				if i%2 == 0 {
					size = 60000
				}
				p := testPacket(allocServer, allocClient, size)
				p[9] = 6
				dev.pkts = append(dev.pkts, p)
			}
			sink := &bufConn{buf: make([]byte, 0, 4<<20)}
			s := newAllocSession(t, sink, dev)
			if records {
				tx, _ := recordConns(t, sink, nil)
				onRecords(s, tx)
			}
			s.peerGSO = true
			m := NewMux(dev, MuxConfig{})
			m.Add(s, allocClient)
			m.SetGSO(true)
			step := func() {
				sink.buf = sink.buf[:0]
				n, raw, _ := m.read()
				m.dispatch(n, raw)
				for len(s.queue) > 0 {
					if err := s.writeChunks(<-s.queue); err != nil {
						t.Fatal(err)
					}
				}
			}
			step()
			if allocs := testing.AllocsPerRun(100, step); allocs != 0 {
				t.Fatalf("GSO send path: %v allocs per batch, want 0", allocs)
			}
			if s.stats.DropNoGSO.Load() != 0 || s.stats.TxPackets.Load() != 102*maxGSOBatch || len(sink.buf) == 0 {
				t.Fatalf("GSO send path: sent %d packets, dropped %d, %d bytes in the last batch",
					s.stats.TxPackets.Load(), s.stats.DropNoGSO.Load(), len(sink.buf))
			}
		})
	}
}

// gsoTestPacket returns an IPv4/TCP packet of n bytes from the client to
// the server and DATA_GSO metadata that segments it at 1448 bytes.
func gsoTestPacket(n int) ([]byte, [GSOMetaLen]byte) {
	p := testPacket(allocClient, allocServer, n)
	p[9] = 6          // TCP
	p[20+12] = 5 << 4 // data offset: a 20-byte TCP header
	var meta [GSOMetaLen]byte
	PutGSO(meta[:], GSO{Type: tun.VirtioGSOTCPv4, Flags: tun.VirtioFlagNeedsCsum, Size: 1448, CsumStart: 20, CsumOffset: 16})
	return p, meta
}

// TestGSOReceivePathAllocs pins zero allocations for receiving DATA_GSO
// frames: metadata check, virtio header rebuilt in place, one batched
// WriteGSO.
func TestGSOReceivePathAllocs(t *testing.T) {
	skipIfRace(t)
	var stream []byte
	for i := range 16 {
		p, meta := gsoTestPacket(20000)
		stream = AppendFrame(stream, TypeDataGSO, i == 15, append(meta[:], p...))
	}
	dev := &gsoDevice{}
	s := newAllocSession(t, &loopConn{data: stream}, dev)
	s.gdev = dev
	checkReceiveAllocs(t, "GSO receive path", s, 16, 100)
}

// recordConns returns a sending and a receiving RecordConn that share
// keys, on the given conns.
func recordConns(t testing.TB, txConn, rxConn net.Conn) (tx, rx *RecordConn) {
	t.Helper()
	k, err := newTrafficKeys(0x1301, make([]byte, 32), false) // TLS_AES_128_GCM_SHA256
	if err != nil {
		t.Fatal(err)
	}
	return newRecordConn(txConn, k, 0, k, 0, nil), newRecordConn(rxConn, k, 0, k, 0, nil)
}

// onRecords moves a session made by newAllocSession to the record layer
// rc, as the TLS transport's hand-over (StartData) does.
func onRecords(s *Session, rc *RecordConn) {
	t := &tlsTransport{conn: rc, rc: rc}
	t.rcLoaded.Store(rc)
	s.t = t
}

// bufConn collects writes in a buffer whose capacity is kept.
type bufConn struct {
	net.Conn
	buf []byte
}

func (c *bufConn) Write(b []byte) (int, error) { c.buf = append(c.buf, b...); return len(b), nil }

// sealedLoop serves an endless record stream: data over and over, sealed
// by a RecordConn as it is read, so sequence numbers keep counting.
type sealedLoop struct {
	net.Conn
	w       *RecordConn
	sink    *bufConn
	data    []byte
	pending []byte
}

func (c *sealedLoop) Read(b []byte) (int, error) {
	if len(c.pending) == 0 {
		c.sink.buf = c.sink.buf[:0]
		if _, err := c.w.Write(c.data); err != nil {
			return 0, err
		}
		c.pending = c.sink.buf
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// TestRecordReceivePathAllocs pins zero allocations for receiving
// super-packets on the record layer, whose records open straight into the
// packet buffers.
func TestRecordReceivePathAllocs(t *testing.T) {
	skipIfRace(t)
	src := &sealedLoop{sink: &bufConn{buf: make([]byte, 0, 4<<20)}}
	for i := range 16 {
		p, meta := gsoTestPacket(65535 - i*1000)
		// As writeChunk sends them: header and metadata in a record of
		// their own, then the packet.
		var hdr [HeaderLen]byte
		PutHeader(hdr[:], TypeDataGSO, i == 15, GSOMetaLen+len(p))
		src.data = append(src.data, append(hdr[:], meta[:]...)...)
		src.data = append(src.data, p...)
	}
	dev := &gsoDevice{}
	s := newAllocSession(t, nil, dev)
	s.gdev = dev
	w, rx := recordConns(t, src.sink, src)
	src.w = w
	onRecords(s, rx)
	checkReceiveAllocs(t, "record receive path", s, 16, 100)
}

// BenchmarkMuxAddRemove registers and removes one session on a mux that
// routes n others: the cost must not grow with n (a client connecting to
// a server with 10,000 clients costs what it costs with 100).
func BenchmarkMuxAddRemove(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := NewMux(&discardDevice{}, MuxConfig{})
			base := netip.MustParseAddr("100.64.0.0")
			for i := range n {
				m.Add(&Session{}, addOffset(base, uint32(i+2)))
			}
			s := &Session{}
			a := addOffset(base, uint32(n+2))
			b.ReportAllocs()
			for b.Loop() {
				m.Add(s, a)
				m.Remove(s)
			}
			if m.Lookup(addOffset(base, 2)) == nil || m.Lookup(a) != nil {
				b.Fatal("routes lost")
			}
		})
	}
}

func addOffset(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
