// Package client is the tlsvpn client agent that tunnelc runs: it checks
// that it can do its job before it contacts the server, creates the TUN
// device, connects to tunneld over mutually authenticated TLS 1.3 (and
// reconnects, rotates sessions, follows roaming, moves between several
// servers and comes back at once after a sleep), installs the
// address, MTU, routes and DNS servers the server pushes, keeps the full
// tunnel's route to the server and the kill switch in place, serves
// metrics and the control socket, and removes all of it when it stops.
//
// New validates a Config without touching the host; Run does the work
// until its context ends or Close is called; Status reports what
// 'tunnelc status' shows. Errors name the tunnelc flag of the Config
// field at fault (--server, --advertise, ...): tunnelc prints them as
// they are.
package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"tlsvpn/certs"
	"tlsvpn/control"
	"tlsvpn/internal/service"
	"tlsvpn/routing"
	"tlsvpn/tun"
	"tlsvpn/tunnel"
)

// DefaultTUN is the TUN interface name when Config.TUN is empty.
const DefaultTUN = "tunnelc0"

// Config is what a Client does. Each field has the meaning of the
// tunnelc flag named beside it; the zero value of a field is the flag's
// default, except Control (tunnelc passes its default socket path).
type Config struct {
	Server     string // --server HOST:PORT to connect to (required unless Servers is set)
	ServerName string // --server-name every server certificate must carry; "" is the host of each server
	Cert       string // --cert: client certificate file, PEM (required)
	Key        string // --key: client private key file, PEM (required)
	CA         string // --ca: the CA certificate file the server's must chain to (required)
	TUN        string // --tun: interface name; "" is DefaultTUN

	// Servers is --server repeated: the servers after Server (if set),
	// tried in the order servers.go describes.
	Servers []string

	// Proxy is the proxy URL to reach the server through
	// (http://[USER:PASSWORD@]HOST:PORT or socks5://...); "" for none.
	// tunnelc fills it from --proxy or the environment (HTTPS_PROXY,
	// ALL_PROXY); ProxyFrom names which, for messages ("" is --proxy).
	Proxy, ProxyFrom string
	ProxyAuthFile    string // --proxy-auth-file: USER:PASSWORD for the proxy

	HandshakeTimeout time.Duration // --handshake-timeout; 0 is 15s
	QueueLen         int           // --queue-len; 0 is tunnel.DefaultQueueLen
	MaxAttempts      int           // --max-attempts; 0 retries forever
	RotateBytes      int64         // --rotate-bytes; 0: only the TLS record budget and RotateAfter
	RotateAfter      time.Duration // --rotate-after; 0: no age limit
	NoResumption     bool          // --no-resumption

	FullTunnel bool     // --full-tunnel
	KillSwitch bool     // --kill-switch (needs FullTunnel)
	Advertise  []string // --advertise: CIDRs of networks behind this host, as given

	NoOffload     bool // --no-offload
	StdlibRecords bool // --stdlib-tls-records
	OwnAESGCM     bool // --own-aes-gcm
	// Congestion is --congestion when it was given: the outer TCP
	// connection's congestion control, an error if the kernel does not
	// have it. "" is the default, service.DefaultCongestion, with the system's
	// default (and a warning) where the kernel does not have it.
	Congestion string

	NoPortal     bool          // --no-portal: no captive portal probe, and no hole in the kill switch
	PortalProbe  string        // --portal-probe URL; "" is DefaultPortalProbe
	PortalWindow time.Duration // --portal-window; 0 is DefaultPortalWindow

	Metrics      string // --metrics ADDR:PORT for Prometheus; "" is off
	Control      string // the control socket's path (--control); "" is none
	ControlGroup string // --control-group
}

// Client is the agent: one tunnel to one server. Build it with New, run
// it with Run; Status and Close are safe to call from any goroutine.
type Client struct {
	cfg       Config
	log       *slog.Logger
	sd        *serverDialer
	proxy     *proxyDialer // nil without a proxy
	tls       *tls.Config
	congest   string // the congestion control TuneTCP sets ("" keeps the system's)
	advertise []netip.Prefix
	stats     *tunnel.Stats
	view      tunnelView
	portal    *portalWatch // nil with NoPortal; see portal.go

	mu      sync.Mutex
	tc      *tunnel.Client // set by Run
	running bool
	closed  bool
	cancel  context.CancelFunc // ends Run
	done    chan struct{}      // closed when Run returned
}

