package tunnel

import (
	"encoding/binary"
	"errors"
	"testing"

	"tlsvpn/tun"
)

// tcp4 builds an IPv4/TCP packet with a 20-byte IP header, a TCP header
// of thl bytes and payload bytes of data.
func tcp4(thl, payload int) []byte {
	p := make([]byte, 20+thl+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = 6
	copy(p[12:], []byte{100, 64, 0, 2, 100, 64, 0, 1})
	p[20+12] = byte(thl/4) << 4
	return p
}

func tcp6(payload int) []byte {
	p := make([]byte, 40+20+payload)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(20+payload))
	p[6] = 6
	p[40+12] = 5 << 4
	return p
}

func udp4(payload int) []byte {
	p := make([]byte, 28+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = 17
	return p
}

func TestVirtioFor(t *testing.T) {
	csum := uint8(tun.VirtioFlagNeedsCsum)
	tests := []struct {
		name    string
		g       GSO
		p       []byte
		hdrLen  uint16
		wantErr bool
	}{
		{"tcp4 super-packet", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1448, CsumStart: 20, CsumOffset: 16}, tcp4(32, 60000), 52, false},
		{"tcp6 super-packet", GSO{Type: tun.VirtioGSOTCPv6, Flags: csum, Size: 1440, CsumStart: 40, CsumOffset: 16}, tcp6(30000), 60, false},
		{"udp4 GSO", GSO{Type: tun.VirtioGSOUDPL4, Flags: csum, Size: 1400, CsumStart: 20, CsumOffset: 6}, udp4(20000), 28, false},
		{"single packet needing checksum", GSO{Flags: csum, CsumStart: 20, CsumOffset: 16}, tcp4(20, 100), 0, false},
		{"plain packet", GSO{}, tcp4(20, 100), 0, false},
		{"segment above MTU", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1481, CsumStart: 20, CsumOffset: 16}, tcp4(20, 60000), 0, true},
		{"zero segment size", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, CsumStart: 20, CsumOffset: 16}, tcp4(20, 6000), 0, true},
		{"TCPv4 type on IPv6", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1400, CsumStart: 40, CsumOffset: 16}, tcp6(6000), 0, true},
		{"TCP type on UDP", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1400, CsumStart: 20, CsumOffset: 6}, udp4(6000), 0, true},
		{"unknown GSO type", GSO{Type: 3, Flags: csum, Size: 1400, CsumStart: 20, CsumOffset: 16}, tcp4(20, 6000), 0, true},
		{"unknown flag", GSO{Flags: 0x02}, tcp4(20, 100), 0, true},
		{"checksum start inside IP header", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1400, CsumStart: 10, CsumOffset: 16}, tcp4(20, 6000), 0, true},
		{"checksum offset wrong", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1400, CsumStart: 20, CsumOffset: 10}, tcp4(20, 6000), 0, true},
		{"GSO without checksum flag", GSO{Type: tun.VirtioGSOTCPv4, Size: 1400}, tcp4(20, 6000), 0, true},
		{"offsets without flag", GSO{CsumStart: 20, CsumOffset: 16}, tcp4(20, 100), 0, true},
		{"bad TCP header length", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1400, CsumStart: 20, CsumOffset: 16}, tcp4(16, 6000), 0, true},
		{"no payload", GSO{Type: tun.VirtioGSOTCPv4, Flags: csum, Size: 1400, CsumStart: 20, CsumOffset: 16}, tcp4(20, 0), 0, true},
		{"segment size on plain packet", GSO{Size: 100}, tcp4(20, 100), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !checkIP(tt.p) {
				t.Fatalf("test packet is not well formed")
			}
			h, err := virtioFor(tt.g, tt.p, 1500)
			if tt.wantErr {
				if !errors.Is(err, ErrBadGSO) {
					t.Fatalf("virtioFor(%+v) error = %v, want ErrBadGSO", tt.g, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("virtioFor(%+v): %v", tt.g, err)
			}
			if h.HdrLen != tt.hdrLen || h.GSOType != tt.g.Type || h.GSOSize != tt.g.Size {
				t.Fatalf("virtioFor(%+v) = %+v, want hdrLen %d", tt.g, h, tt.hdrLen)
			}
		})
	}
}

func TestVirtioHdrRoundTrip(t *testing.T) {
	h := tun.VirtioHdr{Flags: 1, GSOType: 4, HdrLen: 60, GSOSize: 1440, CsumStart: 40, CsumOffset: 16}
	var b [tun.VirtioNetHdrLen]byte
	h.Encode(b[:])
	var got tun.VirtioHdr
	got.Decode(b[:])
	if got != h {
		t.Fatalf("decode(encode(%+v)) = %+v", h, got)
	}
	if g := gsoOf(h); g.Type != 4 || g.Size != 1440 || g.CsumStart != 40 {
		t.Fatalf("gsoOf(%+v) = %+v", h, g)
	}
}

// FuzzVirtioFor feeds arbitrary metadata and packets to the receiver's GSO
// validation: it must never panic, and what it accepts must describe a
// header inside the packet and segments within the MTU.
func FuzzVirtioFor(f *testing.F) {
	f.Add([]byte{1, 1, 0x05, 0xa8, 0, 20, 0, 16}, tcp4(32, 3000))
	f.Add([]byte{4, 1, 0x05, 0xa0, 0, 40, 0, 16}, tcp6(3000))
	f.Add([]byte{5, 1, 0x05, 0x78, 0, 20, 0, 6}, udp4(3000))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, udp4(10))
	f.Fuzz(func(t *testing.T, meta, p []byte) {
		g, err := ParseGSO(meta)
		if err != nil || !checkIP(p) {
			return
		}
		h, err := virtioFor(g, p, 1500)
		if err != nil {
			return
		}
		if g.Flags&tun.VirtioFlagNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > len(p) {
			t.Fatalf("accepted checksum field outside packet: %+v len %d", h, len(p))
		}
		if h.GSOType != tun.VirtioGSONone && (int(h.HdrLen) >= len(p) || int(h.HdrLen)+int(h.GSOSize) > 1500 || h.GSOSize == 0) {
			t.Fatalf("accepted bad segmentation: %+v len %d", h, len(p))
		}
	})
}
