// Command tunnelc is the tlsvpn client: it connects to tunneld over
// mutually authenticated TLS 1.3, creates a TUN device with the address,
// MTU and routes the server assigns, and carries packets until it is
// stopped, then removes what it installed.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/certs"
	"tlsvpn/cmd/internal/cli"
	"tlsvpn/routing"
	"tlsvpn/tun"
	"tlsvpn/tunnel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, pflag.ErrHelp) {
		err = nil
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnelc:", err)
	}
	os.Exit(cli.ExitCode(err))
}

const usageHead = `Usage: tunnelc --server HOST:PORT --cert FILE --key FILE --ca FILE [flags]
       tunnelc --config FILE [flags]         (settings from a YAML file; flags override it)
       tunnelc --profile NAME [flags]        (the config file /etc/tlsvpn/client/NAME.yaml)
       tunnelc check --config FILE [flags]   (validate the settings and the files they name, then exit)
       tunnelc profiles                      (list the profiles)
       tunnelc status [--tun NAME | --control PATH] [--json]   (ask a running tunnelc; see 'tunnelc status --help')

tunnelc is the tlsvpn client. It needs root or CAP_NET_ADMIN. It checks that,
and creates the TUN device --tun, before it connects: a start that cannot work
(no privileges, a name another process holds) fails without making the server
drop a live session of the same identity. It connects to tunneld over TLS 1.3,
proves its identity with the client certificate in --cert, checks the server's
certificate against the CA in --ca (never the system's roots) and its name
against --server-name, installs the address, MTU and routes the server
assigns, and carries packets. On SIGINT or SIGTERM it tells the server,
removes the addresses and routes it installed, and exits.

It reconnects after failures with a backoff from 250ms up to 30s; after a
problem that does not go away by itself (a server certificate from another CA
or for another name, a client certificate the server refuses, a server that
is not a tlsvpn server) it logs the reason and a hint once and retries about
every 5 minutes.

Flags:
`

const usageTail = `
Examples:
  # connect to a server whose certificate names vpn.example.com
  tunnelc --server vpn.example.com:443 --cert laptop.crt --key laptop.key --ca ca.crt

  # dial an IP address; the certificate must carry it (tunneld pki issue --ip)
  tunnelc --server 192.0.2.1:443 --cert laptop.crt --key laptop.key --ca ca.crt --tun vpn0

  # all traffic through the tunnel, nothing outside it even while reconnecting
  tunnelc --server 192.0.2.1:443 --cert laptop.crt --key laptop.key --ca ca.crt --full-tunnel --kill-switch

  # a site gateway: route the LAN 198.18.20.0/24 behind this host through the
  # server (the server's --clients file must allow it: advertise)
  tunnelc --server 192.0.2.1:443 --cert site-b.crt --key site-b.key --ca ca.crt --advertise 198.18.20.0/24

  # one config file per server (keys are the flag names, e.g. "server: vpn.example.com:443",
  # "full-tunnel: true"), kept as profiles in /etc/tlsvpn/client
  tunnelc check --profile work
  tunnelc --profile work

Exit status:
  0  stopped by SIGINT or SIGTERM (or --help)
  1  failed (including --max-attempts used up, or 'tunnelc check' found a problem)
  2  bad flags or arguments
  3  cannot run here as asked: no root or CAP_NET_ADMIN, or the --tun name is
     held by another process or is not a TUN device; nothing was changed and
     the server was not contacted
`

