package tunnel

import (
	"encoding/binary"
	"net/netip"
)

// checkIP reports whether p looks like one whole IPv4 or IPv6 packet: a
// known version, a header that fits, and a length field that matches the
// frame. It reads only fixed offsets and never panics.
func checkIP(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return false
		}
		ihl := int(p[0]&0x0f) * 4
		return ihl >= 20 && ihl <= len(p) && int(binary.BigEndian.Uint16(p[2:4])) == len(p)
	case 6:
		return len(p) >= 40 && int(binary.BigEndian.Uint16(p[4:6]))+40 == len(p)
	}
	return false
}

// srcAddr returns the source address of a packet that passed checkIP.
func srcAddr(p []byte) netip.Addr {
	if p[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(p[12:16]))
	}
	return netip.AddrFrom16([16]byte(p[8:24]))
}

// dstAddr returns the destination address of an IPv4 or IPv6 packet, or
// false if p is too short to have one.
func dstAddr(p []byte) (netip.Addr, bool) {
	if len(p) < 1 {
		return netip.Addr{}, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) >= 20 {
			return netip.AddrFrom4([4]byte(p[16:20])), true
		}
	case 6:
		if len(p) >= 40 {
			return netip.AddrFrom16([16]byte(p[24:40])), true
		}
	}
	return netip.Addr{}, false
}
