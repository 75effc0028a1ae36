// Command tunneld is the tlsvpn server: it accepts tunnelc clients over
// mutually authenticated TLS 1.3, gives each an address from --subnet and
// forwards packets between its TUN device and the clients' sessions.
// 'tunneld pki ...' manages the CA and certificates.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync/atomic"
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
	if err != nil && !errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "tunneld:", err)
	}
	if errors.Is(err, pflag.ErrHelp) {
		err = nil
	}
	os.Exit(cli.ExitCode(err))
}

const usageHead = `Usage: tunneld --cert FILE --key FILE --ca FILE [--listen ADDR:PORT] [--subnet CIDR] [flags]
       tunneld --config FILE [flags]                  (settings from a YAML file; flags override it)
       tunneld check --config FILE [flags]            (validate the settings and the files they name, then exit)
       tunneld pki <init|issue|revoke|crl|list> ...   (certificate authority; see 'tunneld pki --help')
       tunneld status|clients|reload|kick NAME [--tun NAME | --control PATH] [--json]
                                                  (ask a running tunneld; see 'tunneld status --help')

tunneld is the tlsvpn server. It listens for tunnelc clients on TCP, accepts only
TLS 1.3 connections whose client certificate was issued by the CA in --ca, gives
each client an address from --subnet (the server takes the first one; a client
keeps its address when it reconnects) and forwards IP packets between its TUN
device and the clients. Packets whose source is not the client's address are
dropped and counted.

Flags:
`

const usageTail = `
Examples:
  # create a CA, a server certificate and a client certificate
  tunneld pki init  --dir /etc/tlsvpn/pki
  tunneld pki issue --dir /etc/tlsvpn/pki --server --name vpn.example.com --ip 192.0.2.1
  tunneld pki issue --dir /etc/tlsvpn/pki --client --name laptop

  # serve 100.64.0.0/24 on port 443 and give clients a route to a LAN behind the server
  tunneld --listen 0.0.0.0:443 --cert /etc/tlsvpn/pki/vpn.example.com.crt \
    --key /etc/tlsvpn/pki/vpn.example.com.key --ca /etc/tlsvpn/pki/ca.crt \
    --subnet 100.64.0.0/24 --route 198.18.10.0/24

  # a second instance beside the first needs its own --tun, --subnet and
  # --listen; its nftables table is inet tlsvpn-vpn1, its leases are in
  # /var/lib/tlsvpn/vpn1
  tunneld --tun vpn1 --listen 0.0.0.0:8443 --subnet 100.64.1.0/24 --cert ... --key ... --ca ...

  # per-client policy (fixed addresses, routes, site networks, client-to-client);
  # edit the file and apply it with 'tunneld reload'
  tunneld --cert ... --key ... --ca ... --subnet 100.64.0.0/24 --clients /etc/tlsvpn/clients.yaml
  tunneld reload

  # what is connected, and how the server is doing
  tunneld clients
  tunneld status --json

  # the same from a config file (keys are the flag names, e.g. "max-clients: 2000",
  # "route: [198.18.10.0/24]"; the clients policy may sit under "clients:"),
  # checked before use; 'tunneld reload' re-reads it and applies what changed
  tunneld check --config /etc/tlsvpn/tunneld.yaml
  tunneld --config /etc/tlsvpn/tunneld.yaml
`

