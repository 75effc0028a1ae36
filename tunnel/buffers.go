package tunnel

import (
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
