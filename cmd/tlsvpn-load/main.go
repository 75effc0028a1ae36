// Command tlsvpn-load is a load generator for tunneld. It opens many real
// sessions, each with its own client certificate minted in memory from the
// project CA, speaks the tlsvpn protocol itself (TLS 1.3 with ALPN
// tlsvpn/1, HELLO, CONFIG, then PING/PONG and optional DATA, without a TUN
// device), holds them, churns some of them, and reports what the server
// did: connect latency, sessions per second, failures by reason, and the
// server's memory, CPU, descriptors and goroutines. scripts/load.sh runs
// it against a tunneld in a network namespace.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, pflag.ErrHelp) {
		err = nil
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsvpn-load:", err)
	}
	os.Exit(cli.ExitCode(err))
}

const usageHead = `Usage: tlsvpn-load --server ADDR:PORT --pki DIR [flags]
       tlsvpn-load floor server|idle|handshake [flags]   (see tlsvpn-load floor --help)

tlsvpn-load opens --sessions real tlsvpn sessions to tunneld, each with its own
client certificate (ECDSA P-256, named PREFIX00001, ...) minted in memory from
the CA in --pki (ca.crt and ca.key from 'tunneld pki init'). It ramps them up at
--rate, holds them for --hold with keepalives and optional --traffic, churns
--churn more sessions (connect, live --churn-life, close, reconnect), optionally
checks that every held session still answers a PING, closes every session with
CLOSE code 0 and prints a report (--json for a machine-readable copy). With
--server-pid and --metrics-url it also reports tunneld's RSS, CPU per connect,
open descriptors and goroutines before, at the peak and after.

It exits 1 when a --require-* or --max-failures expectation fails, or when the
run was cut short by --timeout or a signal.

Flags:
`

const usageTail = `
Examples:
  # 200 sessions from one address, hold 10 s, check every session answers a ping
  tlsvpn-load --server 198.18.0.1:443 --pki /tmp/pki --sessions 200 --hold 10s \
    --ping-check --require-ping-all --max-failures 0

  # 10,000 sessions from 4094 addresses as fast as possible, with 50 churning
  tlsvpn-load --server 198.18.0.1:443 --pki /tmp/pki --sessions 10000 --rate 0 \
    --source 198.19.0.0/20:4094 --churn 50 --resume \
    --server-pid "$(pidof tunneld)" --metrics-url http://198.18.0.1:9100/metrics --json load.json
`

// options are the command-line settings; see the flag help for each.
type options struct {
	server, serverName   string
	pki, namePrefix      string
	sessions             int
	rate                 float64
	concurrency          int
	hold                 time.Duration
	churn                int
	churnFor, churnLife  time.Duration
	traffic              float64
	trafficSize          int
	pingCheck            bool
	pingTimeout          time.Duration
	resume, reconnect    bool
	noGSO                bool
	sources              []netip.Addr
	connectTimeout       time.Duration
	rampTimeout, timeout time.Duration
	closeWait, settle    time.Duration
	serverPID            int
	serverPIDFile        string
	metricsURL           string
	metricsPrefix        string
	sampleEvery          time.Duration
	progress             time.Duration
	jsonFile, readyFile  string
	cpuProfile           string
	stopWhenRecovered    bool
	requirePingAll       bool
	requireRecovered     bool
	maxFailures          int
}