type options struct {
	listen, cert, key, ca string
	subnet                string
	subnet6               string
	nat                   bool
	clients               string
	clientToClient        bool
	dns                   []string
	tunName               string
	mtu                   int
	routes                []string
	keepalive             time.Duration
	handshakeTimeout      time.Duration
	queueLen              int
	metrics               string
	noOffload             bool
	stdlibRecords         bool
	ownAESGCM             bool
	congestion            string
	congestionSet         bool
	stateDir              string
	stateDirSet           bool
	crl                   string
	crlCheck              time.Duration
	maxClients            int
	maxSessionsPerID      int
	maxHandshakes         int
	maxHandshakesPerSrc   int
	reservedHandshakes    int
	maxConnections        int
	handshakeQueue        int
	handshakeQueueWait    time.Duration
	helloTimeout          time.Duration
	handshakeRate         float64
	handshakeBurst        int
	cpuProfile            string
	cleanup               bool
	logLevel, logFormat   string
	fileState             // --config: config.go
	ctl                   cli.ControlFlags
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if isControlCommand(args) {
		return runControlCommand(ctx, args, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "pki" {
		err := runPKI(args[1:], stdout, stderr)
		if err != nil && !errors.Is(err, pflag.ErrHelp) {
			return &cli.UsageError{Err: err}
		}
		return err
	}
	checkOnly := len(args) > 0 && args[0] == "check"
	if checkOnly {
		args = args[1:]
	}
	var o options
	fs := pflag.NewFlagSet("tunneld", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&o.config, "config", "", "read settings from a YAML FILE whose keys are the long flag names, e.g. /etc/tlsvpn/tunneld.yaml (see README); a flag on the command line overrides the file; SIGHUP re-reads it")
	fs.StringVar(&o.listen, "listen", "0.0.0.0:443", "TCP address ADDR:PORT to accept clients on, e.g. 198.18.0.1:443 or [2001:db8::1]:443")
	fs.StringVar(&o.cert, "cert", "", "server certificate FILE (PEM), e.g. /etc/tlsvpn/pki/server.crt (required)")
	fs.StringVar(&o.key, "key", "", "server private key FILE (PEM), e.g. /etc/tlsvpn/pki/server.key (required)")
	fs.StringVar(&o.ca, "ca", "", "CA certificate FILE that client certificates must chain to, e.g. /etc/tlsvpn/pki/ca.crt (required)")
	fs.StringVar(&o.subnet, "subnet", "100.64.0.0/24", "tunnel subnet CIDR; the server takes the first host address, clients the rest")
	fs.StringVar(&o.subnet6, "subnet6", "", "IPv6 tunnel subnet CIDR for dual stack, e.g. fd00:64::/64: each client also gets an IPv6 address from it, the server the first one (off if empty)")
	fs.StringArrayVar(&o.dns, "dns", nil, "DNS server IP pushed to clients, e.g. --dns 100.64.0.1 (repeatable); tunnelc applies it through systemd-resolved or /etc/resolv.conf while connected")
	fs.BoolVar(&o.nat, "nat", false, "masquerade client traffic that leaves the server through its other interfaces (nftables table inet tlsvpn-<tun>), so networks behind the server need no route back to --subnet")
	fs.StringVar(&o.clients, "clients", "", "per-client policy FILE (YAML keyed by certificate name: address, routes, advertise, reach_clients; see README), e.g. /etc/tlsvpn/clients.yaml; re-read on SIGHUP: only clients whose entry changed reconnect")
	fs.BoolVar(&o.clientToClient, "client-to-client", false, "let clients open connections to each other through the server (the default for reach_clients in --clients); replies to allowed connections always pass")
	fs.StringVar(&o.tunName, "tun", "tunneld0", "name of the TUN interface to create")
	fs.IntVar(&o.mtu, "mtu", 1500, "tunnel MTU, pushed to clients (576-65535)")
	fs.StringArrayVar(&o.routes, "route", nil, "CIDR that clients route through the tunnel, e.g. --route 198.18.10.0/24 (repeatable)")
	fs.DurationVar(&o.keepalive, "keepalive", 15*time.Second, "ping interval pushed to clients; a session silent for 3 intervals is closed (0 disables)")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 10*time.Second, "time a new connection has to complete the TLS and protocol handshakes")
	fs.IntVar(&o.queueLen, "queue-len", tunnel.DefaultQueueLen, "per-client send queue bound in chunks (up to 64 KiB each); a full queue drops")
	fs.StringVar(&o.crl, "crl", "", "certificate revocation list FILE (PEM) from 'tunneld pki revoke', e.g. /etc/tlsvpn/pki/crl.pem: checked on every handshake and resumption, reloaded when it changes or on SIGHUP; live sessions of newly revoked clients are closed. A missing, expired or wrongly signed CRL refuses every client (fail closed)")
	fs.DurationVar(&o.crlCheck, "crl-check", 5*time.Second, "how often to look for a changed --crl file and re-check live sessions (revocation, certificate expiry)")
	fs.StringVar(&o.stateDir, "state-dir", stateRoot+"/<tun>", "directory for state that must survive restarts, one per instance (locked while it runs): leases.json keeps each client's tunnel address (\"\" keeps leases in memory only)")
	fs.IntVar(&o.maxClients, "max-clients", tunnel.DefaultMaxClients, "most distinct clients connected at once (0: the default; -1: no limit)")
	fs.IntVar(&o.maxSessionsPerID, "max-sessions-per-client", tunnel.DefaultMaxSessionsPerIdentity, "most simultaneous sessions of one client identity; 2 lets a rotation or reconnect overlap (0: the default; -1: no limit)")
	fs.IntVar(&o.maxHandshakes, "max-handshakes", tunnel.DefaultMaxHandshakes, "most TLS handshakes in progress at once; more connections are closed at once (0: the default; -1: no limit)")
	fs.IntVar(&o.maxHandshakesPerSrc, "max-handshakes-per-source", tunnel.DefaultMaxHandshakesPerSource, "most connections of one source address (IPv6: per /64) handshaking or waiting for a slot, so a few sources cannot hold every slot (0: the default; -1: no limit)")
	fs.IntVar(&o.reservedHandshakes, "reserved-handshakes", tunnel.DefaultReservedHandshakes, "handshake slots beyond --max-handshakes kept for clients that resume a TLS session or come from an address that authenticated in the last hour (0: the default; -1: none)")
	fs.IntVar(&o.handshakeQueue, "handshake-queue", tunnel.DefaultMaxQueued, "connections that may wait for a handshake slot when all are taken, served in turn instead of refused (0: the default; -1: no limit)")
	fs.DurationVar(&o.handshakeQueueWait, "handshake-queue-wait", tunnel.DefaultMaxQueueWait, "how long a connection waits for a handshake slot before it is closed")
	fs.Float64Var(&o.handshakeRate, "handshake-rate", tunnel.DefaultHandshakeRate, "new connections per second allowed from one source address (IPv6: per /64) after its burst (0: the default; -1: no limit)")
	fs.IntVar(&o.handshakeBurst, "handshake-burst", tunnel.DefaultHandshakeBurst, "new connections one source address may open at once, e.g. an office behind one NAT coming back after a restart (0: the default)")
	fs.DurationVar(&o.helloTimeout, "hello-timeout", 2*time.Second, "time a new connection has to send its TLS ClientHello; an idle connection gives its handshake slot back after this")
	fs.IntVar(&o.maxConnections, "max-connections", 0, "most connections open at once; more are closed at accept and counted (0: derived from the descriptor limit, which tunneld raises to its hard limit at start; -1: no limit)")
	fs.BoolVar(&o.noOffload, "no-offload", false, "do not carry GSO super-packets whole; packets are split to the MTU and sent one per frame (interoperates either way)")
	fs.BoolVar(&o.stdlibRecords, "stdlib-tls-records", false, "carry the data phase through Go's crypto/tls instead of tlsvpn's own TLS 1.3 record layer: the same bytes on the wire, more copying (for comparison or troubleshooting)")
	fs.BoolVar(&o.ownAESGCM, "own-aes-gcm", false, "seal and open AES-GCM records with tlsvpn's own AES-GCM assembly (VAES + AVX-512) instead of Go's: about 1.7x faster per record, but new cryptographic code outside Go's FIPS module and less reviewed; checked against known answers at start, and Go's AES-GCM is used (with a log line) where it cannot run. Off by default")
	fs.StringVar(&o.congestion, "congestion", cli.DefaultCongestion, cli.CongestionUsage)
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on ADDR:PORT at /metrics, e.g. 127.0.0.1:9100 (off if empty)")
	cli.AddControlFlags(fs, &o.ctl, "tunneld")
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
		return &cli.UsageError{Err: fmt.Errorf("%w (see 'tunneld --help')", err)}
	}
	if *version {
		return cli.PrintVersion(stdout, "tunneld")
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (see 'tunneld --help')", fs.Arg(0))
	}
	src := newSource(fs, &o)
	if checkOnly {
		return runCheck(stdout, src)
	}
	o, err := src.read()
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	log, level, err := cli.NewLevelLogger(stderr, o.logLevel, o.logFormat)
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
	return serve(ctx, o, log, src, level)
}

