// Command tunnelc is the tlsvpn client: it connects to tunneld over
// mutually authenticated TLS 1.3, creates a TUN device with the address,
// MTU and routes the server assigns, and carries packets until it is
// stopped, then removes what it installed. The agent is package
// tlsvpn/client; this command reads the flags and the config file, sets
// up logging and stops the agent on SIGINT or SIGTERM.
package main

import (
	"cmp"
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

	"tlsvpn/client"
	"tlsvpn/cmd/internal/cli"
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
       tunnelc status [--tun NAME | --control PATH | --profile NAME] [--json]   (ask a running tunnelc; see 'tunnelc status --help')
       tunnelc reconnect [SERVER] [--tun NAME | --control PATH]  (new session now; to SERVER or another server)

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
every 5 minutes. When the machine wakes from sleep (or the local address of
the connection goes away) it reconnects at once instead of waiting for the
keepalive to fail.

With several --server flags (or a list, "server: [a:443, b:443]", in the
config file) each attempt tries them in turn, each with every address its
name resolves to: the server of the last session first, the others in a
random order (remembered while tunnelc runs, drawn afresh at each start). It
stays on a server while it works and moves to another when it fails, or when
told with 'tunnelc reconnect'. The kill switch lets every server's addresses
through, and the full tunnel's route outside the tunnel follows the server
in use.

Captive portals (hotels, airports, trains): when connection attempts fail, it
probes --portal-probe through the physical interface; any answer but 204 is a
portal, which it logs and shows in 'tunnelc status' with the portal's URL.
With --kill-switch it then opens, for --portal-window, only DNS (port 53) and
TCP 80 and 443 out of that interface, IPv4 and IPv6, so a browser can log in;
the hole closes when the tunnel is up, the probe answers 204 again, or the
window ends (it reopens after a new probe, at most 3 times in a row).
With --kill-switch, if the full tunnel's routes of a lost session are still in
place (the laptop slept with the tunnel up and woke behind the portal), it
also takes them and the pushed DNS settings off until the next session. --no-portal turns all of
this off.

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

  # two servers: whichever is up; 'tunnelc reconnect vpn1.example.com:443' moves back
  tunnelc --server vpn1.example.com:443 --server vpn2.example.com:443 --cert laptop.crt --key laptop.key --ca ca.crt

  # behind captive portals: the kill switch opens DNS and TCP 80/443 for 2
  # minutes when a portal is found; or never (--no-portal)
  tunnelc --server 192.0.2.1:443 --cert laptop.crt --key laptop.key --ca ca.crt --full-tunnel --kill-switch --portal-window 2m
  tunnelc --server 192.0.2.1:443 --cert laptop.crt --key laptop.key --ca ca.crt --full-tunnel --kill-switch --no-portal

  # from an office whose only way out is its HTTP proxy (USER:PASSWORD in a
  # file of mode 600; socks5://HOST:PORT for a SOCKS5 proxy); without --proxy,
  # HTTPS_PROXY or ALL_PROXY from the environment is used, --proxy none ignores it
  tunnelc --server vpn.example.com:443 --cert laptop.crt --key laptop.key --ca ca.crt \
    --proxy http://proxy.corp.example:3128 --proxy-auth-file /etc/tlsvpn/client/proxy-auth

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
	servers             []string // --server, repeatable
	serverName          string
	proxy, proxyAuth    string // --proxy URL or "none", --proxy-auth-file; proxy.go
	proxySet            bool   // --proxy given (command line or file)
	proxyOnCmdline      bool   // --proxy given on the command line
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
	noPortal            bool
	portalProbe         string
	portalWindow        time.Duration
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
	if len(args) > 0 && args[0] == "reconnect" {
		return cli.RunControl(ctx, reconnectCommand, args[1:], stdout, stderr)
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
	fs.StringArrayVar(&o.servers, "server", nil, "server HOST:PORT to connect to, e.g. vpn.example.com:443 or 192.0.2.1:443 (required); repeat it for several servers: the one of the last session first, the others in random order, every address of each name; 'tunnelc reconnect' moves to another")
	fs.StringVar(&o.serverName, "server-name", "", "name every server certificate must carry (default: the host part of each --server), e.g. vpn.example.com")
	addProxyFlags(fs, &o)
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
	fs.BoolVar(&o.noPortal, "no-portal", false, "never probe for a captive portal and never open the kill switch for one: stay sealed (log in to a portal with tunnelc stopped)")
	fs.StringVar(&o.portalProbe, "portal-probe", client.DefaultPortalProbe, "http:// URL that answers 204 on an open network, fetched through the physical interface when the server cannot be reached; any other answer (a redirect, a page) means a captive portal")
	fs.DurationVar(&o.portalWindow, "portal-window", client.DefaultPortalWindow, "with --kill-switch, how long a captive portal found by the probe may be reached: DNS (port 53) and TCP 80 and 443 out of the physical interface, IPv4 and IPv6; closed earlier when the tunnel comes up")
	fs.BoolVar(&o.noResumption, "no-resumption", false, "always do a full TLS handshake on reconnect instead of resuming with a session ticket")
	fs.BoolVar(&o.noOffload, "no-offload", false, "do not carry GSO super-packets whole; packets are split to the MTU and sent one per frame (interoperates either way)")
	fs.BoolVar(&o.stdlibRecords, "stdlib-tls-records", false, "carry the data phase through Go's crypto/tls instead of tlsvpn's own TLS 1.3 record layer: the same bytes on the wire, more copying (for comparison or troubleshooting)")
	fs.BoolVar(&o.ownAESGCM, "own-aes-gcm", false, "seal and open AES-GCM records with tlsvpn's own AES-GCM assembly (VAES + AVX-512) instead of Go's: it seals a 16 KiB record about 1.75x as fast on the benchmark machine (BENCHMARKS.md), but is new cryptographic code outside Go's FIPS module and less reviewed; checked against known answers at start, and Go's AES-GCM is used (with a log line) where it cannot run. Off by default")
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
	o.proxyOnCmdline = fs.Changed("proxy")
	file, err := applyConfig(fs, &o)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	o.congestionSet = fs.Changed("congestion")
	o.proxySet = fs.Changed("proxy")
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

// connect runs the client agent that o describes until ctx ends.
func connect(ctx context.Context, o options, log *slog.Logger) error {
	cfg := client.Config{
		Servers: o.servers, ServerName: o.serverName, Cert: o.cert, Key: o.key, CA: o.ca, TUN: o.tunName,
		HandshakeTimeout: o.handshakeTimeout, QueueLen: o.queueLen, MaxAttempts: o.maxAttempts,
		RotateBytes: o.rotateBytes, RotateAfter: o.rotateAfter, NoResumption: o.noResumption,
		FullTunnel: o.fullTunnel, KillSwitch: o.killSwitch, Advertise: o.advertise,
		NoPortal: o.noPortal, PortalProbe: o.portalProbe, PortalWindow: o.portalWindow,
		NoOffload: o.noOffload, StdlibRecords: o.stdlibRecords, OwnAESGCM: o.ownAESGCM,
		Metrics: o.metrics, Control: o.ctl.Socket(o.tunName), ControlGroup: o.ctl.Group,
	}
	if o.congestionSet {
		// Given, even as "": an error if the kernel does not have it.
		cfg.Congestion = cmp.Or(o.congestion, cli.SystemCongestion)
	}
	cfg.Proxy, cfg.ProxyFrom, cfg.ProxyAuthFile = proxyFor(o, os.Getenv, log)
	c, err := client.New(cfg, log)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Run(ctx)
}