type options struct {
	server, serverName  string
	cert, key, ca       string
	tunName             string
	handshakeTimeout    time.Duration
	queueLen            int
	metrics             string
	noOffload           bool
	stdlibRecords       bool
	ownAESGCM           bool
	congestion          string
	congestionSet       bool
	maxAttempts         int
	rotateBytes         int64
	rotateAfter         time.Duration
	noResumption        bool
	fullTunnel          bool
	killSwitch          bool
	advertise           []string
	cpuProfile          string
	cleanup             bool
	logLevel, logFormat string
	config              string // --config FILE; config.go
	profile, profileDir string // --profile NAME: profileDir/NAME.yaml
	ctl                 cli.ControlFlags
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return cli.RunControl(ctx, statusCommand, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "profiles" {
		return runProfiles(stdout, stderr, args[1:])
	}
	checkOnly := len(args) > 0 && args[0] == "check"
	if checkOnly {
		args = args[1:]
	}
	var o options
	fs := pflag.NewFlagSet("tunnelc", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&o.config, "config", "", "read settings from a YAML FILE whose keys are the long flag names, e.g. /etc/tlsvpn/client/work.yaml (see README); a flag on the command line overrides the file")
	fs.StringVar(&o.profile, "profile", "", "read settings from the profile NAME, the config file NAME.yaml in --profile-dir (one per server; 'tunnelc profiles' lists them)")
	fs.StringVar(&o.profileDir, "profile-dir", DefaultProfileDir, "directory of the --profile files")
	fs.StringVar(&o.server, "server", "", "server HOST:PORT to connect to, e.g. vpn.example.com:443 or 192.0.2.1:443 (required)")
	fs.StringVar(&o.serverName, "server-name", "", "name the server certificate must carry (default: the host part of --server), e.g. vpn.example.com")
	fs.StringVar(&o.cert, "cert", "", "client certificate FILE (PEM), e.g. laptop.crt (required)")
	fs.StringVar(&o.key, "key", "", "client private key FILE (PEM), e.g. laptop.key (required)")
	fs.StringVar(&o.ca, "ca", "", "CA certificate FILE the server certificate must chain to, e.g. ca.crt (required)")
	fs.StringVar(&o.tunName, "tun", "tunnelc0", "name of the TUN interface to create")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 15*time.Second, "time allowed to connect and complete the TLS and protocol handshakes")
	fs.IntVar(&o.queueLen, "queue-len", tunnel.DefaultQueueLen, "send queue bound in chunks (up to 64 KiB each); a full queue drops")
	fs.IntVar(&o.maxAttempts, "max-attempts", 0, "give up after N consecutive failed connection attempts (0 retries forever, with backoff up to 30s, or about 5m after a problem that does not go away by itself, e.g. a certificate from another CA)")
	fs.Int64Var(&o.rotateBytes, "rotate-bytes", 0, "open a fresh session (new keys) after N bytes through the tunnel, e.g. 1073741824 (0: only the TLS record budget and --rotate-after)")
	fs.DurationVar(&o.rotateAfter, "rotate-after", 0, "open a fresh session after this long, e.g. 1h (0: no age limit)")
	fs.BoolVar(&o.fullTunnel, "full-tunnel", false, "send all traffic through the tunnel (0.0.0.0/1 + 128.0.0.0/1, and ::/1 + 8000::/1 with IPv6), keeping the route to the server outside it; also on when the server pushes 0.0.0.0/0")
	fs.BoolVar(&o.killSwitch, "kill-switch", false, "with --full-tunnel: drop everything that would leave outside the tunnel (IPv4 and IPv6), except the connection to the server, DHCP and loopback, from start to exit, including while reconnecting")
	fs.StringArrayVar(&o.advertise, "advertise", nil, "CIDR of a network behind this host (site-to-site) to route through the tunnel to here, e.g. --advertise 198.18.20.0/24 (repeatable); the server accepts only what its --clients file allows this certificate. Turns on IP forwarding (IPv6 forwarding only for IPv6 networks) and TCP MSS clamping while connected")
	fs.BoolVar(&o.noResumption, "no-resumption", false, "always do a full TLS handshake on reconnect instead of resuming with a session ticket")
	fs.BoolVar(&o.noOffload, "no-offload", false, "do not carry GSO super-packets whole; packets are split to the MTU and sent one per frame (interoperates either way)")
	fs.BoolVar(&o.stdlibRecords, "stdlib-tls-records", false, "carry the data phase through Go's crypto/tls instead of tlsvpn's own TLS 1.3 record layer: the same bytes on the wire, more copying (for comparison or troubleshooting)")
	fs.BoolVar(&o.ownAESGCM, "own-aes-gcm", false, "seal and open AES-GCM records with tlsvpn's own AES-GCM assembly (VAES + AVX-512) instead of Go's: about 1.7x faster per record, but new cryptographic code outside Go's FIPS module and less reviewed; checked against known answers at start, and Go's AES-GCM is used (with a log line) where it cannot run. Off by default")
	fs.StringVar(&o.congestion, "congestion", cli.DefaultCongestion, cli.CongestionUsage)
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on ADDR:PORT at /metrics, e.g. 127.0.0.1:9101 (off if empty)")
	cli.AddControlFlags(fs, &o.ctl, "tunnelc")
	fs.BoolVar(&o.cleanup, "cleanup", false, "remove what a crashed run of this instance (--tun) left behind: its routes, tunnel addresses and nftables table inet tlsvpn-<tun> (other instances and everything else untouched), then exit; e.g. for systemd ExecStopPost")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile to FILE until exit, for 'go tool pprof' (off if empty)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	version := cli.VersionFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stdout, usageHead)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fmt.Fprint(stdout, usageTail)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &cli.UsageError{Err: fmt.Errorf("%w (see 'tunnelc --help')", err)}
	}
	if *version {
		return cli.PrintVersion(stdout, "tunnelc")
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (see 'tunnelc --help')", fs.Arg(0))
	}
	if checkOnly {
		return runCheck(stdout, fs, &o)
	}
	file, err := applyConfig(fs, &o)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	o.congestionSet = fs.Changed("congestion")
	if file != nil {
		// Name the file's line for what is wrong, before anything starts.
		if errs := checkOptions(o); len(errs) > 0 {
			return &cli.UsageError{Err: errors.New(file.Locate(errs[0]))}
		}
	}
	log, err := cli.NewLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.cleanup {
		return cli.Cleanup(ctx, o.tunName, log)
	}
	stopProfile, err := cli.StartCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	return connect(ctx, o, log)
}