func parseFlags(args []string, stdout, stderr io.Writer) (options, error) {
	var o options
	var sources []string
	fs := pflag.NewFlagSet("tlsvpn-load", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&o.server, "server", "", "tunneld's ADDR:PORT, e.g. 198.18.0.1:443 (required)")
	fs.StringVar(&o.serverName, "server-name", "", "name or IP the server certificate carries (default: the host of --server)")
	fs.StringVar(&o.pki, "pki", "", "DIR holding ca.crt and ca.key from 'tunneld pki init' (required)")
	fs.StringVar(&o.namePrefix, "name-prefix", "load-", "client certificate names are PREFIX00001, PREFIX00002, ...")
	fs.IntVar(&o.sessions, "sessions", 100, "sessions to open and hold")
	fs.Float64Var(&o.rate, "rate", 0, "new connections per second while ramping up (0: as fast as --concurrency allows)")
	fs.IntVar(&o.concurrency, "concurrency", 32, "most handshakes (TCP connect to CONFIG) in flight at once, for the ramp and churn")
	fs.DurationVar(&o.hold, "hold", 10*time.Second, "how long to hold the sessions once the ramp is over")
	fs.IntVar(&o.churn, "churn", 0, "extra sessions (own certificates) that connect, live --churn-life, close and reconnect, over and over")
	fs.DurationVar(&o.churnFor, "churn-for", 0, "how long the churn runs, from the end of the ramp; extends the hold if longer (default: --hold)")
	fs.DurationVar(&o.churnLife, "churn-life", time.Second, "how long a churn session stays up before it closes (each drawn from half to one and a half times this)")
	fs.Float64Var(&o.traffic, "traffic", 0, "DATA packets per second per held session: IPv4/UDP from its tunnel address to the server's, port 9 (0: none)")
	fs.IntVar(&o.trafficSize, "traffic-size", 64, "UDP payload bytes of each --traffic packet")
	fs.BoolVar(&o.pingCheck, "ping-check", false, "after the hold, every held session sends a PING and must get its PONG within --ping-timeout")
	fs.DurationVar(&o.pingTimeout, "ping-timeout", 5*time.Second, "how long --ping-check waits for each PONG")
	fs.BoolVar(&o.resume, "resume", false, "reconnect with TLS session tickets (one session cache per identity)")
	fs.BoolVar(&o.reconnect, "reconnect", false, "reconnect failed and lost sessions like tunnelc: backoff from 250ms doubling to 30s, each wait drawn from half to one and a half times it (tunnel.Jitter)")
	fs.BoolVar(&o.noGSO, "no-gso", false, "do not announce CapGSO in HELLO (by default announced as a Linux tunnelc does, so the server's GSO mode is what real clients give it)")
	fs.StringArrayVar(&sources, "source", nil, "local source addresses, comma-separated or repeated: ADDR, CIDR (every host address) or CIDR:N (its first N host addresses); session i uses address i mod count (default: the kernel picks)")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 15*time.Second, "bound on one attempt: TCP connect, TLS handshake and CONFIG")
	fs.DurationVar(&o.rampTimeout, "ramp-timeout", 5*time.Minute, "bound on the ramp; the hold starts then whatever is up")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound on the whole run; it then closes what is open and reports")
	fs.DurationVar(&o.closeWait, "close-wait", 2*time.Second, "how long a closing session waits for the server's CLOSE answer")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "wait after closing everything before the server's 'after' sample")
	fs.IntVar(&o.serverPID, "server-pid", 0, "tunneld's PID, for its RSS, CPU and open descriptors from /proc")
	fs.StringVar(&o.serverPIDFile, "server-pid-file", "", "FILE holding tunneld's PID, re-read at every sample (a restarted server changes it)")
	fs.StringVar(&o.metricsURL, "metrics-url", "", "tunneld's metrics URL (its --metrics), e.g. http://198.18.0.1:9100/metrics, for goroutines and refusal counters")
	fs.StringVar(&o.metricsPrefix, "metrics-prefix", "tunneld", "prefix of the server's own metrics")
	fs.DurationVar(&o.sampleEvery, "sample-every", time.Second, "how often to sample the server's and our own resource use")
	fs.DurationVar(&o.progress, "progress", 2*time.Second, "how often to print a progress line on stderr (0: never)")
	fs.StringVar(&o.jsonFile, "json", "", "also write the report as JSON to FILE")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the load generator itself to FILE, for 'go tool pprof' (off if empty)")
	fs.StringVar(&o.readyFile, "ready-file", "", "write FILE when the ramp is over (for scripts that act during the hold)")
	fs.BoolVar(&o.stopWhenRecovered, "stop-when-recovered", false, "end the hold 2 s after every held session is back from an outage (a server restart), instead of waiting out --hold")
	fs.BoolVar(&o.requirePingAll, "require-ping-all", false, "fail unless every one of --sessions answered the --ping-check")
	fs.BoolVar(&o.requireRecovered, "require-recovered", false, "fail unless an outage happened during the hold and every held session came back")
	fs.IntVar(&o.maxFailures, "max-failures", -1, "fail if more failures than this were counted (connects, lost sessions, ping-check; -1: no limit)")
	fs.Usage = func() {
		fmt.Fprint(stdout, usageHead)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fmt.Fprint(stdout, usageTail)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return o, err
		}
		return o, &cli.UsageError{Err: fmt.Errorf("%w (see 'tlsvpn-load --help')", err)}
	}
	if fs.NArg() > 0 {
		return o, cli.Usagef("unexpected argument %q (see 'tlsvpn-load --help')", fs.Arg(0))
	}
	if o.server == "" || o.pki == "" {
		return o, cli.Usagef("--server and --pki are required, e.g. --server 198.18.0.1:443 --pki /tmp/pki")
	}
	host, _, err := net.SplitHostPort(o.server)
	if err != nil {
		return o, cli.Usagef("--server %q: want ADDR:PORT, e.g. 198.18.0.1:443", o.server)
	}
	if o.serverName == "" {
		o.serverName = host
	}
	switch {
	case o.sessions < 0 || o.churn < 0:
		return o, cli.Usagef("--sessions and --churn must not be negative")
	case o.sessions+o.churn == 0:
		return o, cli.Usagef("nothing to do: --sessions and --churn are both 0")
	case o.sessions+o.churn > 99999:
		return o, cli.Usagef("at most 99999 sessions and churn sessions together (names have five digits)")
	case o.rate < 0 || o.traffic < 0:
		return o, cli.Usagef("--rate and --traffic must not be negative")
	case o.concurrency < 1:
		return o, cli.Usagef("--concurrency must be at least 1")
	case o.trafficSize < 0 || o.trafficSize > 1400:
		return o, cli.Usagef("--traffic-size %d: want 0 to 1400 bytes (one packet under a 1500-byte MTU)", o.trafficSize)
	case o.traffic > 10000:
		return o, cli.Usagef("--traffic %g: at most 10000 packets per second per session", o.traffic)
	case o.hold < 0 || o.churnFor < 0 || o.churnLife < 0:
		return o, cli.Usagef("durations must not be negative")
	case o.connectTimeout <= 0 || o.timeout <= 0 || o.rampTimeout <= 0 || o.pingTimeout <= 0 || o.sampleEvery <= 0:
		return o, cli.Usagef("--connect-timeout, --ramp-timeout, --timeout, --ping-timeout and --sample-every must be positive")
	case o.maxFailures < -1:
		return o, cli.Usagef("--max-failures %d: want -1 (no limit) or more", o.maxFailures)
	case o.requirePingAll && !o.pingCheck:
		return o, cli.Usagef("--require-ping-all needs --ping-check")
	case o.serverPID != 0 && o.serverPIDFile != "":
		return o, cli.Usagef("pass --server-pid or --server-pid-file, not both")
	}
	if !fs.Changed("churn-for") {
		o.churnFor = o.hold
	}
	if o.sources, err = parseSources(sources); err != nil {
		return o, &cli.UsageError{Err: err}
	}
	o.namePrefix = strings.TrimSpace(o.namePrefix)
	return o, nil
}

