// Package server is the tlsvpn gateway that tunneld runs: it claims its
// instance (TUN name, subnets, state directory, control socket), opens
// the address pools and their leases, the TUN device, the routes and the
// firewall, accepts clients through a tunnel.Server, and serves the
// metrics endpoint and the control socket. It owns its goroutines and
// state; Reload applies a changed configuration, Status reports what the
// control socket's status and clients commands show.
//
// The state that gateways of a fleet share (the address leases, the
// revocation list, the session ticket keys and the session directory) is
// reached only through package state's interfaces; see there which
// implementation is used when, and fleet.go for state: etcd.
//
// The life of a Server: New checks and claims everything that can fail
// (nothing else starts); Run serves until its context ends and closes
// everything; Close undoes New when Run is not called.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/certs"
	"tlsvpn/control"
	"tlsvpn/internal/service"
	"tlsvpn/routing"
	"tlsvpn/routing/bgp"
	"tlsvpn/state"
	"tlsvpn/transport"
	"tlsvpn/tun"
	"tlsvpn/tunnel"

	"github.com/prometheus/client_golang/prometheus"
)

// Options are what a server runs with besides its configuration.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Level is the logger's level, which a reload sets from
	// Config.LogLevel; nil: a reload leaves the level alone.
	Level *slog.LevelVar
	// Source re-reads the configuration for Reload (and SIGHUP), e.g.
	// tunneld's config file under its command line; an error keeps the
	// configuration in force and is reported as it is. nil: Reload fails.
	Source func() (Config, error)
	// TicketKeys are the TLS session ticket keys; nil: random keys in
	// memory, rotated daily (state.MemoryTicketKeys).
	TicketKeys state.TicketKeys
	// Directory is told which client identities have a session here;
	// nil: one in memory (state.MemoryDirectory) named after the listen
	// address.
	Directory state.Directory
	// Version names this build in Status, e.g. tunneld's release stamp;
	// "": the module version and revision from the build information.
	Version string
}

// Server is a running (or ready to run) tlsvpn gateway.
type Server struct {
	cfg         Config
	log         *slog.Logger
	congestion  string // what TuneTCP sets ("": the system's)
	ctl         *control.Server
	pool, pool6 state.Leases // pool6 nil without Subnet6
	fleet       *fleet       // nil without state: etcd
	tickets     state.TicketKeys
	ticketSet   [][32]byte // the ticket keys New handed to srv
	dir         state.Directory
	bgp         *announcer // nil without Config.BGP
	ln          net.Listener
	share       *transport.ShareListener // nil without ShareBackend; also ln
	dev         tun.Device
	fw          routing.Firewall // nil without forwarding
	srv         *tunnel.Server
	stats       *tunnel.Stats
	limits      *tunnel.Limiter
	rl          *reloader
	cs          *controlSource
	undo        []func() // what New set up, undone in reverse order by Close

	mu     sync.Mutex
	served bool // Run reached tunnel.Server.Serve, which closes dev
	closed bool
}