// New checks cfg and loads its certificates, in the order tunnelc
// reports problems: the errors of a bad setting are *service.UsageError. It
// changes nothing on the host and contacts no one.
func New(cfg Config, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.TUN == "" {
		cfg.TUN = DefaultTUN
	}
	cfg.Advertise = slices.Clone(cfg.Advertise)
	cfg.Servers = slices.Clone(cfg.Servers)
	servers, err := parseServers(cfg.serverList(), cfg.ServerName)
	if err != nil {
		return nil, service.Usagef("%v", err)
	}
	sd := newServerDialer(servers, log)
	var proxy *proxyDialer
	if cfg.Proxy != "" {
		if proxy, err = newProxyDialer(cfg.Proxy, cmp.Or(cfg.ProxyFrom, "--proxy"), cfg.ProxyAuthFile, log); err != nil {
			return nil, err
		}
		sd.through, sd.proxyName = proxy.dial, proxy.proxy.String()
	} else if cfg.ProxyAuthFile != "" {
		return nil, service.Usagef("--proxy-auth-file needs a proxy: --proxy URL, or HTTPS_PROXY or ALL_PROXY in the environment")
	}
	if cfg.KillSwitch && !cfg.FullTunnel {
		return nil, service.Usagef("--kill-switch needs --full-tunnel")
	}
	if proxy != nil && cfg.FullTunnel && proxy.proxy.OnThisHost() {
		return nil, service.Usagef("--full-tunnel with the proxy %s on this host: the proxy's own connection out (an ssh -D, say) would be routed into the tunnel; use a proxy on another host, or no --full-tunnel", proxy.proxy)
	}
	if err := checkPortal(cfg); err != nil {
		return nil, err
	}
	congestion, explicit := cfg.Congestion, cfg.Congestion != ""
	if !explicit {
		congestion = service.DefaultCongestion
	}
	congestion, note, err := service.Congestion(congestion, explicit)
	if err != nil {
		return nil, err
	}
	if note != "" {
		log.Warn(note)
	}
	var advertise []netip.Prefix
	for _, a := range cfg.Advertise {
		p, err := netip.ParsePrefix(a)
		switch {
		case err != nil || p.Addr().Is4In6():
			return nil, service.Usagef("--advertise %q: want a CIDR such as 198.18.20.0/24", a)
		case p.Masked() != p:
			return nil, service.Usagef("--advertise %q has host bits set; did you mean %v?", a, p.Masked())
		case p.Bits() == 0:
			return nil, service.Usagef("--advertise %q: a default route cannot be advertised", a)
		}
		advertise = append(advertise, p)
	}
	if len(advertise) > tunnel.MaxRoutes {
		return nil, service.Usagef("at most %d --advertise flags", tunnel.MaxRoutes)
	}
	if cfg.Cert == "" || cfg.Key == "" || cfg.CA == "" {
		return nil, service.Usagef("--cert, --key and --ca are required, e.g. --cert laptop.crt --key laptop.key --ca ca.crt")
	}
	// The name of the first server; each dial checks its own
	// (tunnel.ClientConfig.ServerName).
	tlsCfg, err := certs.ClientConfig(cfg.Cert, cfg.Key, cfg.CA, servers[0].name)
	if err != nil {
		return nil, err
	}
	service.WarnKeyFile(log, cfg.Key)
	if left := time.Until(certs.LeafExpiry(tlsCfg)); left < 30*24*time.Hour {
		log.Warn("client certificate expires soon: ask for a new one", "file", cfg.Cert, "days_left", int(left.Hours()/24))
	}
	return &Client{cfg: cfg, log: log, sd: sd, proxy: proxy, tls: tlsCfg, congest: congestion,
		advertise: advertise, stats: new(tunnel.Stats), portal: newClientPortal(cfg, log)}, nil
}

// serverList returns the servers of c: Server, then Servers.
func (c *Config) serverList() []string {
	if c.Server == "" {
		return c.Servers
	}
	return append([]string{c.Server}, c.Servers...)
}

// tunnelClient returns the tunnel.Client of Run, nil before.
func (c *Client) tunnelClient() *tunnel.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tc
}

// errClosed is Run's error after Close.
var errClosed = errors.New("client: closed")

