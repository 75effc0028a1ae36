package routing_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

// TestCheckFree: in a namespace with a TUN device and a small route,
// CheckFree refuses the device's name and subnets that collide, and lets
// everything else through.
func TestCheckFree(t *testing.T) {
	n := netnstest.New(t)
	newTun(t, n, "tvtx0")
	n.Run(t, "ip", "link", "set", "tvtx0", "up")
	n.Run(t, "ip", "addr", "add", "100.64.0.1/24", "dev", "tvtx0")
	n.Run(t, "ip", "route", "add", "198.19.5.0/28", "dev", "lo")
	p := netip.MustParsePrefix
	// This test process holds tvtx0 open, as a daemon would.
	var held int
	if err := n.Do(func() error {
		fd, err := holdTun("tvtx0")
		held = fd
		return err
	}); err != nil {
		t.Fatalf("open tvtx0: %v", err)
	}
	defer unix.Close(held)
	tests := []struct {
		ifname  string
		subnets []netip.Prefix
		want    string // "" for nil
	}{
		{"tvtx0", []netip.Prefix{p("100.64.9.0/24")}, fmt.Sprintf("interface tvtx0 already exists (its TUN device is held by %s, pid %d)", comm(t), os.Getpid())},
		{"lo", nil, "interface lo already exists (not a TUN device)"},
		{"tvty0", []netip.Prefix{p("100.64.0.0/25")}, "tunnel subnet 100.64.0.0/25 overlaps the address 100.64.0.1/24 on tvtx0"},
		{"tvty0", []netip.Prefix{p("100.64.9.0/24"), p("198.19.0.0/16")}, "tunnel subnet 198.19.0.0/16 overlaps the route 198.19.5.0/28 on lo"},
		{"tvty0", []netip.Prefix{p("100.64.9.0/24"), p("fd00:64::/64")}, ""},
	}
	for _, tt := range tests {
		err := n.Do(func() error { return routing.CheckFree(tt.ifname, tt.subnets) })
		var ce *routing.ConflictError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckFree(%s, %v) = %v, want nil", tt.ifname, tt.subnets, err)
		case tt.want != "" && (!errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("CheckFree(%s, %v) = %v, want a ConflictError %q", tt.ifname, tt.subnets, err, tt.want)
		}
	}
}

// holdTun opens the TUN device ifname (in the calling thread's namespace),
// as a daemon does, and returns the descriptor.
func holdTun(ifname string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// comm returns the command name of this process, as /proc shows it.
func comm(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
