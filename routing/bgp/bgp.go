// Package bgp announces a gateway's routes to the network's routers over
// BGP, so that traffic for a client's tunnel address (and for the networks
// behind a site gateway) reaches the gateway that holds the client now.
// The BGP speaker is GoBGP (github.com/osrg/gobgp), used as a library: no
// gRPC API is opened, and nothing is learned from the peers (they are
// told, not asked). When the gateway dies, its BGP sessions die with it,
// and the routers drop its routes.
package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

// Peer is a router to announce to.
type Peer struct {
	Addr netip.Addr
	Port uint16 // 0: 179
	ASN  uint32
}

// ParsePeer parses a peer as tunneld's --bgp-peer gives it: ASN@ADDRESS,
// e.g. 65000@198.18.20.1 or 65000@2001:db8::1, with :PORT after the
// address (an IPv6 one in brackets) when the router does not listen on
// 179.
func ParsePeer(s string) (Peer, error) {
	as, addr, ok := strings.Cut(s, "@")
	if !ok {
		return Peer{}, fmt.Errorf("%q: want ASN@ADDRESS, e.g. 65000@198.18.20.1", s)
	}
	n, err := strconv.ParseUint(as, 10, 32)
	if err != nil || n == 0 {
		return Peer{}, fmt.Errorf("%q: the AS number must be 1 to 4294967295", s)
	}
	if a, err := netip.ParseAddr(addr); err == nil && a.Zone() == "" {
		return Peer{Addr: a.Unmap(), ASN: uint32(n)}, nil
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Zone() == "" && ap.Port() != 0 {
		return Peer{Addr: ap.Addr().Unmap(), Port: ap.Port(), ASN: uint32(n)}, nil
	}
	return Peer{}, fmt.Errorf("%q: want an IP address after @ (with :PORT if not 179; IPv6 in brackets then)", s)
}

func (p Peer) String() string {
	if p.Port != 0 {
		return fmt.Sprintf("%d@%s", p.ASN, netip.AddrPortFrom(p.Addr, p.Port))
	}
	return fmt.Sprintf("%d@%s", p.ASN, p.Addr)
}

// Config configures a Speaker.
type Config struct {
	ASN      uint32     // the gateway's AS number
	RouterID netip.Addr // an IPv4 address unique among the routers
	Peers    []Peer
	// NextHop and NextHop6 are the addresses the routers send the
	// announced traffic to (the gateway's address on their network).
	// Invalid: the local address of each BGP session (IPv4), or no IPv6
	// routes are announced.
	NextHop, NextHop6 netip.Addr
	Logger            *slog.Logger
}

// Validate checks c, naming the setting at fault by its tunneld flag.
func (c Config) Validate() error {
	switch {
	case c.ASN == 0:
		return errors.New("--bgp-asn: want the gateway's AS number")
	case !c.RouterID.Is4():
		return errors.New("--bgp-router-id: want an IPv4 address")
	case len(c.Peers) == 0:
		return errors.New("--bgp-peer: want at least one router, ASN@ADDRESS")
	case c.NextHop.IsValid() && !c.NextHop.Is4():
		return errors.New("--bgp-next-hop: want an IPv4 address")
	case c.NextHop6.IsValid() && !c.NextHop6.Is6():
		return errors.New("--bgp-next-hop6: want an IPv6 address")
	}
	return nil
}

// PeerStatus is a peer's state for status output.
type PeerStatus struct {
	Peer     Peer
	State    string // idle, connect, active, opensent, openconfirm, established
	Since    time.Time
	Accepted uint64 // routes it announced to us (we ignore them)
}

// Speaker is a running BGP speaker. Set tells it the routes to announce;
// it announces what is new and withdraws what is gone.
type Speaker struct {
	cfg Config
	log *slog.Logger
	bgp *server.BgpServer

	mu        sync.Mutex
	announced map[netip.Prefix][]byte // prefix -> GoBGP's path id
	since     map[string]time.Time    // peer address -> last state change
}

// Start starts a speaker and connects to the peers (it does not listen:
// it opens the BGP sessions itself).
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Speaker{cfg: cfg, log: cfg.Logger, announced: map[netip.Prefix][]byte{}, since: map[string]time.Time{}}
	s.bgp = server.NewBgpServer(server.LoggerOption(logger{cfg.Logger}))
	go s.bgp.Serve()
	if err := s.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: -1,
	}}); err != nil {
		s.bgp.Stop()
		return nil, fmt.Errorf("bgp: %w", err)
	}
	if err := s.bgp.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.peerEvent); err != nil {
		s.bgp.Stop()
		return nil, fmt.Errorf("bgp: %w", err)
	}
	for _, p := range cfg.Peers {
		fams := []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family4, Enabled: true}}}
		if cfg.NextHop6.IsValid() {
			fams = append(fams, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: family6, Enabled: true}})
		}
		err := s.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: p.ASN},
			AfiSafis:  fams,
			Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 5, HoldTime: 9, KeepaliveInterval: 3}},
			Transport: &api.Transport{RemotePort: uint32(cmp.Or(p.Port, 179))},
		}})
		if err != nil {
			s.bgp.Stop()
			return nil, fmt.Errorf("bgp peer %s: %w", p, err)
		}
	}
	s.log.Info("BGP speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID, "peers", fmt.Sprint(cfg.Peers))
	return s, nil
}

