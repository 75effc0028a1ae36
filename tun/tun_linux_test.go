package tun_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/routing/netnstest"
	"tlsvpn/tun"
)

// openIn opens a TUN device inside ns (the ioctl runs on a thread in ns,
// so the interface lives there) and gives it addr.
func openIn(t *testing.T, ns *netnstest.NS, name string, addr string) tun.Device {
	t.Helper()
	var dev tun.Device
	if err := ns.Do(func() error {
		var err error
		dev, err = tun.Open(name, 1500, tun.Options{})
		return err
	}); err != nil {
		t.Fatalf("open tun in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { dev.Close() })
	ns.Run(t, "ip", "addr", "add", addr, "dev", name)
	ns.Run(t, "ip", "link", "set", name, "up")
	return dev
}

func TestLinuxDeviceGSORoundTrip(t *testing.T) {
	ns := netnstest.New(t)
	dev := openIn(t, ns, "tvtun0", "100.64.9.1/24")
	g, ok := dev.(tun.GSODevice)
	if !ok || !g.SupportsGSO() {
		t.Fatal("Linux device does not support GSO reads and writes")
	}
	if name, _ := dev.Name(); name != "tvtun0" {
		t.Fatalf("Name() = %q", name)
	}

	// Kernel -> device: a UDP datagram to a host behind the tunnel.
	var conn net.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.Dial("udp", "100.64.9.2:9")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := []byte("through the tunnel")
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, tun.Headroom+tun.MaxPacketSize)
	}
	sizes := make([]int, len(bufs))
	deadline := time.Now().Add(5 * time.Second)
	var pkt []byte
	for pkt == nil && time.Now().Before(deadline) {
		n, err := g.ReadGSO(bufs, sizes, tun.Headroom)
		if err != nil {
			t.Fatalf("ReadGSO: %v", err)
		}
		for i := range n {
			p := bufs[i][tun.Headroom : tun.Headroom+sizes[i]]
			if p[0]>>4 == 4 && p[9] == 17 && string(p[len(p)-len(payload):]) == string(payload) {
				pkt = p
				var h tun.VirtioHdr
				h.Decode(bufs[i][tun.Headroom-tun.VirtioNetHdrLen:])
				if h.GSOType != tun.VirtioGSONone {
					t.Fatalf("small datagram read with GSO type %d", h.GSOType)
				}
			}
		}
	}
	if pkt == nil {
		t.Fatal("UDP datagram never read from the device")
	}

	// Device -> kernel: answer with a datagram to the socket, with an
	// empty virtio header; the kernel must deliver it.
	local := conn.LocalAddr().(*net.UDPAddr)
	reply := make([]byte, 28+5)
	reply[0] = 0x45
	binary.BigEndian.PutUint16(reply[2:], uint16(len(reply)))
	reply[8] = 64
	reply[9] = 17
	copy(reply[12:], netip.MustParseAddr("100.64.9.2").AsSlice())
	copy(reply[16:], local.IP.To4())
	binary.BigEndian.PutUint16(reply[20:], 9)
	binary.BigEndian.PutUint16(reply[22:], uint16(local.Port))
	binary.BigEndian.PutUint16(reply[24:], 8+5)
	copy(reply[28:], "hello")
	// IPv4 header checksum; the UDP checksum 0 means "none".
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(reply[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(reply[10:], ^uint16(sum))
	out := make([]byte, tun.Headroom+len(reply))
	copy(out[tun.Headroom:], reply)
	if n, err := g.WriteGSO([][]byte{out}, tun.Headroom); err != nil || n != 1 {
		t.Fatalf("WriteGSO = %d, %v", n, err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 64)
	n, err := conn.Read(got)
	if err != nil || string(got[:n]) != "hello" {
		t.Fatalf("socket read = %q, %v; want hello", got[:n], err)
	}
}

func TestLinuxDeviceCloseUnblocksRead(t *testing.T) {
	ns := netnstest.New(t)
	dev := openIn(t, ns, "tvtun1", "100.64.9.5/30")
	g := dev.(tun.GSODevice)
	errc := make(chan error, 1)
	go func() {
		// The kernel may queue a packet of its own (IPv6 router
		// solicitation) first: read until the device reports an error.
		bufs := [][]byte{make([]byte, tun.Headroom+tun.MaxPacketSize)}
		for {
			if _, err := g.ReadGSO(bufs, make([]int, 1), tun.Headroom); err != nil {
				errc <- err
				return
			}
		}
	}()
	dev.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, tun.ErrClosed) {
			t.Fatalf("ReadGSO after Close = %v, want an error wrapping tun.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadGSO still blocked 5s after Close")
	}
}

// txQueue returns the transmit queue length and the TX dropped count of
// interface name in ns.
func txQueue(t *testing.T, ns *netnstest.NS, name string) (qlen int, dropped uint64) {
	t.Helper()
	var links []struct {
		TxQLen int `json:"txqlen"`
		Stats  struct {
			Tx struct {
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	out := ns.Run(t, "ip", "-s", "-j", "link", "show", "dev", name)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show dev %s: %v\n%s", name, err, out)
	}
	return links[0].TxQLen, links[0].Stats.Tx.Dropped
}

// A burst of 2,000 small packets routed to the device while nobody reads
// it must wait in the device's transmit queue, not be dropped: the
// kernel's default queue (500 packets) dropped three quarters of it.
func TestLinuxDeviceTxQueueHoldsBurst(t *testing.T) {
	const burst = 2000
	ns := netnstest.New(t)
	dev := openIn(t, ns, "tvtun2", "100.64.9.9/30")
	if qlen, _ := txQueue(t, ns, "tvtun2"); qlen < burst {
		t.Fatalf("txqueuelen %d after Open, want at least %d", qlen, burst)
	}
	g := dev.(tun.GSODevice)

	var conn net.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.Dial("udp", "100.64.9.10:9")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	payload := make([]byte, 64)
	copy(payload, "burst")
	for i := range burst {
		if _, err := conn.Write(payload); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}

	// Only now read: everything that was not dropped is in the queue.
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, tun.Headroom+tun.MaxPacketSize)
		}
		sizes := make([]int, len(bufs))
		for n.Load() < burst {
			k, err := g.ReadGSO(bufs, sizes, tun.Headroom)
			if err != nil {
				return
			}
			for i := range k {
				p := bufs[i][tun.Headroom : tun.Headroom+sizes[i]]
				if len(p) >= 28 && p[0]>>4 == 4 && p[9] == 17 && binary.BigEndian.Uint16(p[20:]) == port {
					n.Add(1)
				}
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		// The rest was dropped; the device's Close ends the reader.
	}
	if got := n.Load(); got != burst {
		t.Errorf("read %d of the %d datagrams", got, burst)
	}
	if _, dropped := txQueue(t, ns, "tvtun2"); dropped != 0 {
		t.Errorf("TX dropped = %d, want 0", dropped)
	}
}

// Open lengthens a short transmit queue of a device it attaches to and
// leaves a longer one as it is.
func TestLinuxDeviceTxQueueKeepsLonger(t *testing.T) {
	ns := netnstest.New(t)
	for _, c := range []struct {
		name string
		set  int
		want func(int) bool
	}{
		{"tvtun3", 100, func(q int) bool { return q >= 2000 }},
		{"tvtun4", 20000, func(q int) bool { return q == 20000 }},
	} {
		// A persistent device, as an administrator would prepare it.
		ns.Run(t, "ip", "tuntap", "add", "dev", c.name, "mode", "tun")
		ns.Run(t, "ip", "link", "set", "dev", c.name, "txqueuelen", strconv.Itoa(c.set))
		var dev tun.Device
		if err := ns.Do(func() error {
			var err error
			dev, err = tun.Open(c.name, 1500, tun.Options{})
			return err
		}); err != nil {
			t.Fatalf("open %s: %v", c.name, err)
		}
		qlen, _ := txQueue(t, ns, c.name)
		dev.Close()
		if !c.want(qlen) {
			t.Errorf("%s: txqueuelen %d before Open, %d after", c.name, c.set, qlen)
		}
	}
}
