package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"

	"tlsvpn/tun"
)

// ALPN is the application protocol both sides offer in the TLS handshake. It
// names the wire-format version: a peer that does not offer it is refused
// before any frame is read.
const ALPN = "tlsvpn/1"

// Frame types. See docs/PROTOCOL.md for the byte layout of each.
const (
	TypeData    byte = 0x01 // one IP packet
	TypeDataGSO byte = 0x02 // GSO metadata + one super-packet (offload peers only)
	TypeHello   byte = 0x10 // client -> server, first frame after the handshake
	TypeConfig  byte = 0x11 // server -> client, answer to Hello
	TypePing    byte = 0x12 // either side; 8 opaque bytes
	TypePong    byte = 0x13 // echoes a Ping's 8 bytes
	TypeClose   byte = 0x14 // code + reason; the sender closes after it
)

// FlagEnd marks the last frame of a batch (the high bit of the type byte).
// The receiver hands the packets gathered so far to its TUN device in one
// write when it sees it.
const FlagEnd byte = 0x80

const typeMask byte = 0x7f

// HeaderLen is the size of a frame header: one type byte and a 24-bit
// big-endian payload length.
const HeaderLen = 4

// Size limits, checked by ParseHeader before any payload is read.
const (
	// MaxDataLen is the largest DATA payload: one IP packet.
	MaxDataLen = tun.MaxPacketSize
	// GSOMetaLen is the GSO metadata in front of a DATA_GSO packet.
	GSOMetaLen = 8
	// MaxDataGSOLen is the largest DATA_GSO payload.
	MaxDataGSOLen = GSOMetaLen + tun.MaxPacketSize
	// MaxControlLen bounds every control frame (Hello, Config, Close).
	MaxControlLen = 16 << 10
	// PingLen is the exact payload size of Ping and Pong.
	PingLen = 8
	// MinDataLen is the smallest DATA payload: an IPv4 header.
	MinDataLen = 20
)

// The frame header and the GSO metadata must fit in the headroom that the
// TUN buffers reserve, so packets are framed in place.
const _ = uint(tun.Headroom - HeaderLen - GSOMetaLen)

// Header is a parsed frame header.
type Header struct {
	Type byte // without FlagEnd
	End  bool // FlagEnd was set
	Len  int  // payload length in bytes
}

func (h Header) String() string {
	return fmt.Sprintf("%s len=%d end=%t", typeName(h.Type), h.Len, h.End)
}

func typeName(t byte) string {
	switch t {
	case TypeData:
		return "DATA"
	case TypeDataGSO:
		return "DATA_GSO"
	case TypeHello:
		return "HELLO"
	case TypeConfig:
		return "CONFIG"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeClose:
		return "CLOSE"
	}
	return fmt.Sprintf("type 0x%02x", t)
}

// Errors returned by ParseHeader. They wrap into a *ProtocolError in the
// session, which closes with the matching reason.
var (
	ErrShortHeader   = errors.New("short frame header")
	ErrUnknownType   = errors.New("unknown frame type")
	ErrFrameTooLarge = errors.New("frame too large")
	ErrFrameTooSmall = errors.New("frame too small")
)

// maxLen returns the payload limits for a frame type; ok is false for an
// unknown type.
func limits(t byte) (lo, hi int, ok bool) {
	switch t {
	case TypeData:
		return MinDataLen, MaxDataLen, true
	case TypeDataGSO:
		return GSOMetaLen + MinDataLen, MaxDataGSOLen, true
	case TypeHello, TypeConfig:
		return 1, MaxControlLen, true
	case TypePing, TypePong:
		return PingLen, PingLen, true
	case TypeClose:
		return 2, MaxControlLen, true
	}
	return 0, 0, false
}

// ParseHeader parses the first HeaderLen bytes of b. It checks the type and
// the length against that type's limits, so the caller can read the payload
// into a buffer of the right size without trusting the peer. It does not
// keep b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShortHeader
	}
	h := Header{
		Type: b[0] & typeMask,
		End:  b[0]&FlagEnd != 0,
		Len:  int(b[1])<<16 | int(b[2])<<8 | int(b[3]),
	}
	lo, hi, ok := limits(h.Type)
	if !ok {
		return h, fmt.Errorf("%w 0x%02x", ErrUnknownType, h.Type)
	}
	if h.Len > hi {
		return h, fmt.Errorf("%w: %s payload %d > %d", ErrFrameTooLarge, typeName(h.Type), h.Len, hi)
	}
	if h.Len < lo {
		return h, fmt.Errorf("%w: %s payload %d < %d", ErrFrameTooSmall, typeName(h.Type), h.Len, lo)
	}
	return h, nil
}

// PutHeader writes a frame header for a payload of n bytes into
// b[:HeaderLen]. It panics if n does not fit in 24 bits; callers only pass
// lengths bounded by the limits above.
func PutHeader(b []byte, typ byte, end bool, n int) {
	if n < 0 || n > 1<<24-1 {
		panic("tunnel: frame length out of range")
	}
	if end {
		typ |= FlagEnd
	}
	b[0] = typ
	b[1] = byte(n >> 16)
	b[2] = byte(n >> 8)
	b[3] = byte(n)
}

// AppendFrame appends a frame with the given type and payload to dst and
// returns the extended slice. It does not keep payload.
func AppendFrame(dst []byte, typ byte, end bool, payload []byte) []byte {
	var h [HeaderLen]byte
	PutHeader(h[:], typ, end, len(payload))
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// appendControl appends a control frame (HELLO, CONFIG, PING, PONG or
// CLOSE) to dst. Each control frame is a write of its own and so carries
// E (docs/PROTOCOL.md section 2); this package writes every control frame
// through here (TestControlFramesSetEnd keeps it so), data frames through
// PutHeader.
func appendControl(dst []byte, typ byte, payload []byte) []byte {
	return AppendFrame(dst, typ, true, payload)
}

// GSO is the segmentation metadata of a DATA_GSO frame: what the sending
// kernel's virtio-net header said about a super-packet, minus the header
// length, which the receiver recomputes from the packet itself.
type GSO struct {
	Type       uint8  // virtio GSO type: 1 TCPv4, 4 TCPv6, 5 UDP L4
	Flags      uint8  // virtio flags: 1 = needs checksum
	Size       uint16 // segment payload size (MSS)
	CsumStart  uint16 // offset of the transport header
	CsumOffset uint16 // checksum field offset from CsumStart
}

// PutGSO writes g into b[:GSOMetaLen].
func PutGSO(b []byte, g GSO) {
	b[0] = g.Type
	b[1] = g.Flags
	binary.BigEndian.PutUint16(b[2:], g.Size)
	binary.BigEndian.PutUint16(b[4:], g.CsumStart)
	binary.BigEndian.PutUint16(b[6:], g.CsumOffset)
}

// ParseGSO reads GSO metadata from b[:GSOMetaLen]. It only decodes; the
// receiver validates the values against the packet before trusting them.
func ParseGSO(b []byte) (GSO, error) {
	if len(b) < GSOMetaLen {
		return GSO{}, ErrFrameTooSmall
	}
	return GSO{
		Type:       b[0],
		Flags:      b[1],
		Size:       binary.BigEndian.Uint16(b[2:]),
		CsumStart:  binary.BigEndian.Uint16(b[4:]),
		CsumOffset: binary.BigEndian.Uint16(b[6:]),
	}, nil
}
