package routing

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// UpstreamResolvConf lists the servers systemd-resolved forwards to; read
// when ResolvConf names only its stub on the loopback (127.0.0.53).
var UpstreamResolvConf = "/run/systemd/resolve/resolv.conf"

// ProbeNameservers returns the DNS servers of the network the host is on,
// for a captive portal probe that must resolve a name outside the tunnel:
// those of ResolvConf, or of what it held before SetDNS rewrote it, or,
// behind a stub resolver on the loopback, those of UpstreamResolvConf;
// without loopback addresses and without the ones in exclude (the
// tunnel's own, which only the tunnel reaches). It returns none when it
// cannot tell.
func ProbeNameservers(exclude []netip.Addr) []netip.Addr {
	content, err := os.ReadFile(ResolvConf)
	if err != nil {
		return nil
	}
	if old, ours, err := savedResolvConf(content); ours && err == nil {
		content = old
	}
	all := nameservers(content)
	if len(all) > 0 && !slices.ContainsFunc(all, func(a netip.Addr) bool { return !a.IsLoopback() }) {
		if up, err := os.ReadFile(UpstreamResolvConf); err == nil {
			all = nameservers(up)
		}
	}
	return slices.DeleteFunc(all, func(a netip.Addr) bool { return a.IsLoopback() || slices.Contains(exclude, a) })
}

// nameservers returns the addresses of the nameserver lines of a
// resolv.conf (zones dropped).
func nameservers(content []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, a.WithZone("").Unmap())
		}
	}
	return out
}
