// Package tuntest provides an in-memory tun.Device for tests.
package tuntest

import (
	"fmt"
	"sync"

	"tlsvpn/tun"
)

// ChannelDevice is an in-memory tun.Device. Packets sent on Inbound are
// returned by Read, as if the kernel had routed them into the interface;
// packets given to Write appear on Outbound, as if delivered to the kernel.
//
// Read returns, in one batch, the packets already waiting on Inbound (at
// least one, blocking for the first), so tests exercise the batch paths.
type ChannelDevice struct {
	Inbound  chan []byte // packets for Read; the device copies them
	Outbound chan []byte // packets from Write; each a fresh copy
	name     string
	mtu      int
	batch    int

	closeOnce sync.Once
	closed    chan struct{}
}

// NewChannelDevice returns a device with the given name, MTU and batch size
// whose channels have the given capacity.
func NewChannelDevice(name string, mtu, batchSize, capacity int) *ChannelDevice {
	return &ChannelDevice{
		Inbound:  make(chan []byte, capacity),
		Outbound: make(chan []byte, capacity),
		name:     name,
		mtu:      mtu,
		batch:    batchSize,
		closed:   make(chan struct{}),
	}
}

// Read implements tun.Device.
func (d *ChannelDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < tun.Headroom {
		return 0, fmt.Errorf("tuntest: read offset %d < Headroom %d", offset, tun.Headroom)
	}
	n := 0
	for n < len(bufs) {
		var p []byte
		if n == 0 {
			select {
			case p = <-d.Inbound:
			case <-d.closed:
				return 0, tun.ErrClosed
			}
		} else {
			select {
			case p = <-d.Inbound:
			default:
				return n, nil
			}
		}
		if len(p) > len(bufs[n])-offset {
			return n, fmt.Errorf("tuntest: packet of %d bytes does not fit buffer of %d", len(p), len(bufs[n])-offset)
		}
		sizes[n] = copy(bufs[n][offset:], p)
		n++
	}
	return n, nil
}

// Write implements tun.Device. It blocks while Outbound is full, like a
// kernel queue that applies back-pressure, until the device is closed.
func (d *ChannelDevice) Write(bufs [][]byte, offset int) (int, error) {
	if offset < tun.Headroom {
		return 0, fmt.Errorf("tuntest: write offset %d < Headroom %d", offset, tun.Headroom)
	}
	total := 0
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		select {
		case d.Outbound <- p:
			total += len(p)
		case <-d.closed:
			return total, tun.ErrClosed
		}
	}
	return total, nil
}

// BatchSize implements tun.Device.
func (d *ChannelDevice) BatchSize() int { return d.batch }

// MTU implements tun.Device.
func (d *ChannelDevice) MTU() (int, error) { return d.mtu, nil }

// Name implements tun.Device.
func (d *ChannelDevice) Name() (string, error) { return d.name, nil }

// Close implements tun.Device; blocked Read and Write calls return.
func (d *ChannelDevice) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

var _ tun.Device = (*ChannelDevice)(nil)
