package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// linuxDevice wraps wireguard's NativeTun: batches, TSO/USO offloads and GRO
// on write come from there. Its event channel is drained for the device's
// lifetime, since an undrained channel can leave the netlink watcher stuck.
//
// With offloads on (IFF_VNET_HDR), ReadGSO and WriteGSO bypass the package's
// segmentation and GRO and move super-packets whole on the same file
// descriptor; the Device's single-reader rule keeps the two read paths
// from running at once.
type linuxDevice struct {
	wgtun.Device // immutable after Open
	log          *slog.Logger
	done         chan struct{} // closed when the event drainer exits
	raw          syscall.RawConn
	vnetHdr      bool
	closed       atomic.Bool
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
	if err := d.initRaw(); err != nil {
		d.Close()
		return nil, fmt.Errorf("open tun %s: %w", name, err)
	}
	d.lengthenTxQueue()
	return d, nil
}

// txQueueLen is the transmit queue, in packets, that Open gives a TUN
// device whose queue is shorter.
//
// A TUN device's transmit queue is the ring from which its reader takes
// the packets the kernel routes to it; the kernel makes it 500 packets
// long. The qdisc in front of it never holds anything back (the driver
// takes each packet or drops it), so when packets come faster than the
// reader takes them, what does not fit in the ring is dropped and counted
// as TX dropped on the interface. A burst of small packets (2,000 answers
// to one client at once, or many users' DNS and VoIP packets in the same
// millisecond) is routed to the device in a millisecond or two, and the
// reader, sharing a busy machine, may take few of them in that time: on
// the benchmark machine a 2,000-packet burst lost 25 to 75% with 500
// (scripts/bench.sh, the burst rows) and nothing with 4096, which also
// took 4,000-packet bursts whole.
//
// What it costs: a slot is a pointer while empty, and a packet waiting in
// it costs what it did before, only more of them can wait (4096 small
// packets are about 4 MiB). Under a flood of small packets that outruns
// the tunnel, a full ring is 4096 packets of queueing, 10 to 30 ms at the
// 130,000 to 450,000 packets per second the data path moved there; the
// round trip under such a flood measured 50 to 300 ms with either length,
// most of it the TLS stream's TCP buffers.
const txQueueLen = 4096

// lengthenTxQueue makes the device's transmit queue txQueueLen packets
// long if it is shorter (a device we attach to may have been given a
// longer one; that stays). A failure is logged, not returned: the device
// works with the queue it has.
func (d *linuxDevice) lengthenTxQueue() {
	name, err := d.Device.Name()
	if err == nil {
		var before int
		before, err = raiseTxQueueLen(name, txQueueLen)
		if err == nil {
			if before < txQueueLen {
				d.log.Debug("tun transmit queue lengthened", "txqueuelen", txQueueLen, "was", before)
			}
			return
		}
	}
	d.log.Warn("cannot lengthen the tun transmit queue: bursts of packets may be dropped", "want_txqueuelen", txQueueLen, "err", err)
}

// raiseTxQueueLen sets interface name's transmit queue length to n if it is
// shorter, and returns the length it had. The interface is looked up in
// the calling thread's network namespace, where Open just created it.
func raiseTxQueueLen(name string, n int) (before int, err error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("txqueuelen: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("txqueuelen: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFTXQLEN, ifr); err != nil {
		return 0, fmt.Errorf("get txqueuelen: %w", err)
	}
	before = int(ifr.Uint32())
	if before >= n {
		return before, nil
	}
	ifr.SetUint32(uint32(n))
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFTXQLEN, ifr); err != nil {
		return before, fmt.Errorf("set txqueuelen %d: %w", n, err)
	}
	return before, nil
}

// initRaw finds out whether the device carries virtio-net headers.
func (d *linuxDevice) initRaw() error {
	raw, err := d.Device.File().SyscallConn()
	if err != nil {
		return err
	}
	d.raw = raw
	var ioErr error
	err = raw.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		ifr, ioErr = unix.NewIfreq("")
		if ioErr != nil {
			return
		}
		ioErr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
		d.vnetHdr = ioErr == nil && ifr.Uint16()&unix.IFF_VNET_HDR != 0
	})
	if err != nil {
		return err
	}
	return ioErr
}

// SupportsGSO implements GSODevice.
func (d *linuxDevice) SupportsGSO() bool { return d.vnetHdr }

var errNoVnetHdr = errors.New("tun device has no virtio-net headers (offloads unavailable)")

// ReadGSO implements GSODevice: one wake-up, then read(2) until the queue
// is empty or the buffers are used up.
func (d *linuxDevice) ReadGSO(bufs [][]byte, sizes []int, offset int) (int, error) {
	if !d.vnetHdr {
		return 0, errNoVnetHdr
	}
	n := 0
	var rerr error
	err := d.raw.Read(func(fd uintptr) bool {
		for n < len(bufs) {
			k, err := unix.Read(int(fd), bufs[n][offset-VirtioNetHdrLen:])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return n > 0
			case err != nil:
				rerr = err
				return true
			case k < VirtioNetHdrLen:
				continue // cannot happen with IFF_VNET_HDR; skip
			}
			sizes[n] = k - VirtioNetHdrLen
			n++
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if n > 0 {
		return n, nil
	}
	if err != nil && d.closed.Load() {
		return 0, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return 0, err
}

// WriteGSO implements GSODevice.
func (d *linuxDevice) WriteGSO(bufs [][]byte, offset int) (int, error) {
	if !d.vnetHdr {
		return 0, errNoVnetHdr
	}
	i, written := 0, 0
	var errs []error
	err := d.raw.Write(func(fd uintptr) bool {
		for i < len(bufs) {
			_, err := unix.Write(int(fd), bufs[i][offset-VirtioNetHdrLen:])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil:
				if len(errs) < 4 {
					errs = append(errs, err)
				}
			default:
				written++
			}
			i++
		}
		return true
	})
	if err != nil {
		if d.closed.Load() {
			return written, fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return written, err
	}
	if len(errs) > 0 {
		return written, fmt.Errorf("write tun: %d of %d packets refused: %w", len(bufs)-written, len(bufs), errors.Join(errs...))
	}
	return written, nil
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
	d.closed.Store(true)
	err := d.Device.Close()
	<-d.done
	return err
}
