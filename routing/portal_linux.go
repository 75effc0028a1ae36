package routing

// The kill switch's exceptions for a captive portal (FirewallConfig.PortalIf
// and ProbeMark), and the lookup of the interface they apply to.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// portalPorts are what a captive portal login needs: DNS over UDP and TCP,
// and HTTP and HTTPS.
var portalPorts = []struct {
	proto byte
	port  uint16
}{
	{unix.IPPROTO_UDP, 53},
	{unix.IPPROTO_TCP, 53},
	{unix.IPPROTO_TCP, 80},
	{unix.IPPROTO_TCP, 443},
}

// portalExceptions returns the matches of the host's packets that the
// portal hole and the probe mark let through the kill switch:
//
//	oifname "wlan0" udp dport 53
//	oifname "wlan0" tcp dport 53
//	oifname "wlan0" tcp dport 80
//	oifname "wlan0" tcp dport 443
//	meta mark 0x74767030 oifname != "tun0" udp dport 53
//	... (the same ports)
//
// One rule a port, as the rest of the table: no anonymous sets.
func portalExceptions(cfg FirewallConfig) [][]expr.Any {
	if !cfg.KillSwitch {
		return nil
	}
	var ms [][]expr.Any
	if cfg.PortalIf != "" {
		for _, p := range portalPorts {
			ms = append(ms, slices.Concat(
				matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, cfg.PortalIf),
				matchL4(p.proto), matchPort(false, p.port)))
		}
	}
	if cfg.ProbeMark != 0 {
		mark := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			// The mark is a host byte order integer, as nft compares it.
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, cfg.ProbeMark)},
		}
		for _, p := range portalPorts {
			ms = append(ms, slices.Concat(mark,
				matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TunnelIf),
				matchL4(p.proto), matchPort(false, p.port)))
		}
	}
	return ms
}

// EgressInterface returns the name of the interface the system's own
// routes (the main table's, neither this project's nor through tunIf) take
// to addr: the physical interface a tunnel to a server at addr runs over,
// even while a full tunnel's routes point everything else into tunIf. The
// interface tunIf must exist.
func EgressInterface(addr netip.Addr, tunIf string) (string, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return "", fmt.Errorf("open rtnetlink handle: %w", err)
	}
	defer h.Close()
	r, err := (&Bypass{addr: addr, tunIf: tunIf, h: h}).systemRoute()
	if err != nil {
		return "", err
	}
	l, err := h.LinkByIndex(r.LinkIndex)
	if err != nil {
		return "", fmt.Errorf("interface of the route to %v: %w", addr, err)
	}
	return l.Attrs().Name, nil
}