var (
	family4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	family6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func (s *Speaker) peerEvent(r *api.WatchEventResponse) {
	p := r.GetPeer()
	if p == nil || p.Type != api.WatchEventResponse_PeerEvent_STATE || p.Peer == nil || p.Peer.State == nil {
		return
	}
	st := p.Peer.State
	state := strings.ToLower(strings.TrimPrefix(st.SessionState.String(), "SESSION_STATE_"))
	s.mu.Lock()
	s.since[st.NeighborAddress] = time.Now()
	s.mu.Unlock()
	s.log.Info("BGP session state", "peer", st.NeighborAddress, "peer_asn", st.PeerAsn, "state", state)
}

// Set makes the announced routes exactly prefixes: new ones are
// announced, those no longer listed are withdrawn. An IPv6 prefix is
// skipped (with a warning, once per Set) when no NextHop6 is configured.
func (s *Speaker) Set(ctx context.Context, prefixes []netip.Prefix) error {
	want := map[netip.Prefix]bool{}
	skipped := 0
	for _, p := range prefixes {
		p = p.Masked()
		if p.Addr().Is6() && !s.cfg.NextHop6.IsValid() {
			skipped++
			continue
		}
		want[p] = true
	}
	if skipped > 0 {
		s.log.Warn("IPv6 routes not announced over BGP: set --bgp-next-hop6", "routes", skipped)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for p, id := range s.announced {
		if !want[p] {
			if err := s.bgp.DeletePath(ctx, &api.DeletePathRequest{Family: familyOf(p), Uuid: id}); err != nil {
				errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
				continue
			}
			delete(s.announced, p)
		}
	}
	for p := range want {
		if _, ok := s.announced[p]; ok {
			continue
		}
		path, err := s.path(p)
		if err == nil {
			var r *api.AddPathResponse
			if r, err = s.bgp.AddPath(ctx, &api.AddPathRequest{Path: path}); err == nil {
				s.announced[p] = r.Uuid
				continue
			}
		}
		errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
	}
	return errors.Join(errs...)
}

// path is the BGP path of p: origin IGP, next hop ours.
func (s *Speaker) path(p netip.Prefix) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0})
	if err != nil {
		return nil, err
	}
	var hop *anypb.Any
	if p.Addr().Is4() {
		nh := "0.0.0.0" // GoBGP: the session's local address
		if s.cfg.NextHop.IsValid() {
			nh = s.cfg.NextHop.String()
		}
		hop, err = anypb.New(&api.NextHopAttribute{NextHop: nh})
	} else {
		hop, err = anypb.New(&api.MpReachNLRIAttribute{Family: family6, NextHops: []string{s.cfg.NextHop6.String()}, Nlris: []*anypb.Any{nlri}})
	}
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: familyOf(p), Nlri: nlri, Pattrs: []*anypb.Any{origin, hop}}, nil
}

func familyOf(p netip.Prefix) *api.Family {
	if p.Addr().Is4() {
		return family4
	}
	return family6
}

// Announced returns the prefixes announced now, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.announced))
	for p := range s.announced {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// Peers returns the state of each peer.
func (s *Speaker) Peers(ctx context.Context) []PeerStatus {
	var out []PeerStatus
	s.bgp.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		a, _ := netip.ParseAddr(p.State.NeighborAddress)
		ps := PeerStatus{Peer: Peer{Addr: a, ASN: p.State.PeerAsn},
			State: strings.ToLower(strings.TrimPrefix(p.State.SessionState.String(), "SESSION_STATE_"))}
		for _, f := range p.AfiSafis {
			if f.State != nil {
				ps.Accepted += f.State.Accepted
			}
		}
		s.mu.Lock()
		ps.Since = s.since[p.State.NeighborAddress]
		s.mu.Unlock()
		out = append(out, ps)
	})
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Peer.Addr.Compare(b.Peer.Addr) })
	return out
}

// Close withdraws every route (the BGP sessions close with a
// notification) and stops the speaker.
func (s *Speaker) Close() {
	s.bgp.StopBgp(context.Background(), &api.StopBgpRequest{})
	s.bgp.Stop()
}

// logger passes GoBGP's log to slog: its chatter at debug level, its
// warnings and errors as they are.
type logger struct{ l *slog.Logger }

func attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, strings.ToLower(k), v)
	}
	return out
}

func (g logger) Panic(msg string, f gobgplog.Fields) {
	g.l.Error("bgp: "+msg, attrs(f)...)
	panic(msg)
}
func (g logger) Fatal(msg string, f gobgplog.Fields) {
	g.l.Error("bgp: "+msg, attrs(f)...)
	panic(msg)
}
func (g logger) Error(msg string, f gobgplog.Fields) { g.l.Error("bgp: "+msg, attrs(f)...) }
func (g logger) Warn(msg string, f gobgplog.Fields)  { g.l.Warn("bgp: "+msg, attrs(f)...) }
func (g logger) Info(msg string, f gobgplog.Fields)  { g.l.Debug("bgp: "+msg, attrs(f)...) }
func (g logger) Debug(msg string, f gobgplog.Fields) { g.l.Debug("bgp: "+msg, attrs(f)...) }
func (g logger) SetLevel(gobgplog.LogLevel)          {}
func (g logger) GetLevel() gobgplog.LogLevel         { return gobgplog.DebugLevel }