// New checks cfg and claims and opens what the server needs, in the order
// in which a conflict must be found before anything is changed: the
// control socket (a live one means the instance runs already), the
// instance (TUN name, subnets, state directory), the leases and clients
// policy, the certificates and CRL, the listen address, then the TUN
// device, its addresses, forwarding and the firewall. On error all of it
// is undone. ctx bounds the start-up's netlink calls.
func New(ctx context.Context, cfg Config, opts Options) (_ *Server, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	name := cfg.Congestion
	if name == "" {
		name = service.DefaultCongestion
	}
	congestion, note, err := service.Congestion(name, cfg.Congestion != "")
	if err != nil {
		return nil, err
	}
	if note != "" {
		log.Warn(note)
	}
	s.congestion = congestion
	// The control socket first: a live one means this instance already
	// runs, and nothing else may be touched.
	controlPath := cfg.Control
	if cfg.NoControl {
		controlPath = ""
	}
	if s.ctl, err = control.ListenOptional(controlPath, control.Options{Group: cfg.ControlGroup, Logger: log}); err != nil {
		return nil, err
	}
	s.onClose(func() { s.ctl.Close() })
	// Nothing is created or changed before this instance is known to
	// collide with no other (TUN name, subnets, state directory; the
	// listen address is bound before the TUN device is made).
	inst, err := claimInstance(cfg, log)
	if err != nil {
		return nil, err
	}
	s.onClose(inst.release)
	if s.fleet, err = openFleet(ctx, cfg, log); err != nil {
		return nil, err
	}
	if s.fleet != nil {
		s.onClose(func() { s.fleet.store.Close() })
	}
	openPool := func(p netip.Prefix, file string) (state.Leases, error) {
		if s.fleet != nil {
			return s.fleet.leases(p)
		}
		path := "" // leases in memory only
		if inst.stateDir != "" {
			path = filepath.Join(inst.stateDir, file)
		}
		pool, warnings, err := state.OpenLeases(p, path)
		for _, w := range warnings {
			log.Warn("leases", "warning", w)
		}
		return pool, err
	}
	if s.pool, err = openPool(cfg.Subnet, "leases.json"); err != nil {
		return nil, fmt.Errorf("address pool for --subnet %v: %w", cfg.Subnet, err)
	}
	s.onClose(func() { s.pool.Flush() })
	if cfg.Subnet6.IsValid() {
		if s.pool6, err = openPool(cfg.Subnet6, "leases6.json"); err != nil {
			return nil, fmt.Errorf("address pool for --subnet6 %v: %w", cfg.Subnet6, err)
		}
		s.onClose(func() { s.pool6.Flush() })
	}
	clients, policySource, err := s.startPolicy(cfg) // the fleet's in etcd, else cfg.Policy
	if err != nil {
		return nil, err
	}
	if clients != nil {
		if _, err := clients.Pin(s.pool, s.pool6); err != nil {
			return nil, fmt.Errorf("clients policy %s: %w", policySource, err)
		}
		log.Info("client policies loaded", "file", policySource, "clients", len(clients))
	}
	var policies atomic.Pointer[policySet]
	policies.Store(&policySet{clients: clients, reach: cfg.ClientToClient})

	tlsCfg, err := certs.ServerConfig(cfg.Cert, cfg.Key, cfg.CA)
	if err != nil {
		return nil, err
	}
	service.WarnKeyFile(log, cfg.Key)
	warnExpiry(log, "server certificate", cfg.Cert, certs.LeafExpiry(tlsCfg))
	// The revocation list in force (a reload may switch it) is checked on
	// every handshake and, with expiry, on live sessions.
	crl := new(crlHolder)
	tlsCfg = crl.wrap(tlsCfg)
	if s.fleet != nil {
		rev, err := s.fleet.revocation(cfg.CA)
		if err != nil {
			return nil, err
		}
		crl.store(rev)
		log.Info("revocation list followed in the fleet's store", "key", rev.Path())
	} else if cfg.CRL != "" {
		rev, err := OpenCRL(cfg.CA, cfg.CRL)
		if err != nil {
			return nil, err
		}
		crl.store(rev)
		log.Info("revocation list loaded", "file", cfg.CRL)
	} else {
		log.Warn("no --crl: revoked client certificates cannot be refused; create one with 'tunneld pki revoke' or 'tunneld pki crl'")
	}

	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, service.ListenError("--listen", cfg.Listen, err)
	}
	s.onClose(func() { s.ln.Close() })
	if cfg.ShareBackend != "" {
		if err := s.shareListener(cfg); err != nil {
			return nil, err
		}
	}

	if s.dev, err = tun.Open(cfg.TUN, cfg.MTU, tun.Options{Logger: log}); err != nil {
		return nil, err
	}
	mgr, err := routing.NewManager(routing.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	s.onClose(func() {
		if err := mgr.Close(); err != nil {
			log.Warn("removing addresses and routes", "err", err)
		}
	})
	serverPrefix := netip.PrefixFrom(s.pool.ServerAddr(), cfg.Subnet.Bits())
	tunAddrs := []netip.Prefix{serverPrefix}
	if s.pool6 != nil {
		tunAddrs = append(tunAddrs, netip.PrefixFrom(s.pool6.ServerAddr(), cfg.Subnet6.Bits()))
	}
	base := routing.Config{Interface: cfg.TUN, MTU: cfg.MTU, Addresses: tunAddrs}
	if err := mgr.Set(ctx, base); err != nil {
		return nil, err
	}

	// Routing between the tunnel and other networks: forwarding on, TCP
	// MSS clamped on forwarded SYNs (no PMTU black holes toward links with
	// a smaller MTU), masquerading with NAT, and client isolation (only
	// reach_clients clients open connections to other clients). All of it
	// is undone at exit; tunneld --cleanup removes the nftables table
	// after a crash.
	var fc routing.FirewallConfig
	if cfg.needsForwarding() {
		restore, err := routing.EnableForwarding(cfg.TUN, s.pool6 != nil, log)
		if err != nil {
			return nil, err
		}
		s.onClose(func() {
			if err := restore(); err != nil {
				log.Warn("restoring forwarding settings", "err", err)
			}
		})
		fw, err := routing.NewFirewall(routing.FirewallOptions{Instance: cfg.TUN, Logger: log})
		if err != nil {
			return nil, err
		}
		s.fw = fw
		s.onClose(func() {
			if err := fw.Close(); err != nil {
				log.Warn("removing nftables table", "err", err)
			}
		})
		fc = serverFirewall(cfg.TUN, cfg.NAT, cfg.Subnet, cfg.Subnet6)
		if err := fw.Set(ctx, fc); err != nil {
			return nil, err
		}
		log.Info("forwarding between the tunnel and other networks", "nat", cfg.NAT, "clamp_mss", true, "client_to_client", cfg.ClientToClient)
	}
	s.stats = new(tunnel.Stats)
	s.limits = tunnel.NewLimiter(cfg.limitConfig())
	maxConns, nofile := connectionLimit(cfg.MaxConnections)
	log.Info("connection limits", "max_connections", maxConns, "descriptors", nofile, "limits", fmt.Sprintf("%+v", s.limits.Config()))
	scfg := tunnel.ServerConfig{
		TLS:              tlsCfg,
		Identity:         certs.PeerIdentity,
		Dev:              s.dev,
		Pool:             s.pool,
		Subnet:           cfg.Subnet,
		ServerAddr:       s.pool.ServerAddr(),
		Subnet6:          cfg.Subnet6,
		MTU:              cfg.MTU,
		Routes:           cfg.Routes,
		DNS:              cfg.DNS,
		Keepalive:        cfg.Keepalive,
		HandshakeTimeout: cfg.HandshakeTimeout,
		HelloTimeout:     cfg.HelloTimeout,
		MaxConnections:   maxConns,
		QueueLen:         cfg.QueueLen,
		NoOffload:        cfg.NoOffload,
		StdlibRecords:    cfg.StdlibTLSRecords,
		OwnAESGCM:        service.RecordLayer(log, cfg.StdlibTLSRecords, cfg.OwnAESGCM),
		Limits:           s.limits,
		TuneConn:         func(c net.Conn) { service.TuneTCP(c, 3*cfg.Keepalive, congestion) },
		CheckPeer:        crl.checkPeer,
		Policy:           func(id string) tunnel.Policy { return policies.Load().policy(id) },
		PeersChanged:     peersChanged(base, fc, mgr, s.fw, log),
		Logger:           log,
		Stats:            s.stats,
	}
	if s.pool6 != nil { // a nil Leases must not become a non-nil Assigner
		scfg.Pool6, scfg.ServerAddr6 = s.pool6, s.pool6.ServerAddr()
	}
	if s.dir = opts.Directory; s.dir == nil && s.fleet != nil {
		s.dir = s.fleet.dir
	} else if s.dir == nil {
		s.dir = state.NewMemoryDirectory(s.ln.Addr().String())
	}
	scfg.Claimed, scfg.Released = s.dir.Claim, s.dir.Release
	if cfg.BGP != nil {
		bc := *cfg.BGP
		bc.Logger = log
		sp, err := bgp.Start(context.Background(), bc)
		if err != nil {
			return nil, err
		}
		s.onClose(sp.Close) // withdraws every route
		s.bgp = newAnnouncer(sp, s.pool, s.pool6, log)
		claim, release, changed := scfg.Claimed, scfg.Released, scfg.PeersChanged
		scfg.Claimed = func(id string) { claim(id); s.bgp.claim(id) }
		scfg.Released = func(id string) { release(id); s.bgp.release(id) }
		scfg.PeersChanged = func(p []tunnel.Peer) { changed(p); s.bgp.peers(p) }
	}
	if s.srv, err = tunnel.NewServer(scfg); err != nil {
		return nil, err
	}
	if s.fleet != nil {
		s.fleet.replaceOnOtherGateway(s.srv)
	}
	// Session tickets are sealed with keys from s.tickets, not with
	// crypto/tls's own, so that a fleet can share them.
	if s.tickets = opts.TicketKeys; s.tickets == nil && s.fleet != nil {
		s.tickets = s.fleet.tickets
	} else if s.tickets == nil {
		s.tickets = state.NewMemoryTicketKeys(state.TicketKeysOptions{})
	}
	if s.ticketSet, err = s.tickets.Keys(); err != nil {
		return nil, fmt.Errorf("session ticket keys: %w", err)
	}
	s.srv.SetSessionTicketKeys(s.ticketSet)
	s.rl = newReloader(&reloader{src: opts.Source, level: opts.Level, pool: s.pool, pool6: s.pool6, policies: &policies,
		srv: s.srv, limits: s.limits, crl: crl, share: s.share, forwarding: s.fw != nil, log: log}, cfg)
	s.cs = &controlSource{srv: s.srv, stats: s.stats, limits: s.limits, reload: s.rl, crl: crl, share: s.share, shareBackend: cfg.ShareBackend,
		listen: s.ln.Addr().String(), tun: cfg.TUN, subnets: cfg.tunnelSubnets(),
		certFile: cfg.Cert, certEnd: certs.LeafExpiry(tlsCfg), version: opts.Version, bgp: s.bgp}
	if s.fleet != nil {
		s.rl.crlChanged = s.fleet.store.CRLChanged()
		s.rl.fleetPolicy = s.fleet.policy
		s.cs.store = s.fleet.status
		s.cs.fleetSessions = func() []control.FleetSession { return s.fleet.sessions(s.pool, s.pool6) }
	}
	if s.cs.version == "" {
		s.cs.version = buildVersion()
	}
	s.cs.started = time.Now()
	s.cs.rate = newRateMeter(s.cs.started, s.stats.SessionsOpened.Load())
	return s, nil
}