func connect(ctx context.Context, o options, log *slog.Logger) error {
	if o.server == "" {
		return cli.Usagef("--server is required, e.g. --server vpn.example.com:443")
	}
	host, portStr, err := net.SplitHostPort(o.server)
	if err != nil {
		return cli.Usagef("--server %q: want HOST:PORT, e.g. vpn.example.com:443", o.server)
	}
	sd, err := newServerDialer(o.server, host, portStr, log)
	if err != nil {
		return cli.Usagef("--server %q: %v", o.server, err)
	}
	if o.killSwitch && !o.fullTunnel {
		return cli.Usagef("--kill-switch needs --full-tunnel")
	}
	if o.serverName == "" {
		o.serverName = host
	}
	congestion, note, err := cli.Congestion(o.congestion, o.congestionSet)
	if err != nil {
		return err
	}
	if note != "" {
		log.Warn(note)
	}
	var advertise []netip.Prefix
	adv6 := false
	for _, a := range o.advertise {
		p, err := netip.ParsePrefix(a)
		switch {
		case err != nil || p.Addr().Is4In6():
			return cli.Usagef("--advertise %q: want a CIDR such as 198.18.20.0/24", a)
		case p.Masked() != p:
			return cli.Usagef("--advertise %q has host bits set; did you mean %v?", a, p.Masked())
		case p.Bits() == 0:
			return cli.Usagef("--advertise %q: a default route cannot be advertised", a)
		}
		advertise = append(advertise, p)
		adv6 = adv6 || p.Addr().Is6()
	}
	if len(advertise) > tunnel.MaxRoutes {
		return cli.Usagef("at most %d --advertise flags", tunnel.MaxRoutes)
	}
	if o.cert == "" || o.key == "" || o.ca == "" {
		return cli.Usagef("--cert, --key and --ca are required, e.g. --cert laptop.crt --key laptop.key --ca ca.crt")
	}
	tlsCfg, err := certs.ClientConfig(o.cert, o.key, o.ca, o.serverName)
	if err != nil {
		return err
	}
	cli.WarnKeyFile(log, o.key)
	if left := time.Until(certs.LeafExpiry(tlsCfg)); left < 30*24*time.Hour {
		log.Warn("client certificate expires soon: ask for a new one", "file", o.cert, "days_left", int(left.Hours()/24))
	}
	stats := new(tunnel.Stats)
	if o.metrics != "" {
		if err := cli.ServeMetrics(ctx, o.metrics, "tunnelc", stats, nil, nil, log); err != nil {
			return err
		}
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	// The control socket before anything is dialed or installed: a live
	// one means this instance already runs.
	ctl, err := listenControl(o.ctl.Socket(o.tunName), o.ctl.Group, log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	view, given := new(tunnelView), o.server

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
	if dev, err = openTUN(o.tunName, log); err != nil {
		return err
	}
	if mgr, err = routing.NewManager(routing.Options{Logger: log}); err != nil {
		return err
	}
	// Full tunnel and kill switch need the server's addresses.
	var serverAddrs []netip.AddrPort
	if o.fullTunnel {
		if serverAddrs, err = sd.resolve(ctx); err != nil {
			return err
		}
		sd.pin(serverAddrs[:1]) // dial what the bypass and kill switch allow
	}
	if len(advertise) > 0 {
		// A site gateway forwards between its LAN and the tunnel.
		restore, err := routing.EnableForwarding(o.tunName, adv6, log)
		if err != nil {
			return err
		}
		defer func() {
			if err := restore(); err != nil {
				log.Warn("restoring forwarding settings", "err", err)
			}
		}()
	}
	if o.killSwitch || len(advertise) > 0 {
		fw, err := routing.NewFirewall(routing.FirewallOptions{Instance: o.tunName, Logger: log})
		if err != nil {
			return err
		}
		if err := fw.Set(ctx, clientFirewall(o.tunName, o.killSwitch, len(advertise) > 0, serverAddrs)); err != nil {
			fw.Close()
			return err
		}
		defer fw.Close()
		if o.killSwitch {
			log.Info("kill switch on: only the tunnel and the server connection may leave", "server", fmt.Sprint(serverAddrs))
		}
	}
	var restoreDNS func() error
	var bypass *routing.Bypass // guarded by mu
	var appliedDNS string
	defer func() {
		if restoreDNS != nil {
			if err := restoreDNS(); err != nil {
				log.Warn("restoring DNS settings", "err", err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if bypass != nil {
			if err := bypass.Close(); err != nil {
				log.Warn("removing the route to the server", "err", err)
			}
		}
	}()

	// setup runs for every session, on the TUN device opened above: it
	// converges the addresses, MTU and routes, which is a no-op when
	// nothing changed (reconnects, rotations).
	var applied string
	setup := func(ctx context.Context, cfg tunnel.Config) (tun.Device, error) {
		mu.Lock()
		defer mu.Unlock()
		rc, full := clientRouting(o.tunName, cfg, o.fullTunnel)
		if full && bypass == nil {
			// Keep the way to the server outside the tunnel before the
			// tunnel takes everything else.
			if len(serverAddrs) == 0 {
				// The server pushed a default route: keep the address
				// this session is connected to outside the tunnel.
				serverAddrs = append(serverAddrs, sd.lastAddr())
			}
			b, err := routing.AddBypass(ctx, serverAddrs[0].Addr(), o.tunName)
			if err != nil {
				return nil, err
			}
			bypass = b
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
			r, err := routing.SetDNS(ctx, o.tunName, cfg.DNS, log)
			if err != nil {
				return nil, err
			}
			restoreDNS, appliedDNS = r, d
		}
		view.set(rc, cfg.DNS)
		if len(advertise) > 0 {
			if refused := notIn(advertise, cfg.Accepted); len(refused) > 0 {
				log.Warn("the server refused to route networks behind this host; its --clients file must allow them (advertise)", "refused", fmt.Sprint(refused), "accepted", fmt.Sprint(cfg.Accepted))
			} else if applied == "" {
				log.Info("the server routes the networks behind this host", "accepted", fmt.Sprint(cfg.Accepted))
			}
		}
		if desc := fmt.Sprint(rc); desc != applied {
			if applied != "" {
				log.Warn("server changed the tunnel configuration", "tunnel_addr", cfg.Addr, "routes", fmt.Sprint(cfg.Routes))
			} else {
				log.Info("tunnel up", "ifname", o.tunName, "tunnel_addr", cfg.Addr, "routes", fmt.Sprint(cfg.Routes), "congestion", cli.CongestionName(congestion))
				cli.NotifyReady(log, fmt.Sprintf("tunnel up: %v on %s", cfg.Addr, o.tunName))
			}
			applied = desc
		}
		return dev, nil
	}

	keepalive := 15 * time.Second
	var local roamWatch
	client, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial: func(ctx context.Context) (net.Conn, error) {
			mu.Lock()
			b := bypass
			mu.Unlock()
			if b != nil {
				// After roaming, the way to the server is another
				// gateway or interface: move the pinned route first.
				// With no such route, the dial would only loop into the
				// tunnel itself: fail it and retry after the backoff.
				if changed, err := b.Refresh(ctx); err != nil {
					return nil, err
				} else if changed {
					log.Info("route to the server moved outside the tunnel", "server", o.server)
				}
			}
			c, err := sd.Dial(ctx)
			if err == nil {
				cli.TuneTCP(c, 3*keepalive, congestion)
				local.set(c.LocalAddr())
			}
			return c, err
		},
		MaxAttempts:      o.maxAttempts,
		RotateBytes:      uint64(o.rotateBytes),
		RotateAfter:      o.rotateAfter,
		NoResumption:     o.noResumption,
		TLS:              tlsCfg,
		Hello:            tunnel.Hello{Software: "tunnelc", Advertise: advertise},
		Setup:            setup,
		HandshakeTimeout: o.handshakeTimeout,
		QueueLen:         o.queueLen,
		NoOffload:        o.noOffload,
		StdlibRecords:    o.stdlibRecords,
		OwnAESGCM:        cli.RecordLayer(log, o.stdlibRecords, o.ownAESGCM),
		Logger:           log,
		Stats:            stats,
	})
	if err != nil {
		return err
	}
	cli.NotifyStopping(ctx, log)
	go local.watch(ctx, client, log)
	startControl(ctx, ctl, &clientSource{client: client, stats: stats, view: view, server: given,
		tun: o.tunName, fullTunnel: o.fullTunnel, killSwitch: o.killSwitch}, log)
	err = client.Run(ctx)
	log.Info("disconnected", append([]any{"reason", errString(err)}, cli.StatsAttrs(stats)...)...)
	return err
}

// fullTunnelRoutes returns the routes to install: the pushed ones, with a
// default route (pushed, or asked for with --full-tunnel) replaced by two
// halves that win over the system's default without removing it.
func fullTunnelRoutes(pushed []netip.Prefix, force, have6 bool) ([]netip.Prefix, bool) {
	var out []netip.Prefix
	full4, full6 := force, force && have6
	for _, r := range pushed {
		switch {
		case r.Bits() == 0 && r.Addr().Is4():
			full4 = true
		case r.Bits() == 0:
			full6 = true
		default:
			out = append(out, r)
		}
	}
	if full4 {
		out = append(out, netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1"))
	}
	if full6 {
		out = append(out, netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1"))
	}
	return out, full4 || full6
}

func errString(err error) string {
	if err == nil {
		return "stopped"
	}
	return err.Error()
}

// clientRouting is the interface state for the configuration the server
// pushed: its addresses, MTU and routes, the full tunnel's halves in place
// of default routes. full reports a full tunnel (a route to the server
// must then bypass it).
func clientRouting(ifname string, cfg tunnel.Config, fullTunnel bool) (rc routing.Config, full bool) {
	routes, full := fullTunnelRoutes(cfg.Routes, fullTunnel, cfg.Addr6.IsValid())
	rc = routing.Config{Interface: ifname, MTU: cfg.MTU, Addresses: []netip.Prefix{cfg.Addr}, Routes: routes}
	if cfg.Addr6.IsValid() {
		rc.Addresses = append(rc.Addresses, cfg.Addr6)
	}
	return rc, full
}

// clientFirewall is the client's nftables state: the kill switch letting
// only the server endpoints out, and MSS clamping for a site gateway that
// forwards its LAN into the tunnel.
func clientFirewall(ifname string, killSwitch, gateway bool, server []netip.AddrPort) routing.FirewallConfig {
	fc := routing.FirewallConfig{TunnelIf: ifname, ClampMSS: gateway}
	if killSwitch {
		fc.KillSwitch, fc.ServerEndpoints = true, server
	}
	return fc
}

// notIn returns the prefixes of want that are not in got.
func notIn(want, got []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range want {
		if !slices.Contains(got, p) {
			out = append(out, p)
		}
	}
	return out
}
