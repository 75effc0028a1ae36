// Package tun is the TUN device seam: a batch packet interface that mirrors a
// subset of golang.zx2c4.com/wireguard/tun.Device, a Linux implementation over
// that package, and (in tuntest) an in-memory device for tests.
//
// Packets are plain IP packets (no packet-information header). Callers reserve
// Headroom bytes in front of every packet: the Linux implementation writes a
// 10-byte virtio-net header there when the kernel's offloads are on, and the
// tunnel package writes its frame header there so a packet can be sent to the
// peer without being copied.
package tun

import (
	"errors"
	"log/slog"
)

// Headroom is the number of bytes callers reserve in front of each packet
// buffer (the offset argument of Read and Write). It holds a virtio-net header
// (10 bytes) or a tunnel frame header plus GSO metadata (12 bytes).
const Headroom = 16

// MaxPacketSize is the largest packet a Device returns or accepts: an IPv4
// total length or IPv6 payload length field cannot describe more. GSO
// super-packets read with offloads on reach this size even when the MTU is
// small, so read buffers must be at least Headroom+MaxPacketSize long.
const MaxPacketSize = 65535

// VirtioNetHdrLen is the size of struct virtio_net_hdr, which precedes every
// packet on a TUN opened with IFF_VNET_HDR.
const VirtioNetHdrLen = 10

// ErrClosed is returned by Read and Write after Close.
var ErrClosed = errors.New("tun device closed")

// Device is a TUN device that moves packets in batches.
//
// Read and Write may be called concurrently with each other, but not
// concurrently with themselves. Close unblocks a pending Read, which then
// returns an error wrapping ErrClosed or os.ErrClosed.
type Device interface {
	// Read reads one or more packets. Packet i is written to
	// bufs[i][offset:] and its length stored in sizes[i]; Read returns the
	// number of packets read. len(sizes) must be >= len(bufs), offset must
	// be >= Headroom and every buffer must hold offset+MaxPacketSize bytes:
	// pass BatchSize() buffers, since a device with offloads splits one
	// super-packet into many segments in one call and drops segments that
	// do not fit. Read keeps none of the buffers.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes the packets bufs[i][offset:] as one batch and returns the
	// number of bytes (not packets) written. offset must be >= Headroom: the
	// device may write a header in front of the packet, may coalesce packets
	// into spare capacity of the slices and may change the slice headers in
	// bufs, so callers pass slices they own whole (never sub-slices of one
	// shared buffer) and reset them before reuse. Write keeps none of them.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the number of buffers Read wants and the largest batch
	// Write takes at once. It does not change over the device's lifetime.
	BatchSize() int

	// MTU is the device's current MTU.
	MTU() (int, error)

	// Name is the interface name, e.g. "tunnelc0".
	Name() (string, error)

	// Close closes the device and removes the interface. It is safe to call
	// more than once.
	Close() error
}

// Options tunes Open.
type Options struct {
	// Logger receives device events (link up/down, MTU changes). Nil
	// discards them.
	Logger *slog.Logger
}