// peersChanged returns the tunnel.Server's PeersChanged hook. Networks
// behind clients (site gateways) get kernel routes into the tunnel while
// their session lives; the firewall (nil without forwarding) lets
// reach_clients clients (and their networks) open connections to other
// clients. Most sessions change neither (no networks, no reach_clients),
// so only a change of the desired state costs netlink calls: a crowd of
// clients reconnecting after a restart must not rewrite the nftables
// table once per client. (Calls are serialized by the server.)
func peersChanged(base routing.Config, fc routing.FirewallConfig, mgr routing.Manager, fw routing.Firewall, log *slog.Logger) func([]tunnel.Peer) {
	appliedRC := fmt.Sprint(base.Normalized())
	appliedFC := fmt.Sprint(fc.Normalized())
	return func(peers []tunnel.Peer) {
		rc, c := peerState(base, fc, peers)
		ctx := context.Background() // also on the way out: sessions end after Run's context
		if d := fmt.Sprint(rc.Normalized()); d != appliedRC {
			if err := mgr.Set(ctx, rc); err != nil {
				log.Error("routes to networks behind clients", "err", err)
			} else {
				appliedRC = d
			}
		}
		if d := fmt.Sprint(c.Normalized()); fw != nil && d != appliedFC {
			if err := fw.Set(ctx, c); err != nil {
				log.Error("client-to-client firewall rules", "err", err)
			} else {
				appliedFC = d
			}
		}
	}
}