// parseSources expands the --source values: addresses, CIDRs (every host
// address) and CIDR:N (its first N host addresses), comma-separated.
func parseSources(vals []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, v := range vals {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			addrs, err := expandSource(item)
			if err != nil {
				return nil, err
			}
			out = append(out, addrs...)
		}
	}
	return out, nil
}

// maxSources bounds one --source prefix so a typo (a /8) cannot make the
// generator allocate millions of addresses.
const maxSources = 1 << 16

func expandSource(item string) ([]netip.Addr, error) {
	if !strings.Contains(item, "/") {
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("--source %q: want an address such as 198.19.0.1, a CIDR such as 198.19.0.0/20 or CIDR:N", item)
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	pfx, count := item, -1
	// The count follows the prefix length, so IPv6 colons before the '/'
	// are never taken for it.
	slash := strings.IndexByte(item, '/')
	if i := strings.LastIndexByte(item, ':'); i > slash {
		pfx = item[:i]
		if _, err := fmt.Sscanf(item[i+1:], "%d", &count); err != nil || count < 1 {
			return nil, fmt.Errorf("--source %q: the count after ':' must be a positive number", item)
		}
	}
	p, err := netip.ParsePrefix(pfx)
	if err != nil {
		return nil, fmt.Errorf("--source %q: %v", item, err)
	}
	p = p.Masked()
	hostBits := p.Addr().BitLen() - p.Bits()
	hosts := uint64(1) << min(hostBits, 62)
	// IPv4 prefixes of /30 and wider lose their network and broadcast
	// addresses; a /31 or /32 (and IPv6) keeps every address.
	first := p.Addr()
	if p.Addr().Is4() && hostBits >= 2 {
		first = first.Next()
		hosts -= 2
	}
	if count < 0 {
		if hosts > maxSources {
			return nil, fmt.Errorf("--source %q: %v has more than %d addresses; add :N to take the first N", item, p, maxSources)
		}
		count = int(hosts)
	}
	if uint64(count) > hosts {
		return nil, fmt.Errorf("--source %q: %v has only %d host addresses", item, p, hosts)
	}
	if count > maxSources {
		return nil, fmt.Errorf("--source %q: at most %d addresses per prefix", item, maxSources)
	}
	out := make([]netip.Addr, 0, count)
	for a := first; len(out) < count; a = a.Next() {
		out = append(out, a)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "floor" {
		return runFloor(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	stopProfile, err := cli.StartCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	g, err := newGen(o, stderr)
	if err != nil {
		return err
	}
	rep := g.run(ctx)
	if err := rep.writeText(stdout); err != nil {
		return err
	}
	if o.jsonFile != "" {
		if err := rep.writeJSON(o.jsonFile); err != nil {
			return err
		}
	}
	if failed := rep.failedChecks(); len(failed) > 0 {
		return fmt.Errorf("%s", strings.Join(failed, "; "))
	}
	return nil
}
