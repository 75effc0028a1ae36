package tunnel

import (
	"io"
	"sync"

	"tlsvpn/tun"
)

// bufSize is the size of every packet buffer: headroom for the frame header
// (and GSO metadata), the largest packet a TUN device returns, and one
// byte for the TLS record layer, which puts a record's content type after
// its content when it seals or opens it in place (RecordConn).
const bufSize = tun.Headroom + tun.MaxPacketSize + 1

// bigPacket is the size from which a packet is sent framed in place, in its
// own TLS write, instead of being copied into a coalesced chunk: above it a
// separate record costs less than the copy.
const bigPacket = 4096

// chunk is a run of complete frames in buf[start:end], ready for one
// tls.Conn.Write. It is either a coalesced chunk (small packets copied in
// back to back, start == 0) or a read buffer holding one big packet framed
// in place. Chunks cross from the mux's TUN reader to a session's writer
// through the session queue; whoever holds one owns it.
type chunk struct {
	buf     []byte // len(buf) == bufSize, allocated once
	start   int
	end     int
	lastHdr int  // offset of the last frame's header, for FlagEnd
	pkts    int  // packets in the chunk, for drop accounting
	ipBytes int  // IP bytes in the chunk, for accounting
	gso     bool // receive side: the packet carries a virtio-net header
}

var chunkPool = sync.Pool{New: func() any { return &chunk{buf: make([]byte, bufSize)} }}

func getChunk() *chunk { return chunkPool.Get().(*chunk) }

func putChunk(c *chunk) {
	c.start, c.end, c.lastHdr, c.pkts, c.ipBytes, c.gso = 0, 0, 0, 0, 0, false
	chunkPool.Put(c)
}

// appendPacket copies pkt into the coalesced chunk as a DATA frame.
func (c *chunk) appendPacket(pkt []byte) {
	c.lastHdr = c.end
	PutHeader(c.buf[c.end:], TypeData, false, len(pkt))
	c.end += HeaderLen + copy(c.buf[c.end+HeaderLen:], pkt)
	c.pkts++
	c.ipBytes += len(pkt)
}

// roomGSO reports whether a frame for a packet of n bytes (DATA_GSO, the
// larger kind) still fits a coalesced chunk.
func (c *chunk) roomGSO(n int) bool { return c.end+HeaderLen+GSOMetaLen+n <= len(c.buf) }

// appendGSO copies pkt into the coalesced chunk as a DATA_GSO frame.
func (c *chunk) appendGSO(g GSO, pkt []byte) {
	c.lastHdr = c.end
	PutHeader(c.buf[c.end:], TypeDataGSO, false, GSOMetaLen+len(pkt))
	PutGSO(c.buf[c.end+HeaderLen:], g)
	c.end += HeaderLen + GSOMetaLen + copy(c.buf[c.end+HeaderLen+GSOMetaLen:], pkt)
	c.pkts++
	c.ipBytes += len(pkt)
}

// frameGSOInPlace is frameInPlace for a DATA_GSO frame: header and
// metadata overwrite the virtio-net header in the headroom.
func (c *chunk) frameGSOInPlace(g GSO, n int) {
	c.start = tun.Headroom - HeaderLen - GSOMetaLen
	c.lastHdr = c.start
	c.end = tun.Headroom + n
	PutHeader(c.buf[c.start:], TypeDataGSO, false, GSOMetaLen+n)
	PutGSO(c.buf[c.start+HeaderLen:], g)
	c.pkts, c.ipBytes = 1, n
}

// frameInPlace turns a read buffer holding a packet of n bytes at
// buf[tun.Headroom:] into a one-frame chunk, writing the header into the
// headroom. Nothing is copied.
func (c *chunk) frameInPlace(n int) {
	c.start = tun.Headroom - HeaderLen
	c.lastHdr = c.start
	c.end = tun.Headroom + n
	PutHeader(c.buf[c.start:], TypeData, false, n)
	c.pkts, c.ipBytes = 1, n
}

// markEnd sets FlagEnd on the chunk's last frame.
func (c *chunk) markEnd() { c.buf[c.lastHdr] |= FlagEnd }

// bytes returns the chunk's frames.
func (c *chunk) bytes() []byte { return c.buf[c.start:c.end] }

// Receive and send buffers of the TLS layers. A connection holds a large
// buffer only while data flows: an idle one waits in its read with a small
// array of its own and holds no send buffer at all, so ten thousand idle
// sessions cost little memory.

// smallRecv is the receive buffer of a quiet connection: enough for the
// keepalive records and small packets of an idle session.
const smallRecv = 2048

var recvPool = sync.Pool{New: func() any { b := make([]byte, readBuf); return &b }}

// recvBuf is a connection's receive buffer: the bytes read from the
// socket and not yet used are buf[pos:end].
type recvBuf struct {
	small [smallRecv]byte
	big   *[]byte // from recvPool, while data flows
	buf   []byte  // small[:] or *big; nil until the first read
	pos   int
	end   int
	lastN int // what the last read returned: a full small buffer means more is coming
}

// bytes returns the unused bytes.
func (b *recvBuf) bytes() []byte { return b.buf[b.pos:b.end] }

// fill reads once from r into the buffer, after making room for need
// bytes from pos on (need is at most len of a big buffer). A drained
// buffer of a quiet connection goes back to the small array; a small one
// that cannot hold need bytes, or that the last read filled, becomes big.
func (b *recvBuf) fill(r io.Reader, need int) (int, error) {
	if b.buf == nil {
		b.buf = b.small[:]
	}
	if b.pos == b.end {
		b.pos, b.end = 0, 0
		if b.big != nil && b.lastN < smallRecv {
			b.releaseBig()
		}
	}
	if b.big == nil && (need > len(b.small) || b.lastN == len(b.small)) {
		b.grow()
	}
	if len(b.buf)-b.pos < need || b.end == len(b.buf) || (b.big != nil && len(b.buf)-b.end < maxRecordWire) {
		b.end = copy(b.buf, b.buf[b.pos:b.end])
		b.pos = 0
	}
	n, err := r.Read(b.buf[b.end:])
	b.end += n
	b.lastN = n
	return n, err
}

// grow moves the unused bytes into a big buffer.
func (b *recvBuf) grow() {
	b.big = recvPool.Get().(*[]byte)
	n := copy(*b.big, b.buf[b.pos:b.end])
	b.buf, b.pos, b.end = *b.big, 0, n
}

// releaseBig gives the big buffer back; the buffer must be empty.
func (b *recvBuf) releaseBig() {
	recvPool.Put(b.big)
	b.big, b.buf = nil, b.small[:]
}

// load puts p (bytes already read from the socket) into an empty buffer.
func (b *recvBuf) load(p []byte) {
	b.buf = b.small[:]
	if len(p) > len(b.small) {
		b.big = recvPool.Get().(*[]byte)
		b.buf = *b.big
	}
	b.pos, b.end = 0, copy(b.buf, p)
}

// free gives the big buffer back whatever it holds (the connection is
// done with it).
func (b *recvBuf) free() {
	if b.big != nil {
		recvPool.Put(b.big)
	}
	b.big, b.buf, b.pos, b.end = nil, nil, 0, 0
}

// sendPool holds the buffers sealed records are gathered in before one
// send: taken for a write, given back when it is sent.
var sendPool = sync.Pool{New: func() any { b := make([]byte, 0, outCap); return &b }}
