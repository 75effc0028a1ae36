package routing

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestProbeNameservers(t *testing.T) {
	dir := t.TempDir()
	resolv, upstream := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "upstream.conf")
	oldResolv, oldUp := ResolvConf, UpstreamResolvConf
	ResolvConf, UpstreamResolvConf = resolv, upstream
	t.Cleanup(func() { ResolvConf, UpstreamResolvConf = oldResolv, oldUp })
	a := netip.MustParseAddr
	tunnelDNS := []netip.Addr{a("100.64.0.1")}
	tests := []struct {
		name     string
		resolv   string
		upstream string
		want     string
	}{
		{"plain", "search example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n", "", "[192.0.2.53 2001:db8::53]"},
		{"stub resolver", "nameserver 127.0.0.53\noptions edns0\n", "nameserver 198.18.0.53\nnameserver 100.64.0.1\n", "[198.18.0.53]"},
		{"rewritten by tunnelc", string(resolvConfContent("tunnelc0", tunnelDNS, []byte("nameserver 192.0.2.9\n"))), "", "[192.0.2.9]"},
		{"only the tunnel's", "nameserver 100.64.0.1\n", "", "[]"},
		{"none", "", "", "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile(resolv, []byte(tt.resolv), 0o644)
			os.WriteFile(upstream, []byte(tt.upstream), 0o644)
			if got := fmt.Sprint(ProbeNameservers(tunnelDNS)); got != tt.want {
				t.Errorf("ProbeNameservers() = %s, want %s", got, tt.want)
			}
		})
	}
}
