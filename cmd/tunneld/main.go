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
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/server"
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
       tunneld fleet publish-crl|publish-clients FILE --config FILE
                                                  (a fleet sharing state in etcd; see 'tunneld fleet --help')
       tunneld status|clients|reload|drain|kick NAME [--tun NAME | --control PATH | --config FILE] [--json]
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

  # share port 443 with a web server on 127.0.0.1:8443 that takes PROXY protocol:
  # browsers and scanners get the website, tunnelc the VPN (see README)
  tunneld --cert ... --key ... --ca ... --share-backend 127.0.0.1:8443 --share-proxy-protocol

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
	share                 shareOptions
	fleetFlags            // --state etcd: fleet.go
	ctl                   cli.ControlFlags
	bgp                   bgpOptions
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
	fleetCmd, args, fleetErr := fleetCommand(args, stdout)
	if fleetErr != nil {
		if errors.Is(fleetErr, pflag.ErrHelp) {
			return fleetErr
		}
		return &cli.UsageError{Err: fleetErr}
	}
	checkOnly := len(args) > 0 && args[0] == "check"
	if checkOnly {
		args = args[1:]
	}
	var o options
	fs := pflag.NewFlagSet("tunneld", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&o.config, "config", "", "read settings from a YAML FILE whose keys are the long flag names, e.g. /etc/tlsvpn/tunneld.yaml (see README); a flag on the command line overrides the file; 'tunneld reload' (or SIGHUP) re-reads it")
	fs.StringVar(&o.listen, "listen", "0.0.0.0:443", "TCP address ADDR:PORT to accept clients on, e.g. 198.18.0.1:443 or [2001:db8::1]:443")
	fs.StringVar(&o.cert, "cert", "", "server certificate FILE (PEM), e.g. /etc/tlsvpn/pki/server.crt (required)")
	fs.StringVar(&o.key, "key", "", "server private key FILE (PEM), e.g. /etc/tlsvpn/pki/server.key (required)")
	fs.StringVar(&o.ca, "ca", "", "CA certificate FILE that client certificates must chain to, e.g. /etc/tlsvpn/pki/ca.crt (required)")
	fs.StringVar(&o.subnet, "subnet", "100.64.0.0/24", "tunnel subnet CIDR; the server takes the first host address, clients the rest")
	fs.StringVar(&o.subnet6, "subnet6", "", "IPv6 tunnel subnet CIDR for dual stack, e.g. fd00:64::/64: each client also gets an IPv6 address from it, the server the first one (off if empty)")
	fs.StringArrayVar(&o.dns, "dns", nil, "DNS server IP pushed to clients, e.g. --dns 100.64.0.1 (repeatable); tunnelc applies it through systemd-resolved or /etc/resolv.conf while connected")
	fs.BoolVar(&o.nat, "nat", false, "masquerade client traffic that leaves the server through its other interfaces (nftables table inet tlsvpn-<tun>), so networks behind the server need no route back to --subnet")
	fs.StringVar(&o.clients, "clients", "", "per-client policy FILE (YAML keyed by certificate name: address, routes, advertise, reach_clients; see README), e.g. /etc/tlsvpn/clients.yaml; re-read by 'tunneld reload' (or SIGHUP): only clients whose entry changed reconnect")
	fs.BoolVar(&o.clientToClient, "client-to-client", false, "let clients open connections to each other through the server (the default for reach_clients in --clients); replies to allowed connections always pass")
	fs.StringVar(&o.tunName, "tun", "tunneld0", "name of the TUN interface to create")
	fs.IntVar(&o.mtu, "mtu", 1500, "tunnel MTU, pushed to clients (576-65535)")
	fs.StringArrayVar(&o.routes, "route", nil, "CIDR that clients route through the tunnel, e.g. --route 198.18.10.0/24 (repeatable)")
	fs.DurationVar(&o.keepalive, "keepalive", 15*time.Second, "ping interval pushed to clients; a session silent for 3 intervals is closed (0 disables)")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 10*time.Second, "time a new connection has to complete the TLS and protocol handshakes")
	fs.IntVar(&o.queueLen, "queue-len", tunnel.DefaultQueueLen, "per-client send queue bound in chunks (up to 64 KiB each); a full queue drops")
	fs.StringVar(&o.crl, "crl", "", "certificate revocation list FILE (PEM) from 'tunneld pki revoke', e.g. /etc/tlsvpn/pki/crl.pem: checked on every handshake and resumption, reloaded when it changes or on 'tunneld reload' (or SIGHUP); live sessions of newly revoked clients are closed. A missing, expired or wrongly signed CRL refuses every client (fail closed)")
	fs.DurationVar(&o.crlCheck, "crl-check", 5*time.Second, "how often to look for a changed --crl file and re-check live sessions (revocation, certificate expiry)")
	fs.StringVar(&o.stateDir, "state-dir", server.StateRoot+"/<tun>", "directory for state that must survive restarts, one per instance (locked while it runs): leases.json keeps each client's tunnel address (\"\" keeps leases in memory only)")
	addFleetFlags(fs, &o.fleetFlags)
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
	fs.BoolVar(&o.ownAESGCM, "own-aes-gcm", false, "seal and open AES-GCM records with tlsvpn's own AES-GCM assembly (VAES + AVX-512) instead of Go's: it seals a 16 KiB record about 1.75x as fast on the benchmark machine (BENCHMARKS.md), but is new cryptographic code outside Go's FIPS module and less reviewed; checked against known answers at start, and Go's AES-GCM is used (with a log line) where it cannot run. Off by default")
	fs.StringVar(&o.congestion, "congestion", cli.DefaultCongestion, cli.CongestionUsage)
	addShareFlags(fs, &o.share)
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on ADDR:PORT at /metrics, e.g. 127.0.0.1:9100 (off if empty)")
	addBGPFlags(fs, &o.bgp)
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
	if fs.NArg() > 0 && fleetCmd == "" {
		return cli.Usagef("unexpected argument %q (see 'tunneld --help')", fs.Arg(0))
	}
	src := newSource(fs, &o)
	if fleetCmd != "" {
		return runFleet(ctx, fleetCmd, fs.Args(), src, stdout)
	}
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

// serve runs the server of o until ctx ends.
func serve(ctx context.Context, o options, log *slog.Logger, src *source, level *slog.LevelVar) error {
	st, errs := parseSettings(o)
	if len(errs) > 0 {
		return &cli.UsageError{Err: locateAll(o.file, errs)}
	}
	srv, err := server.New(ctx, serverConfig(o, st), server.Options{Logger: log, Level: level, Source: src.config, Version: cli.Version})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
