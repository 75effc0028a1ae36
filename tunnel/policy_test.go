package tunnel_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

var (
	lanB = netip.MustParsePrefix("198.18.20.0/24")
	lanC = netip.MustParsePrefix("198.18.40.0/24")
)

// peerLog records what the server reports through PeersChanged.
type peerLog struct {
	mu   sync.Mutex
	last []tunnel.Peer
}

func (l *peerLog) set(p []tunnel.Peer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = p
}

func (l *peerLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := ""
	for _, p := range l.last {
		s += fmt.Sprintf("%s addrs=%v nets=%v reach=%v\n", p.Identity, p.Addrs, p.Nets, p.ReachClients)
	}
	return s
}

// TestPairSiteNetworks: a site gateway's advertised networks are accepted
// only as its policy allows, routed to it, and allowed as sources; another
// client cannot claim them.
func TestPairSiteNetworks(t *testing.T) {
	var mu sync.Mutex
	policies := map[string]tunnel.Policy{
		"site-b":  {Advertise: []netip.Prefix{netip.MustParsePrefix("198.18.16.0/20")}, ReachClients: true},
		"intrude": {Advertise: []netip.Prefix{netip.MustParsePrefix("198.18.30.0/24")}},
	}
	var peers peerLog
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{
		Policy: func(id string) tunnel.Policy {
			mu.Lock()
			defer mu.Unlock()
			return policies[id]
		},
		PeersChanged: peers.set,
	})
	// site-b announces its LAN (allowed: inside 198.18.16.0/20) and a
	// network it was not given.
	gw := srv.StartClientHello(t, "site-b", lanB, lanC)
	if want := []netip.Prefix{lanB}; !slices.Equal(gw.Config.Accepted, want) {
		t.Fatalf("accepted = %v, want %v", gw.Config.Accepted, want)
	}
	if n := srv.Stats.AdvertiseRefused.Load(); n != 1 {
		t.Fatalf("AdvertiseRefused = %d, want 1 (198.18.40.0/24)", n)
	}
	if got, want := peers.String(), "site-b addrs=[100.64.0.2] nets=[198.18.20.0/24] reach=true\n"; got != want {
		t.Fatalf("peers = %q, want %q", got, want)
	}

	hostA, hostB := netip.MustParseAddr("198.18.10.2"), netip.MustParseAddr("198.18.20.2")
	// From the LAN behind the server to a host behind site-b: routed to
	// the gateway's session.
	down := tunneltest.UDP4(hostA, hostB, []byte("to site b"))
	srv.Dev.Inbound <- down
	tunneltest.Expect(t, gw.Dev.Outbound, down)
	// Back, with the LAN host's source address: allowed.
	up := tunneltest.UDP4(hostB, hostA, []byte("from site b"))
	gw.Dev.Inbound <- up
	tunneltest.Expect(t, srv.Dev.Outbound, up)
	// A source in the refused network is spoofed.
	spoof := tunneltest.UDP4(netip.MustParseAddr("198.18.40.5"), hostA, []byte("spoof"))
	gw.Dev.Inbound <- spoof
	gw.Dev.Inbound <- up
	tunneltest.Expect(t, srv.Dev.Outbound, up)
	if n := srv.Stats.DropSpoofed.Load(); n != 1 {
		t.Fatalf("DropSpoofed = %d, want 1", n)
	}

	// A third client may not claim site-b's network: not in its policy,
	// and it overlaps site-b's even where its policy would allow it.
	mu.Lock()
	policies["intrude"] = tunnel.Policy{Advertise: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}}
	mu.Unlock()
	in := srv.StartClientHello(t, "intrude", lanB, netip.MustParsePrefix("198.18.20.128/25"), netip.MustParsePrefix("100.64.0.0/25"))
	if len(in.Config.Accepted) != 0 {
		t.Fatalf("intruder got %v accepted", in.Config.Accepted)
	}
	if n := srv.Stats.AdvertiseRefused.Load(); n != 4 {
		t.Fatalf("AdvertiseRefused = %d, want 4", n)
	}
	srv.Dev.Inbound <- down
	tunneltest.Expect(t, gw.Dev.Outbound, down) // still site-b's
	in.Dev.Inbound <- tunneltest.UDP4(hostB, hostA, []byte("spoof"))
	in.Dev.Inbound <- tunneltest.UDP4(in.Config.Addr.Addr(), hostA, []byte("own"))
	tunneltest.Expect(t, srv.Dev.Outbound, tunneltest.UDP4(in.Config.Addr.Addr(), hostA, []byte("own")))
	if n := srv.Stats.DropSpoofed.Load(); n != 2 {
		t.Fatalf("DropSpoofed = %d, want 2", n)
	}

	// Policy change: site-b may no longer announce anything; its session
	// is closed to apply it, the intruder's is untouched (its policy is
	// unchanged).
	mu.Lock()
	policies["site-b"] = tunnel.Policy{ReachClients: true}
	mu.Unlock()
	if got := srv.Server.Policies(); !slices.Equal(got, []string{"site-b"}) {
		t.Fatalf("Policies() closed %v, want [site-b]", got)
	}
	tunneltest.Eventually(t, func() bool { return !strings.Contains(peers.String(), "site-b") }, "site-b still registered: %s", &peers)
	// The intruder has neither networks nor reach_clients: not reported.
	if got, want := peers.String(), ""; got != want {
		t.Fatalf("peers = %q, want %q", got, want)
	}
	// With site-b gone its network is unrouted.
	srv.Dev.Inbound <- down
	tunneltest.Eventually(t, func() bool { return srv.Stats.DropNoSession.Load() == 1 }, "DropNoSession = %d, want 1", &srv.Stats.DropNoSession)
	// A reach_clients change alone applies without closing anything.
	mu.Lock()
	policies["intrude"] = tunnel.Policy{Advertise: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}, ReachClients: true}
	mu.Unlock()
	if got := srv.Server.Policies(); len(got) != 0 {
		t.Fatalf("Policies() closed %v, want none", got)
	}
	if got, want := peers.String(), "intrude addrs=[100.64.0.3] nets=[] reach=true\n"; got != want {
		t.Fatalf("peers = %q, want %q", got, want)
	}
}
