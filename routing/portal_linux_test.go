package routing_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

func TestPortalConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     routing.FirewallConfig
		wantErr bool
	}{
		{name: "hole", cfg: routing.FirewallConfig{TunnelIf: "tun0", KillSwitch: true, PortalIf: "wlan0", ProbeMark: 7}},
		{name: "hole without kill switch", cfg: routing.FirewallConfig{TunnelIf: "tun0", PortalIf: "wlan0"}, wantErr: true},
		{name: "mark without kill switch", cfg: routing.FirewallConfig{TunnelIf: "tun0", ProbeMark: 7}, wantErr: true},
		{name: "hole on the tunnel", cfg: routing.FirewallConfig{TunnelIf: "tun0", KillSwitch: true, PortalIf: "tun0"}, wantErr: true},
		{name: "long name", cfg: routing.FirewallConfig{TunnelIf: "tun0", KillSwitch: true, PortalIf: "a-very-long-name0"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, routing.ErrInvalidConfig)) {
				t.Errorf("Validate() = %v, want error %v (ErrInvalidConfig)", err, tt.wantErr)
			}
		})
	}
}

// TestNFTPortalHole opens and closes the captive portal hole of the kill
// switch, checks the exact rules, and what passes: through the hole's
// interface DNS and TCP 80/443 only, IPv4 and IPv6; with the probe's mark,
// the same ports whether the hole is open or not.
func TestNFTPortalHole(t *testing.T) {
	x, y := netnstest.New(t), netnstest.New(t)
	xIf, yIf := netnstest.Veth(t, x, netip.MustParsePrefix("198.18.5.1/24"), y, netip.MustParsePrefix("198.18.5.2/24"))
	nftAddAddr(t, x, xIf, "2001:db8:5::1/64")
	nftAddAddr(t, y, yIf, "2001:db8:5::2/64")
	const mark = 0x74767030
	ls := map[string]net.Listener{}
	for _, a := range []string{"198.18.5.2:80", "198.18.5.2:443", "198.18.5.2:53", "198.18.5.2:22", "198.18.5.2:8080",
		"[2001:db8:5::2]:80", "[2001:db8:5::2]:443", "[2001:db8:5::2]:22"} {
		ls[a] = y.Listen(t, "tcp", a)
	}
	f := newNFTFirewall(t, x)
	base := routing.FirewallConfig{TunnelIf: "tvtun0", KillSwitch: true, ProbeMark: mark}
	open := base
	open.PortalIf = xIf
	if err := f.Set(t.Context(), open); err != nil {
		t.Fatalf("Set(hole open): %v", err)
	}
	// The hole's rules follow the tunnel's accept in the output chain;
	// forwarded packets get no hole.
	got, _ := nftListOurs(t, x)
	hole := `		oifname "tvtun0" accept
		oifname "` + xIf + `" udp dport 53 accept
		oifname "` + xIf + `" tcp dport 53 accept
		oifname "` + xIf + `" tcp dport 80 accept
		oifname "` + xIf + `" tcp dport 443 accept
		meta mark 0x74767030 oifname != "tvtun0" udp dport 53 accept
		meta mark 0x74767030 oifname != "tvtun0" tcp dport 53 accept
		meta mark 0x74767030 oifname != "tvtun0" tcp dport 80 accept
		meta mark 0x74767030 oifname != "tvtun0" tcp dport 443 accept
		meta nfproto ipv4 udp sport 68 udp dport 67 accept
`
	out, fwd, ok := strings.Cut(got, "chain killswitch_forward")
	if !ok || !strings.Contains(out, hole) || strings.Contains(fwd, "dport 80") || strings.Contains(fwd, "mark") {
		t.Errorf("table with the hole open:\n%s\nwant in the output chain only:\n%s", got, hole)
	}

	check := func(step string, markSocket bool, pass, blocked []string) {
		t.Helper()
		for _, a := range pass {
			if err := portalDial(x, a, markSocket, ls[a]); err != nil {
				t.Errorf("%s: connect to %s (mark %v): %v, want it through", step, a, markSocket, err)
			}
		}
		for _, a := range blocked {
			if err := portalDial(x, a, markSocket, ls[a]); err == nil {
				t.Errorf("%s: connect to %s (mark %v) went through, want it dropped", step, a, markSocket)
			}
		}
		if out, err := nftPing(t, x, "198.18.5.2"); err == nil {
			t.Errorf("%s: ping went through, want it dropped:\n%s", step, out)
		}
	}
	through := []string{"198.18.5.2:80", "198.18.5.2:443", "198.18.5.2:53", "[2001:db8:5::2]:80", "[2001:db8:5::2]:443"}
	others := []string{"198.18.5.2:22", "198.18.5.2:8080", "[2001:db8:5::2]:22"}
	check("hole open", false, through, others)
	if err := portalUDP(x, "198.18.5.2:53", false); err != nil {
		t.Errorf("hole open: DNS over UDP: %v, want it through", err)
	}
	if err := portalUDP(x, "198.18.5.2:123", false); !errors.Is(err, syscall.EPERM) {
		t.Errorf("hole open: UDP to port 123: %v, want EPERM", err)
	}

	if err := f.Set(t.Context(), base); err != nil {
		t.Fatalf("Set(hole closed): %v", err)
	}
	check("hole closed", false, nil, append(through, others...))
	if err := portalUDP(x, "198.18.5.2:53", false); !errors.Is(err, syscall.EPERM) {
		t.Errorf("hole closed: DNS over UDP: %v, want EPERM", err)
	}
	check("hole closed, probe's mark", true, through, others)
	if err := portalUDP(x, "198.18.5.2:53", true); err != nil {
		t.Errorf("hole closed: the probe's DNS over UDP: %v, want it through", err)
	}
}

// portalDial connects from n to addr, with the probe's mark on the socket
// if mark, within a second; l is the listener there.
func portalDial(n *netnstest.NS, addr string, mark bool, l net.Listener) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = portalDialer(mark).DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return err
	}
	c.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second))
	if s, err := l.Accept(); err == nil {
		s.Close()
	}
	return nil
}

// portalUDP sends a datagram from n to addr: an error (EPERM) if the kill
// switch drops it.
func portalUDP(n *netnstest.NS, addr string, mark bool) error {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = portalDialer(mark).Dial("udp", addr)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("x"))
	return err
}

func portalDialer(mark bool) *net.Dialer {
	d := &net.Dialer{}
	if mark {
		d.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 0x74767030) }); err != nil {
				return err
			}
			return serr
		}
	}
	return d
}
