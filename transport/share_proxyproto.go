package transport

// The PROXY protocol version 2 header (haproxy's proxy-protocol.txt,
// section 2.2) that a relay sends before the client's bytes when the
// backend is told to expect it (nginx: "listen ... proxy_protocol"), so
// that the web server sees and logs the real client instead of tunneld.
// Only the header's fixed part with TCP addresses is written: no TLVs.

import (
	"encoding/binary"
	"net/netip"
)

// proxySignature starts every PROXY protocol v2 header.
var proxySignature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// PROXY v2 header fields.
const (
	proxyV2Local = 0x20 // version 2, command LOCAL: no addresses
	proxyV2Proxy = 0x21 // version 2, command PROXY
	proxyTCP4    = 0x11 // AF_INET, STREAM
	proxyTCP6    = 0x21 // AF_INET6, STREAM
)

// AppendProxyHeader appends a PROXY protocol v2 header for a TCP
// connection from src to dst (the address the client connected to) and
// returns the extended slice. IPv4-mapped IPv6 addresses are written as
// IPv4; when one address is IPv4 and the other IPv6 both are written as
// IPv6. Without valid addresses the header says LOCAL: the receiver then
// uses the connection's own addresses.
func AppendProxyHeader(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxySignature[:]...)
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() {
		return append(b, proxyV2Local, 0, 0, 0)
	}
	if s.Is4() && d.Is4() {
		b = append(b, proxyV2Proxy, proxyTCP4, 0, 12)
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, proxyV2Proxy, proxyTCP6, 0, 36)
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}
