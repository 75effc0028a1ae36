package tun

import "encoding/binary"

// GSODevice is a Device that can also move GSO super-packets whole: a TCP
// or UDP packet of up to MaxPacketSize bytes that the kernel segments (on
// write) or did not segment (on read), described by a virtio-net header.
// The Linux device opened with offloads implements it.
//
// ReadGSO and Read must not be called concurrently (one reader); either
// may be used on each call. The same holds for WriteGSO and Write.
type GSODevice interface {
	Device

	// SupportsGSO reports whether the device was opened with virtio-net
	// headers; ReadGSO and WriteGSO fail when it is false.
	SupportsGSO() bool

	// ReadGSO reads one or more packets without splitting them. Packet i
	// lands at bufs[i][offset:], its length in sizes[i], and its
	// virtio-net header at bufs[i][offset-VirtioNetHdrLen:offset]. It
	// blocks until at least one packet is available, then takes what is
	// already queued, up to len(bufs). Buffers must hold
	// offset+MaxPacketSize bytes.
	ReadGSO(bufs [][]byte, sizes []int, offset int) (int, error)

	// WriteGSO writes each bufs[i][offset-VirtioNetHdrLen:] as one packet
	// preceded by its virtio-net header, which the caller has written.
	// Packets the kernel refuses are skipped and reported in the error;
	// the count of written packets is returned.
	WriteGSO(bufs [][]byte, offset int) (int, error)
}

// Virtio-net header values (include/uapi/linux/virtio_net.h).
const (
	VirtioFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	VirtioGSONone  = 0 // VIRTIO_NET_HDR_GSO_NONE
	VirtioGSOTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	VirtioGSOUDPL4 = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
	VirtioGSOTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6
)

// VirtioHdr is struct virtio_net_hdr. On a TUN device its fields are in
// the host's byte order.
type VirtioHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// Decode reads h from b[:VirtioNetHdrLen].
func (h *VirtioHdr) Decode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
}

// Encode writes h into b[:VirtioNetHdrLen].
func (h *VirtioHdr) Encode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}