// onClose adds f to what Close undoes (last added, first undone).
func (s *Server) onClose(f func()) { s.undo = append(s.undo, f) }

// Run serves clients until ctx ends, and then says goodbye to them and
// closes everything New opened: the TUN device, routes, firewall,
// forwarding settings, listener, leases and control socket. It also
// serves the metrics endpoint and the control socket, reloads on SIGHUP
// and checks the CRL and live sessions every Config.CRLCheck. It returns
// when all of that is done; a Server runs once.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	cfg, log := s.cfg, s.log
	if cfg.Metrics != "" {
		gauges := []service.Gauge{
			{Name: "sessions", Help: "Live client sessions.", Value: func() float64 { return float64(s.srv.Sessions()) }},
			{Name: "connections", Help: "Connections open, handshaking or in a session (--max-connections caps them).", Value: func() float64 { return float64(s.srv.Connections()) }},
		}
		if fw := s.fw; fw != nil {
			gauges = append(gauges, service.Gauge{Name: "client_isolation_drops_total", Counter: true,
				Help: "Packets between clients dropped because the sender may not reach other clients (reach_clients).",
				Value: func() float64 {
					n, _ := fw.IsolationDrops()
					return float64(n)
				}})
		}
		gauges = append(gauges, s.shareGauges()...)
		if s.fleet != nil {
			gauges = append(gauges, s.fleet.gauges()...)
		}
		if err := service.ServeMetrics(ctx, cfg.Metrics, "tunneld", s.stats, gauges, s.limits, func() bool { return !s.srv.Draining() }, log, s.leaseMetrics()...); err != nil {
			return err
		}
	}
	go s.rl.watch(ctx)
	keyCheck := ticketKeyCheck
	if s.fleet != nil {
		keyCheck = fleetTicketKeyCheck
	}
	go rotateTicketKeys(ctx, s.tickets, s.ticketSet, s.srv, keyCheck, log)
	go s.cs.rate.run(ctx, 5*time.Second, s.stats.SessionsOpened.Load)
	s.cs.ctx, s.cs.log = ctx, log
	serveControl(ctx, s.ctl, s.cs, log)
	go releaseMemory(ctx, time.Minute)
	if s.bgp != nil {
		go s.bgp.run(ctx)
	}
	log.Info("listening", "addr", s.ln.Addr().String(), "ifname", cfg.TUN,
		"tunnel_addr", netip.PrefixFrom(s.pool.ServerAddr(), cfg.Subnet.Bits()),
		"mtu", cfg.MTU, "routes", len(cfg.Routes), "keepalive", cfg.Keepalive, "congestion", service.CongestionName(s.congestion))
	service.NotifyStopping(ctx, log)
	service.NotifyReady(log, "listening on "+s.ln.Addr().String())
	s.mu.Lock()
	s.served = true
	s.mu.Unlock()
	err := s.srv.Serve(ctx, s.ln) // closes dev
	log.Info("stopped", service.StatsAttrs(s.stats)...)
	return err
}

