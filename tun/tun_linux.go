package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// linuxDevice wraps wireguard's NativeTun: batches, TSO/USO offloads and GRO
// on write come from there. Its event channel is drained for the device's
// lifetime, since an undrained channel can leave the netlink watcher stuck.
type linuxDevice struct {
	wgtun.Device // immutable after Open
	log          *slog.Logger
	done         chan struct{} // closed when the event drainer exits
}

// Open creates (or attaches to) the TUN interface name with the given MTU.
// The interface is not brought up and has no addresses: that is the routing
// layer's job. The caller must Close the device.
func Open(name string, mtu int, opts Options) (Device, error) {
	if len(name) == 0 || len(name) > 15 {
		return nil, fmt.Errorf("open tun %q: interface name must be 1 to 15 characters", name)
	}
	if mtu < 576 || mtu > MaxPacketSize {
		return nil, fmt.Errorf("open tun %s: mtu %d out of range [576, %d]", name, mtu, MaxPacketSize)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open tun %s: %w (needs root or CAP_NET_ADMIN)", name, err)
		}
		return nil, fmt.Errorf("open tun %s: %w", name, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &linuxDevice{Device: dev, log: log.With("ifname", name), done: make(chan struct{})}
	go d.drainEvents()
	return d, nil
}

func (d *linuxDevice) drainEvents() {
	defer close(d.done)
	for ev := range d.Device.Events() {
		switch {
		case ev&wgtun.EventUp != 0:
			d.log.Debug("tun link up")
		case ev&wgtun.EventDown != 0:
			d.log.Debug("tun link down")
		case ev&wgtun.EventMTUUpdate != 0:
			mtu, _ := d.Device.MTU()
			d.log.Debug("tun mtu changed", "mtu", mtu)
		}
	}
}

// Read implements Device.
func (d *linuxDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	if err != nil && errors.Is(err, os.ErrClosed) {
		return n, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return n, err
}

// Write implements Device.
func (d *linuxDevice) Write(bufs [][]byte, offset int) (int, error) {
	n, err := d.Device.Write(bufs, offset)
	if err != nil && errors.Is(err, os.ErrClosed) {
		return n, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return n, err
}

// Close implements Device; it waits for the event drainer to finish.
func (d *linuxDevice) Close() error {
	err := d.Device.Close()
	<-d.done
	return err
}