func serve(ctx context.Context, o options, log *slog.Logger, src *source, level *slog.LevelVar) error {
	st, errs := parseSettings(o)
	if len(errs) > 0 {
		return &cli.UsageError{Err: locateAll(o.file, errs)}
	}
	subnet, subnet6, routes, dns := st.subnet, st.subnet6, st.routes, st.dns
	congestion, note, err := cli.Congestion(o.congestion, o.congestionSet)
	if err != nil {
		return err
	}
	if note != "" {
		log.Warn(note)
	}
	// The control socket first: a live one means this instance already
	// runs, and nothing else may be touched.
	ctl, err := listenControl(o.ctl.Socket(o.tunName), o.ctl.Group, log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	// Nothing is created or changed before this instance is known to
	// collide with no other (TUN name, subnets, state directory; the
	// listen address is bound before the TUN device is made).
	inst, err := claimInstance(o, tunnelSubnets(subnet, subnet6), log)
	if err != nil {
		return err
	}
	defer inst.release()
	openPool := func(p netip.Prefix, file string) (*routing.Pool, error) {
		if inst.stateDir == "" {
			return routing.NewPool(p)
		}
		pool, warnings, err := routing.OpenPool(p, filepath.Join(inst.stateDir, file))
		for _, w := range warnings {
			log.Warn("leases", "warning", w)
		}
		return pool, err
	}
	pool, err := openPool(subnet, "leases.json")
	if err != nil {
		return fmt.Errorf("address pool for --subnet %v: %w", subnet, err)
	}
	defer pool.Flush()
	var pool6 *routing.Pool
	if subnet6.IsValid() {
		if pool6, err = openPool(subnet6, "leases6.json"); err != nil {
			return fmt.Errorf("address pool for --subnet6 %v: %w", subnet6, err)
		}
		defer pool6.Flush()
	}
	var clients clientPolicies
	if o.hasPolicy() {
		if clients, err = o.loadPolicy(pool, pool6); err != nil {
			return err
		}
		if _, err := pinAddresses(clients, pool, pool6); err != nil {
			return fmt.Errorf("clients policy %s: %w", o.policySource(), err)
		}
		log.Info("client policies loaded", "file", o.policySource(), "clients", len(clients))
	}
	var policies atomic.Pointer[policySet]
	policies.Store(&policySet{clients: clients, reach: o.clientToClient})

	tlsCfg, err := certs.ServerConfig(o.cert, o.key, o.ca)
	if err != nil {
		return err
	}
	cli.WarnKeyFile(log, o.key)
	warnExpiry(log, "server certificate", o.cert, certs.LeafExpiry(tlsCfg))
	// The revocation list in force (a reload may switch it) is checked on
	// every handshake and, with expiry, on live sessions.
	crl := new(crlHolder)
	tlsCfg = crl.wrap(tlsCfg)
	if o.crl != "" {
		rev, err := openCRL(o.ca, o.crl)
		if err != nil {
			return err
		}
		crl.rev.Store(rev)
		log.Info("revocation list loaded", "file", o.crl)
	} else {
		log.Warn("no --crl: revoked client certificates cannot be refused; create one with 'tunneld pki revoke' or 'tunneld pki crl'")
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return cli.ListenError("--listen", o.listen, err)
	}
	defer ln.Close()

	dev, err := tun.Open(o.tunName, o.mtu, tun.Options{Logger: log})
	if err != nil {
		return err
	}
	mgr, err := routing.NewManager(routing.Options{Logger: log})
	if err != nil {
		dev.Close()
		return err
	}
	defer func() {
		if err := mgr.Close(); err != nil {
			log.Warn("removing addresses and routes", "err", err)
		}
	}()
	serverPrefix := netip.PrefixFrom(pool.ServerAddr(), subnet.Bits())
	tunAddrs := []netip.Prefix{serverPrefix}
	if pool6 != nil {
		tunAddrs = append(tunAddrs, netip.PrefixFrom(pool6.ServerAddr(), subnet6.Bits()))
	}
	if err := mgr.Set(ctx, routing.Config{Interface: o.tunName, MTU: o.mtu, Addresses: tunAddrs}); err != nil {
		dev.Close()
		return err
	}

	// Routing between the tunnel and other networks: forwarding on, TCP
	// MSS clamped on forwarded SYNs (no PMTU black holes toward links with
	// a smaller MTU), masquerading with --nat, and client isolation (only
	// reach_clients clients open connections to other clients). All of it
	// is undone at exit; --cleanup removes the nftables table after a
	// crash.
	var fw routing.Firewall
	var fc routing.FirewallConfig
	if needsForwarding(o, st) {
		restore, err := routing.EnableForwarding(o.tunName, pool6 != nil, log)
		if err != nil {
			dev.Close()
			return err
		}
		defer func() {
			if err := restore(); err != nil {
				log.Warn("restoring forwarding settings", "err", err)
			}
		}()
		fw, err = routing.NewFirewall(routing.FirewallOptions{Instance: o.tunName, Logger: log})
		if err != nil {
			dev.Close()
			return err
		}
		defer func() {
			if err := fw.Close(); err != nil {
				log.Warn("removing nftables table", "err", err)
			}
		}()
		fc = serverFirewall(o.tunName, o.nat, subnet, subnet6)
		if err := fw.Set(ctx, fc); err != nil {
			dev.Close()
			return err
		}
		log.Info("forwarding between the tunnel and other networks", "nat", o.nat, "clamp_mss", true, "client_to_client", o.clientToClient)
	}
	// Networks behind clients (site gateways) get kernel routes into the
	// tunnel while their session lives; the firewall lets reach_clients
	// clients (and their networks) open connections to other clients.
	// Most sessions change neither (no networks, no reach_clients), so
	// only a change of the desired state costs netlink calls: a crowd of
	// clients reconnecting after a restart must not rewrite the nftables
	// table once per client. (Calls are serialized by the server.)
	appliedRC := fmt.Sprint(routing.Config{Interface: o.tunName, MTU: o.mtu, Addresses: tunAddrs}.Normalized())
	appliedFC := fmt.Sprint(fc.Normalized())
	peersChanged := func(peers []tunnel.Peer) {
		rc, c := peerState(routing.Config{Interface: o.tunName, MTU: o.mtu, Addresses: tunAddrs}, fc, peers)
		ctx := context.WithoutCancel(ctx) // also on the way out: sessions end after ctx
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

	stats := new(tunnel.Stats)
	limits := tunnel.NewLimiter(limitConfig(o))
	maxConns, nofile := connectionLimit(o.maxConnections)
	log.Info("connection limits", "max_connections", maxConns, "descriptors", nofile, "limits", fmt.Sprintf("%+v", limits.Config()))
	scfg := tunnel.ServerConfig{
		TLS:              tlsCfg,
		Identity:         certs.PeerIdentity,
		Dev:              dev,
		Pool:             pool,
		Subnet:           subnet,
		ServerAddr:       pool.ServerAddr(),
		Subnet6:          subnet6,
		MTU:              o.mtu,
		Routes:           routes,
		DNS:              dns,
		Keepalive:        o.keepalive,
		HandshakeTimeout: o.handshakeTimeout,
		HelloTimeout:     o.helloTimeout,
		MaxConnections:   maxConns,
		QueueLen:         o.queueLen,
		NoOffload:        o.noOffload,
		StdlibRecords:    o.stdlibRecords,
		OwnAESGCM:        cli.RecordLayer(log, o.stdlibRecords, o.ownAESGCM),
		Limits:           limits,
		TuneConn:         func(c net.Conn) { cli.TuneTCP(c, 3*o.keepalive, congestion) },
		CheckPeer:        crl.checkPeer,
		Policy:           func(id string) tunnel.Policy { return policies.Load().policy(id) },
		PeersChanged:     peersChanged,
		Logger:           log,
		Stats:            stats,
	}
	if pool6 != nil { // a nil *Pool must not become a non-nil Assigner
		scfg.Pool6, scfg.ServerAddr6 = pool6, pool6.ServerAddr()
	}
	srv, err := tunnel.NewServer(scfg)
	if err != nil {
		dev.Close()
		return err
	}
	if o.metrics != "" {
		gauges := []cli.Gauge{
			{Name: "sessions", Help: "Live client sessions.", Value: func() float64 { return float64(srv.Sessions()) }},
			{Name: "connections", Help: "Connections open, handshaking or in a session (--max-connections caps them).", Value: func() float64 { return float64(srv.Connections()) }},
		}
		if fw != nil {
			gauges = append(gauges, cli.Gauge{Name: "client_isolation_drops_total", Counter: true,
				Help: "Packets between clients dropped because the sender may not reach other clients (reach_clients).",
				Value: func() float64 {
					n, _ := fw.IsolationDrops()
					return float64(n)
				}})
		}
		if err := cli.ServeMetrics(ctx, o.metrics, "tunneld", stats, gauges, limits, log); err != nil {
			dev.Close()
			return err
		}
	}
	rl := newReloader(&reloader{src: src, level: level, pool: pool, pool6: pool6, policies: &policies, srv: srv,
		limits: limits, crl: crl, forwarding: fw != nil, log: log}, o)
	go rl.watch(ctx)
	startControl(ctx, ctl, &controlSource{srv: srv, stats: stats, limits: limits, reload: rl, crl: crl,
		listen: ln.Addr().String(), tun: o.tunName, subnets: tunnelSubnets(subnet, subnet6),
		certFile: o.cert, certEnd: certs.LeafExpiry(tlsCfg)}, log)
	go releaseMemory(ctx, time.Minute)
	log.Info("listening", "addr", ln.Addr().String(), "ifname", o.tunName, "tunnel_addr", serverPrefix,
		"mtu", o.mtu, "routes", len(routes), "keepalive", o.keepalive, "congestion", cli.CongestionName(congestion))
	cli.NotifyStopping(ctx, log)
	cli.NotifyReady(log, "listening on "+ln.Addr().String())
	err = srv.Serve(ctx, ln) // closes dev
	log.Info("stopped", cli.StatsAttrs(stats)...)
	return err
}

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
// --nat (subnet6 invalid without an IPv6 pool).
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

// pinAddresses leases each configured address to its client, taking it
// from any client that held it dynamically; it returns the identities
// whose address changed (their live sessions must reconnect).
func pinAddresses(c clientPolicies, pool, pool6 *routing.Pool) ([]string, error) {
	var moved []string
	for _, id := range slices.Sorted(maps.Keys(c)) {
		e := c[id]
		for _, pin := range []struct {
			p *routing.Pool
			a netip.Addr
		}{{pool, e.Addr}, {pool6, e.Addr6}} {
			if !pin.a.IsValid() || pin.p == nil {
				continue
			}
			before, _ := pin.p.Lookup(id)
			evicted, err := pin.p.Pin(id, pin.a)
			if err != nil {
				return moved, err
			}
			if before.IsValid() && before != pin.a {
				moved = append(moved, id)
			}
			if evicted != "" {
				moved = append(moved, evicted)
			}
		}
	}
	slices.Sort(moved)
	return slices.Compact(moved), nil
}