// Close undoes what New set up, in reverse order: the firewall,
// forwarding, routes and addresses, the listener, the leases (flushed),
// the state directory's lock and the control socket; the TUN device is
// closed first unless Run served on it. Run calls it on its way out;
// after that, and on a second call, it does nothing.
func (s *Server) Close() {
	s.mu.Lock()
	done, served := s.closed, s.served
	s.closed = true
	s.mu.Unlock()
	if done {
		return
	}
	if s.dev != nil && !served {
		s.dev.Close()
	}
	for _, f := range slices.Backward(s.undo) {
		f()
	}
}

// Reload re-reads the configuration from Options.Source and the clients
// policy and applies what changed, and returns what it did in words. A
// configuration that does not read or validate changes nothing; the
// error says why (SIGHUP and the control socket's reload call it too).
func (s *Server) Reload() (string, error) { return s.rl.Reload() }

// Status is what 'tunneld status' shows: uptime, addresses, sessions,
// bytes, handshake rates, refusals, certificate and CRL expiry.
func (s *Server) Status() control.ServerStatus { return s.cs.status(time.Now()) }

// Clients is what 'tunneld clients' shows, one entry per session; the RTT
// of sessions without a keepalive in the last minute is measured first
// (for at most a second, or until ctx ends).
func (s *Server) Clients(ctx context.Context) []control.Session { return s.cs.clients(ctx) }

// Kick closes the session of the client whose certificate name is id,
// and says what it closed; an error if none is connected.
func (s *Server) Kick(id string) (string, error) {
	res, err := s.cs.kick(id)
	if err != nil {
		return "", err
	}
	return res.(message).Message, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// connectionLimit raises the descriptor limit to its hard limit and
// returns the connection cap to use (flag: 0 derives it, -1 turns it off)
// and the descriptor limit. The cap leaves room for what else the daemon
// opens (TUN, netlink, files, metrics): without it, accept would fail
// with EMFILE and so would the leases file and CRL reloads.
func connectionLimit(flag int) (maxConns int, nofile uint64) {
	nofile = raiseNoFile()
	switch {
	case flag > 0:
		return flag, nofile
	case flag < 0 || nofile == 0:
		return 0, nofile
	}
	reserve := uint64(max(64, nofile/16))
	if nofile <= reserve {
		return 1, nofile
	}
	return int(min(nofile-reserve, 1<<30)), nofile
}

// releaseMemory gives freed heap back to the system every interval once
// a good deal of it sits unused: after a crowd of clients has come and
// gone (a restart, a reconnect storm), the Go runtime would otherwise keep
// the pages of their sessions for a long while, and RSS would stay at the
// crowd's level. It acts only when the unused heap is at least 32 MiB and
// a quarter of the heap in use, since each time costs a full garbage
// collection (at 10,000 sessions, a tenth of the idle CPU if done every
// minute).
func releaseMemory(ctx context.Context, every time.Duration) {
	const worthIt = 32 << 20
	samples := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		if samples[0].Value.Kind() != metrics.KindUint64 || samples[1].Value.Kind() != metrics.KindUint64 {
			return // not this runtime's metrics: nothing to go by
		}
		if free := samples[0].Value.Uint64(); free > worthIt && free > samples[1].Value.Uint64()/4 {
			debug.FreeOSMemory()
		}
	}
}