// Close stops Run, if it runs, and waits until it has removed what it
// installed. Run cannot be called after Close. Close always returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// Run checks that it can work here (root or CAP_NET_ADMIN, a free TUN
// name, a free control socket) before it contacts the server, then sets
// up the host and carries packets, reconnecting after failures, until ctx
// ends, Close is called, or Config.MaxAttempts is used up. A start that
// cannot work here fails with a *service.CannotRunError and changes nothing.
// Before it returns, it removes everything it installed, closes the
// control socket and waits for its watchers; the metrics endpoint closes
// as it returns. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return errClosed
	case c.running:
		c.mu.Unlock()
		return errors.New("client: Run called twice")
	}
	c.running = true
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.cancel, c.done = cancel, done
	c.mu.Unlock()
	defer close(done)
	defer cancel()

	o, log, sd, congestion, advertise, stats := c.cfg, c.log, c.sd, c.congest, c.advertise, c.stats
	adv6 := slices.ContainsFunc(advertise, func(p netip.Prefix) bool { return p.Addr().Is6() })
	if o.Metrics != "" {
		if err := service.ServeMetrics(ctx, o.Metrics, "tunnelc", stats, nil, nil, nil, log); err != nil {
			return err
		}
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	// The control socket before anything is dialed or installed: a live
	// one means this instance already runs.
	ctl, err := control.ListenOptional(o.Control, control.Options{Group: o.ControlGroup, Logger: log})
	if err != nil {
		return err
	}
	defer ctl.Close()

	var (
		mu  sync.Mutex // guards dev and mgr, set by setup
		dev tun.Device
		mgr routing.Manager
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if mgr != nil {
			if err := mgr.Close(); err != nil {
				log.Warn("removing addresses and routes", "err", err)
			}
		}
		if dev != nil {
			dev.Close()
		}
	}()
	// The interface comes first, before anything else changes and before
	// a handshake replaces a live session of this identity elsewhere.
	if dev, err = openTUN(o.TUN, log); err != nil {
		return err
	}
	if mgr, err = routing.NewManager(routing.Options{Logger: log}); err != nil {
		return err
	}
	// Full tunnel and kill switch need the servers' addresses: every
	// address of every server, resolved now and dialed from then on; the
	// kill switch lets each through, the bypass route follows the one
	// dialed (bypass.go). Through a proxy, they are the proxy's address:
	// the TCP connection goes there, and the proxy resolves the servers.
	var serverAddrs []netip.AddrPort
	switch {
	case o.FullTunnel && c.proxy != nil:
		if serverAddrs, err = c.proxy.resolve(ctx); err != nil {
			return err
		}
		serverAddrs = serverAddrs[:1]
		c.proxy.pin(serverAddrs)
	case o.FullTunnel:
		if serverAddrs, err = sd.pinAll(ctx); err != nil {
			return err
		}
	}
	if c.proxy != nil {
		c.proxy.logStart(cmp.Or(o.ProxyFrom, "--proxy"))
	}
	if len(advertise) > 0 {
		// A site gateway forwards between its LAN and the tunnel.
		restore, err := routing.EnableForwarding(o.TUN, adv6, log)
		if err != nil {
			return err
		}
		defer func() {
			if err := restore(); err != nil {
				log.Warn("restoring forwarding settings", "err", err)
			}
		}()
	}
	if o.KillSwitch || len(advertise) > 0 {
		fw, err := routing.NewFirewall(routing.FirewallOptions{Instance: o.TUN, Logger: log})
		if err != nil {
			return err
		}
		if err := fw.Set(ctx, c.portal.firewall(clientFirewall(o.TUN, o.KillSwitch, len(advertise) > 0, serverAddrs), fw)); err != nil {
			fw.Close()
			return err
		}
		defer fw.Close()
		if o.KillSwitch && c.proxy != nil {
			log.Info("kill switch on: only the tunnel and the connection to the proxy may leave", "proxy", fmt.Sprint(serverAddrs))
		} else if o.KillSwitch {
			log.Info("kill switch on: only the tunnel and the server connection may leave", "server", fmt.Sprint(serverAddrs))
		}
	}
	var restoreDNS func() error
	bypass := newBypassFollower(o.TUN, log)
	sd.before = bypass.follow
	var appliedDNS string
	defer func() {
		if restoreDNS != nil {
			if err := restoreDNS(); err != nil {
				log.Warn("restoring DNS settings", "err", err)
			}
		}
		if err := bypass.Close(); err != nil {
			log.Warn("removing the route to the server", "err", err)
		}
	}()

	// setup runs for every session, on the TUN device opened above: it
	// converges the addresses, MTU and routes, which is a no-op when
	// nothing changed (reconnects, rotations).
	var applied, appliedServer string
	var lastRC routing.Config // the interface state of the last session; guarded by mu
	setup := func(ctx context.Context, cfg tunnel.Config) (tun.Device, error) {
		mu.Lock()
		defer mu.Unlock()
		sd.up()
		rc, full := clientRouting(o.TUN, cfg, o.FullTunnel)
		if full && !bypass.on() {
			// Keep the way to the server this session is connected to
			// outside the tunnel before the tunnel takes everything
			// else (with --full-tunnel, or a default route the server
			// pushed).
			if err := bypass.start(ctx, sd.lastAddr().Addr()); err != nil {
				return nil, err
			}
		}
		if err := mgr.Set(ctx, rc); err != nil {
			return nil, err
		}
		if d := fmt.Sprint(cfg.DNS); d != appliedDNS {
			if restoreDNS != nil {
				if err := restoreDNS(); err != nil {
					log.Warn("restoring DNS settings", "err", err)
				}
				restoreDNS = nil
			}
			r, err := routing.SetDNS(ctx, o.TUN, cfg.DNS, log)
			if err != nil {
				return nil, err
			}
			restoreDNS, appliedDNS = r, d
		}
		c.view.set(rc, cfg.DNS)
		lastRC = rc
		if len(advertise) > 0 {
			if refused := notIn(advertise, cfg.Accepted); len(refused) > 0 {
				log.Warn("the server refused to route networks behind this host; its --clients file must allow them (advertise)", "refused", fmt.Sprint(refused), "accepted", fmt.Sprint(cfg.Accepted))
			} else if applied == "" {
				log.Info("the server routes the networks behind this host", "accepted", fmt.Sprint(cfg.Accepted))
			}
		}
		if desc := fmt.Sprint(rc); desc != applied {
			if server := sd.current(); applied != "" && server != appliedServer {
				// Each server has its own pool: a move changes the address.
				log.Info("tunnel moved to another server", "server", server, "tunnel_addr", cfg.Addr, "routes", fmt.Sprint(cfg.Routes))
			} else if applied != "" {
				log.Warn("server changed the tunnel configuration", "tunnel_addr", cfg.Addr, "routes", fmt.Sprint(cfg.Routes))
			} else {
				log.Info("tunnel up", "ifname", o.TUN, "tunnel_addr", cfg.Addr, "routes", fmt.Sprint(cfg.Routes), "congestion", service.CongestionName(congestion))
				service.NotifyReady(log, fmt.Sprintf("tunnel up: %v on %s", cfg.Addr, o.TUN))
			}
			applied = desc
		}
		appliedServer = sd.current()
		c.portal.sessionUp()
		return dev, nil
	}

	keepalive := 15 * time.Second
	var local roamWatch
	client, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial: func(ctx context.Context) (net.Conn, error) {
			c.portal.attempt()
			// The bypass route moves with each address dialed, and
			// after roaming to the new gateway (sd.before); with no
			// such route the dial fails rather than loop into the
			// tunnel, and is retried after the backoff.
			conn, err := sd.Dial(ctx, c.rotating())
			if err == nil {
				service.TuneTCP(conn, 3*keepalive, congestion)
				local.set(conn.LocalAddr())
			}
			return conn, err
		},
		MaxAttempts:      o.MaxAttempts,
		RotateBytes:      uint64(o.RotateBytes),
		RotateAfter:      o.RotateAfter,
		NoResumption:     o.NoResumption,
		TLS:              c.tls,
		ServerName:       sd.serverName,
		Hello:            tunnel.Hello{Software: "tunnelc", Advertise: advertise},
		Setup:            setup,
		HandshakeTimeout: o.HandshakeTimeout,
		QueueLen:         o.QueueLen,
		NoOffload:        o.NoOffload,
		StdlibRecords:    o.StdlibRecords,
		OwnAESGCM:        service.RecordLayer(log, o.StdlibRecords, o.OwnAESGCM),
		Logger:           log,
		Stats:            stats,
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.tc = client
	c.mu.Unlock()
	service.NotifyStopping(ctx, log)
	// The watchers end with ctx; wait for them before removing what they
	// look at.
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { local.watch(ctx, client, log) })
	wg.Go(func() { watchSleep(ctx, client, log) })
	startControl(ctx, ctl, c.handle, &wg, log)
	c.startPortal(ctx, &wg, client, func() netip.Addr {
		mu.Lock()
		defer mu.Unlock()
		if len(serverAddrs) == 0 {
			return netip.Addr{}
		}
		return serverAddrs[0].Addr()
	}, func(ctx context.Context) error {
		// A captive portal, with the full tunnel's routes of the last
		// session in place: take them and its DNS settings off; the
		// next session's setup puts them back.
		mu.Lock()
		defer mu.Unlock()
		rc := withoutFullTunnel(lastRC)
		if err := mgr.Set(ctx, rc); err != nil {
			return err
		}
		if restoreDNS != nil {
			if err := restoreDNS(); err != nil {
				return err
			}
			restoreDNS, appliedDNS = nil, ""
		}
		c.view.set(rc, nil)
		return nil
	})
	err = client.Run(ctx)
	log.Info("disconnected", append([]any{"reason", errString(err)}, service.StatsAttrs(stats)...)...)
	return err
}

// rotating reports whether a session is up, so that a new connection is
// a rotation, which stays on the server in use.
func (c *Client) rotating() bool {
	tc := c.tunnelClient()
	return tc != nil && tc.Status().State == tunnel.StateUp
}

func errString(err error) string {
	if err == nil {
		return "stopped"
	}
	return err.Error()
}
