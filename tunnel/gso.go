package tunnel

import (
	"errors"
	"fmt"

	"tlsvpn/tun"
)

// ErrBadGSO wraps every rejection of a peer's GSO metadata.
var ErrBadGSO = errors.New("bad GSO metadata")

// gsoOf turns a virtio-net header read from the TUN into frame metadata.
// The header length is not sent: the receiver recomputes it.
func gsoOf(h tun.VirtioHdr) GSO {
	return GSO{Type: h.GSOType, Flags: h.Flags, Size: h.GSOSize, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}
}

// virtioFor validates a peer's GSO metadata against the packet p it came
// with and returns the virtio-net header to write p with. The peer is
// authenticated, not trusted: it may only describe a TCPv4, TCPv6 or UDP
// super-packet (or a single packet that needs its checksum completed)
// whose transport header directly follows the IP header, whose checksum
// field lies inside the packet, and whose segments fit this side's MTU.
// p must already have passed checkIP.
func virtioFor(g GSO, p []byte, mtu int) (tun.VirtioHdr, error) {
	h := tun.VirtioHdr{Flags: g.Flags, GSOType: g.Type, GSOSize: g.Size, CsumStart: g.CsumStart, CsumOffset: g.CsumOffset}
	if g.Flags&^tun.VirtioFlagNeedsCsum != 0 {
		return h, fmt.Errorf("%w: flags 0x%02x", ErrBadGSO, g.Flags)
	}
	var ipHdrLen int
	var proto byte
	v := p[0] >> 4
	if v == 4 {
		ipHdrLen, proto = int(p[0]&0x0f)*4, p[9]
	} else {
		ipHdrLen, proto = 40, p[6]
	}
	needsCsum := g.Flags&tun.VirtioFlagNeedsCsum != 0
	if needsCsum {
		if int(g.CsumStart) != ipHdrLen {
			return h, fmt.Errorf("%w: checksum start %d, IP header is %d bytes", ErrBadGSO, g.CsumStart, ipHdrLen)
		}
		switch {
		case proto == 6 && g.CsumOffset == 16, proto == 17 && g.CsumOffset == 6:
		default:
			return h, fmt.Errorf("%w: checksum offset %d for IP protocol %d", ErrBadGSO, g.CsumOffset, proto)
		}
		if int(g.CsumStart)+int(g.CsumOffset)+2 > len(p) {
			return h, fmt.Errorf("%w: checksum field beyond packet of %d bytes", ErrBadGSO, len(p))
		}
	} else if g.CsumStart != 0 || g.CsumOffset != 0 {
		return h, fmt.Errorf("%w: checksum offsets without the needs-checksum flag", ErrBadGSO)
	}
	switch g.Type {
	case tun.VirtioGSONone:
		if g.Size != 0 {
			return h, fmt.Errorf("%w: segment size %d without a GSO type", ErrBadGSO, g.Size)
		}
		return h, nil
	case tun.VirtioGSOTCPv4:
		if v != 4 || proto != 6 {
			return h, fmt.Errorf("%w: TCPv4 GSO on IPv%d protocol %d", ErrBadGSO, v, proto)
		}
	case tun.VirtioGSOTCPv6:
		if v != 6 || proto != 6 {
			return h, fmt.Errorf("%w: TCPv6 GSO on IPv%d protocol %d", ErrBadGSO, v, proto)
		}
	case tun.VirtioGSOUDPL4:
		if proto != 17 {
			return h, fmt.Errorf("%w: UDP GSO on IP protocol %d", ErrBadGSO, proto)
		}
	default:
		return h, fmt.Errorf("%w: GSO type %d", ErrBadGSO, g.Type)
	}
	if !needsCsum {
		return h, fmt.Errorf("%w: GSO without the needs-checksum flag", ErrBadGSO)
	}
	thl := 8
	if proto == 6 {
		if len(p) <= ipHdrLen+12 {
			return h, fmt.Errorf("%w: TCP header truncated", ErrBadGSO)
		}
		thl = int(p[ipHdrLen+12]>>4) * 4
		if thl < 20 || thl > 60 {
			return h, fmt.Errorf("%w: TCP header length %d", ErrBadGSO, thl)
		}
	}
	hdrLen := ipHdrLen + thl
	if len(p) <= hdrLen {
		return h, fmt.Errorf("%w: no payload after %d header bytes", ErrBadGSO, hdrLen)
	}
	if g.Size == 0 || hdrLen+int(g.Size) > mtu {
		return h, fmt.Errorf("%w: segment size %d with %d header bytes exceeds MTU %d", ErrBadGSO, g.Size, hdrLen, mtu)
	}
	h.HdrLen = uint16(hdrLen)
	return h, nil
}