// warnExpiry logs when a certificate expires, as a warning within 30 days.
func warnExpiry(log *slog.Logger, what, file string, notAfter time.Time) {
	left := time.Until(notAfter)
	switch {
	case left < 0:
		log.Error(what+" has expired", "file", file, "not_after", notAfter)
	case left < 30*24*time.Hour:
		log.Warn(what+" expires soon: issue a new one with 'tunneld pki issue'", "file", file, "not_after", notAfter, "days_left", int(left.Hours()/24))
	default:
		log.Debug(what, "file", file, "not_after", notAfter)
	}
}

// serverFirewall is the server's nftables state when it forwards: MSS
// clamping, client isolation, and masquerading of the tunnel subnets with
// nat (subnet6 invalid without an IPv6 pool).
func serverFirewall(ifname string, nat bool, subnet, subnet6 netip.Prefix) routing.FirewallConfig {
	fc := routing.FirewallConfig{TunnelIf: ifname, ClampMSS: true, IsolateClients: true}
	if nat {
		fc.Masquerade = []netip.Prefix{subnet}
		if subnet6.IsValid() {
			fc.Masquerade = append(fc.Masquerade, subnet6)
		}
	}
	return fc
}

// peerState adds to the server's interface state (base) and firewall
// (fc) what the live sessions need: a route for every network behind a
// client, and the reach_clients clients' addresses and networks as the
// sources that may open connections to other clients.
func peerState(base routing.Config, fc routing.FirewallConfig, peers []tunnel.Peer) (routing.Config, routing.FirewallConfig) {
	base.Routes = slices.Clone(base.Routes)
	fc.ReachClients = nil
	for _, p := range peers {
		base.Routes = append(base.Routes, p.Nets...)
		if p.ReachClients {
			for _, a := range p.Addrs {
				fc.ReachClients = append(fc.ReachClients, netip.PrefixFrom(a, a.BitLen()))
			}
			fc.ReachClients = append(fc.ReachClients, p.Nets...)
		}
	}
	return base, fc
}

// ticketKeyCheck is how often the session ticket keys are asked for:
// a rotation takes effect within this time.
const ticketKeyCheck = time.Minute

// rotateTicketKeys asks keys for the ticket keys every interval until
// ctx ends, and hands them to srv when they differ from those it has
// (cur): a rotation. An error keeps the keys in force (logged once until
// the keys are available again).
func rotateTicketKeys(ctx context.Context, keys state.TicketKeys, cur [][32]byte, srv interface{ SetSessionTicketKeys([][32]byte) }, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next, err := keys.Keys()
		switch {
		case err != nil:
			if !failing {
				log.Warn("session ticket keys: keeping the keys in force", "err", err)
			}
			failing = true
			continue
		case failing:
			log.Info("session ticket keys available again")
		}
		failing = false
		if !slices.Equal(next, cur) {
			srv.SetSessionTicketKeys(next)
			cur = next
			log.Debug("session ticket keys rotated", "keys", len(next))
		}
	}
}

// leaseMetrics are the lease journal's histogram of durable appends and
// count of leases written, fed by the pools that write a journal (with a
// --state-dir, outside a fleet).
func (s *Server) leaseMetrics() []prometheus.Collector {
	syncs := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tunneld_lease_sync_seconds",
		Help: "Appends to the lease journals (leases.json.journal, leases6.json.journal) under --state-dir: the write and fsync that a new identity waits for before its CONFIG. High values mean a slow disk there.",
		// 0.1 ms to about 1 s.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 11),
	})
	leases := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tunneld_leases_written_total",
		Help: "New leases and pinned addresses made durable in the lease journals; divided by tunneld_lease_sync_seconds_count, the leases that one fsync covered.",
	})
	observe := func(d time.Duration, n int) {
		syncs.Observe(d.Seconds())
		leases.Add(float64(n))
	}
	for _, p := range []state.Leases{s.pool, s.pool6} {
		if o, ok := p.(interface {
			ObserveWrites(func(time.Duration, int))
		}); ok {
			o.ObserveWrites(observe)
		}
	}
	return []prometheus.Collector{syncs, leases}
}
