package main

// tlsvpn-load floor: what Go's runtime and crypto/tls alone cost on this
// machine for the two kinds of work the scale targets are about, with
// nothing of tlsvpn's own in the way. A target that even the floor misses
// is out of reach here for any Go server; the gap between tunneld and the
// floor is what tunneld itself adds.
//
//   - idle: N connections, each sending one 21-byte message (the size of
//     a PING frame) every --every at a random phase, which the server
//     reads and writes back: a keepalive and its answer, on plain TCP or
//     on TLS 1.3 with tunneld's settings.
//   - handshake: full TLS 1.3 handshakes with tunneld's TLS settings
//     (certs.ServerConfigFrom and certs.ClientConfigFrom: X25519MLKEM768,
//     ECDSA P-256, client certificates verified against the project CA),
//     each followed by one 21-byte message each way (HELLO and CONFIG's
//     stand-in) and a close, at a fixed rate or as fast as --concurrency
//     allows; with --resume, tickets are used as tunnelc does.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/certs"
	"tlsvpn/tunnel"
)

// floorMsgLen is a PING frame's size: a 5-byte header and 16 bytes.
const floorMsgLen = 21

type floorOptions struct {
	listen, server, serverName, pki string
	plain                           bool
	serverPID                       int
	conns                           int
	every, settle, window           time.Duration
	rate                            float64
	concurrency                     int
	identities                      int
	resume, handshakeOnly, tlsvpn   bool
	sources                         []netip.Addr
}

const floorUsage = `Usage:
  tlsvpn-load floor server --listen ADDR:PORT --pki DIR [--plain]
  tlsvpn-load floor idle --server ADDR:PORT --pki DIR --server-pid PID [flags]
  tlsvpn-load floor handshake --server ADDR:PORT --pki DIR --server-pid PID [flags]

The floor is what Go's runtime and crypto/tls alone cost on this machine for
the work a tunneld does at scale, measured with nothing of tlsvpn's own: a
server that only answers (floor server) and a client (idle: N connections,
each sending a PING-sized message every --every that the server writes back;
handshake: full TLS 1.3 handshakes with tunneld's TLS settings and client
certificates, then one message each way and a close). The client reads the
server's CPU time from /proc. scripts/load.sh runs it with LOAD_SCENARIO=floor,
and with LOAD_SCENARIO=connect points 'handshake --tlsvpn' at a real tunneld
(TLS, HELLO, CONFIG, CLOSE) to measure tunneld's connect cost the same way.

Flags:
`

func runFloor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "server" && args[0] != "idle" && args[0] != "handshake") {
		fmt.Fprint(stderr, floorUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return pflag.ErrHelp
		}
		return errors.New("floor: want server, idle or handshake")
	}
	mode := args[0]
	var o floorOptions
	fs := pflag.NewFlagSet("tlsvpn-load floor "+mode, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() { fmt.Fprint(stderr, floorUsage); fs.PrintDefaults() }
	fs.StringVar(&o.listen, "listen", "", "server: ADDR:PORT to listen on")
	fs.StringVar(&o.server, "server", "", "client: the floor server's ADDR:PORT")
	fs.StringVar(&o.serverName, "server-name", "", "client: name or IP in the server certificate (default: the host of --server)")
	fs.StringVar(&o.pki, "pki", "", "DIR holding ca.crt and ca.key from 'tunneld pki init': both sides mint their certificates from it in memory")
	fs.BoolVar(&o.plain, "plain", false, "plain TCP instead of TLS 1.3 (both sides must agree; handshake mode needs TLS)")
	fs.IntVar(&o.serverPID, "server-pid", 0, "client: the floor server's PID, for its CPU time from /proc (required)")
	fs.IntVar(&o.conns, "conns", 10000, "idle: connections to open and hold")
	fs.DurationVar(&o.every, "every", 15*time.Second, "idle: one message per connection this often")
	fs.DurationVar(&o.settle, "settle", 20*time.Second, "wait this long after the ramp (idle) before the measured window")
	fs.DurationVar(&o.window, "window", 60*time.Second, "the measured window")
	fs.Float64Var(&o.rate, "rate", 0, "handshake: new connections per second (0: as fast as --concurrency allows)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "handshakes in flight at most (idle: while ramping up)")
	fs.IntVar(&o.identities, "identities", 256, "client certificates to mint and use in turn")
	fs.BoolVar(&o.resume, "resume", false, "handshake: resume with TLS session tickets after each identity's first handshake")
	fs.BoolVar(&o.tlsvpn, "tlsvpn", false, "handshake: after TLS, HELLO and CONFIG as tlsvpn-load and tunnelc do, then CLOSE: the server is a tunneld (same CA) and the latency is connect to CONFIG, measured by this lean client")
	fs.BoolVar(&o.handshakeOnly, "handshake-only", false, "handshake: close right after the TLS handshake, without the message each way; the latency is then TCP connect to TLS done, and the server may be a tunneld (same CA), whose TLS phase this measures with the floor's client")
	var sources []string
	fs.StringArrayVar(&sources, "source", nil, "client: local addresses to connect from, in turn, as tlsvpn-load's --source: ADDR, CIDR or CIDR:N, comma-separated or repeated (a tunneld's per-source limits apply)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var err error
	if o.sources, err = parseSources(sources); err != nil {
		return err
	}
	if o.pki == "" && !(mode == "server" && o.plain) {
		return errors.New("floor: --pki is required")
	}
	if mode == "handshake" && o.plain {
		return errors.New("floor: handshake mode measures TLS; --plain makes no sense there")
	}
	if _, err := raiseNofile(uint64(o.conns) + 256); err != nil {
		return err
	}
	switch mode {
	case "server":
		if o.listen == "" {
			return errors.New("floor server: --listen is required")
		}
		return floorServe(ctx, o, stderr)
	default:
		if o.server == "" || o.serverPID <= 0 {
			return errors.New("floor: --server and --server-pid are required")
		}
		if o.serverName == "" {
			host, _, err := net.SplitHostPort(o.server)
			if err != nil {
				return fmt.Errorf("floor: --server %q: %w", o.server, err)
			}
			o.serverName = host
		}
		if mode == "idle" {
			return floorIdle(ctx, o, stdout)
		}
		return floorHandshakes(ctx, o, stdout)
	}
}

// floorServe answers every connection: TLS handshake (unless --plain),
// then each 21-byte message is written back, until the client closes.
func floorServe(ctx context.Context, o floorOptions, stderr io.Writer) error {
	var cfg *tls.Config
	if !o.plain {
		ca, err := certs.LoadCA(o.pki)
		if err != nil {
			return err
		}
		host, _, err := net.SplitHostPort(o.listen)
		if err != nil {
			return err
		}
		req := certs.IssueRequest{Name: "floor-server", Server: true, Days: 1, Algorithm: certs.ECDSA}
		if ip := net.ParseIP(host); ip != nil {
			req.IPs = []net.IP{ip}
		} else {
			req.DNSNames = []string{host}
		}
		cert, err := ca.IssueCert(req)
		if err != nil {
			return err
		}
		cfg = certs.ServerConfigFrom(cert, ca.Pool())
		cfg.NextProtos = []string{tunnel.ALPN}
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	fmt.Fprintf(stderr, "floor server: listening on %s (tls %v)\n", ln.Addr(), !o.plain)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go floorAnswer(c, cfg)
	}
}

func floorAnswer(c net.Conn, cfg *tls.Config) {
	defer c.Close()
	if cfg != nil {
		tc := tls.Server(c, cfg)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return
		}
		c.SetDeadline(time.Time{})
		c = tc
	}
	var b [floorMsgLen]byte
	for {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		if _, err := c.Write(b[:]); err != nil {
			return
		}
	}
}

// floorClients mints the client certificates and returns a dial function
// for identity i.
func floorClients(o floorOptions) (func(ctx context.Context, i int) (net.Conn, bool, error), error) {
	var cfgs []*tls.Config
	if !o.plain {
		ca, err := certs.LoadCA(o.pki)
		if err != nil {
			return nil, err
		}
		pool := ca.Pool()
		cfgs = make([]*tls.Config, max(o.identities, 1))
		for i := range cfgs {
			cert, err := ca.IssueCert(certs.IssueRequest{Name: fmt.Sprintf("floor-%05d", i+1), Client: true, Days: 1, Algorithm: certs.ECDSA})
			if err != nil {
				return nil, err
			}
			cfgs[i] = certs.ClientConfigFrom(cert, pool, o.serverName)
			cfgs[i].NextProtos = []string{tunnel.ALPN}
			if o.resume {
				cfgs[i].ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
		}
	}
	return func(ctx context.Context, i int) (net.Conn, bool, error) {
		var d net.Dialer
		if len(o.sources) > 0 {
			d.LocalAddr = &net.TCPAddr{IP: o.sources[i%len(o.sources)].AsSlice()}
			d.Control = dialControl
		}
		c, err := d.DialContext(ctx, "tcp", o.server)
		if err != nil || cfgs == nil {
			return c, false, err
		}
		tc := tls.Client(c, cfgs[i%len(cfgs)])
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, false, err
		}
		return tc, tc.ConnectionState().DidResume, nil
	}, nil
}

// exchange sends one message and reads the answer.
func exchange(c net.Conn) error {
	var b [floorMsgLen]byte
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(c, b[:])
	return err
}

// helloConfigClose is tunnelc's protocol handshake (HELLO, CONFIG) and a
// normal CLOSE.
func helloConfigClose(c net.Conn) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return errors.New("--tlsvpn needs TLS")
	}
	if _, err := (&gen{}).protocolHandshake(tc); err != nil {
		return err
	}
	_, err := c.Write(tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.CloseNormal, "floor")))
	return err
}

// cpuOf returns a process's CPU time so far.
func cpuOf(pid int) (time.Duration, error) {
	p := readProc(pid)
	if !p.ok() {
		return 0, fmt.Errorf("read /proc/%d: %s", pid, p.Err)
	}
	return time.Duration(p.CPUSeconds * float64(time.Second)), nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// floorIdle opens o.conns connections, lets each send one message every
// o.every, and measures the server's CPU over o.window.
func floorIdle(ctx context.Context, o floorOptions, stdout io.Writer) error {
	dial, err := floorClients(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var answered, lost atomic.Int64
	conns := make([]net.Conn, 0, o.conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var mu sync.Mutex
	sem := make(chan struct{}, max(o.concurrency, 1))
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for i := range o.conns {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, _, err := dial(ctx, i)
			if err != nil {
				failed.Add(1)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				t := time.NewTimer(rand.N(o.every))
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
					if exchange(c) != nil {
						lost.Add(1)
						return
					}
					answered.Add(1)
					t.Reset(o.every)
				}
			}()
		})
	}
	wg.Wait()
	ramp := time.Since(start)
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("floor idle: %d of %d connections failed", n, o.conns)
	}
	if !sleepCtx(ctx, o.settle) {
		return ctx.Err()
	}
	s0, err := cpuOf(o.serverPID)
	if err != nil {
		return err
	}
	c0, a0, t0 := selfCPU(), answered.Load(), time.Now()
	if !sleepCtx(ctx, o.window) {
		return ctx.Err()
	}
	s1, err := cpuOf(o.serverPID)
	if err != nil {
		return err
	}
	c1, a1, el := selfCPU(), answered.Load(), time.Since(t0)
	msgs := a1 - a0
	fmt.Fprintf(stdout, "floor idle: tls=%v conns=%d every=%v ramp=%.1fs window=%.0fs messages=%d (%.0f/s) lost=%d\n",
		!o.plain, len(conns), o.every, ramp.Seconds(), el.Seconds(), msgs, float64(msgs)/el.Seconds(), lost.Load())
	fmt.Fprintf(stdout, "floor idle: server_cpu_pct=%.2f server_us_per_message=%.1f client_cpu_pct=%.2f goroutines=%d gomaxprocs=%d\n",
		100*float64(s1-s0)/float64(el), float64((s1-s0).Microseconds())/float64(max(msgs, 1)),
		100*float64(c1-c0)/float64(el), runtime.NumGoroutine(), runtime.GOMAXPROCS(0))
	return nil
}

// floorHandshakes runs handshakes for o.window (after o.settle of the same
// load, not counted) and reports their rate, CPU and latency.
func floorHandshakes(ctx context.Context, o floorOptions, stdout io.Writer) error {
	dial, err := floorClients(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu        sync.Mutex
		lat       []time.Duration
		measuring atomic.Bool
		ok, fail  atomic.Int64
		resumed   atomic.Int64
		late      atomic.Int64
		next      atomic.Int64
		wg        sync.WaitGroup
	)
	one := func() {
		i := int(next.Add(1) - 1)
		t := time.Now()
		c, res, err := dial(ctx, i)
		if err == nil {
			switch {
			case o.tlsvpn:
				err = helloConfigClose(c)
			case !o.handshakeOnly:
				err = exchange(c)
			}
			c.Close()
		}
		if !measuring.Load() || ctx.Err() != nil {
			return
		}
		if err != nil {
			fail.Add(1)
			return
		}
		ok.Add(1)
		if res {
			resumed.Add(1)
		}
		d := time.Since(t)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
	}
	sem := make(chan struct{}, max(o.concurrency, 1))
	run := func(ctx context.Context) {
		if o.rate <= 0 {
			for ctx.Err() == nil {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				wg.Go(func() { defer func() { <-sem }(); one() })
			}
			return
		}
		// Open loop: a connection every 1/rate, whether or not the
		// earlier ones are done; one that finds --concurrency in flight
		// is counted late and started when a slot frees.
		gap := time.Duration(float64(time.Second) / o.rate)
		due := time.Now()
		for ctx.Err() == nil {
			due = due.Add(gap)
			if d := time.Until(due); d > 0 {
				if !sleepCtx(ctx, d) {
					return
				}
			}
			select {
			case sem <- struct{}{}:
			default:
				late.Add(1)
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			wg.Go(func() { defer func() { <-sem }(); one() })
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	go run(loadCtx)
	if !sleepCtx(ctx, o.settle) {
		stopLoad()
		wg.Wait()
		return ctx.Err()
	}
	s0, err := cpuOf(o.serverPID)
	if err != nil {
		stopLoad()
		wg.Wait()
		return err
	}
	c0, t0 := selfCPU(), time.Now()
	late.Store(0)
	measuring.Store(true)
	var werr error
	if !sleepCtx(ctx, o.window) {
		werr = ctx.Err()
	}
	measuring.Store(false)
	s1, serr := cpuOf(o.serverPID)
	c1, el := selfCPU(), time.Since(t0)
	stopLoad()
	wg.Wait()
	if werr != nil {
		return werr
	}
	if serr != nil {
		return serr
	}
	n := ok.Load()
	d := summarize(lat)
	fmt.Fprintf(stdout, "floor handshake: rate=%s concurrency=%d resume=%v handshake_only=%v tlsvpn=%v window=%.0fs ok=%d resumed=%d failed=%d late=%d handshakes_per_s=%.0f\n",
		rateText(o.rate), o.concurrency, o.resume, o.handshakeOnly, o.tlsvpn, el.Seconds(), n, resumed.Load(), fail.Load(), late.Load(), float64(n)/el.Seconds())
	fmt.Fprintf(stdout, "floor handshake: server_ms_per_handshake=%.3f client_ms_per_handshake=%.3f server_cores=%.2f client_cores=%.2f\n",
		float64((s1-s0).Microseconds())/1000/float64(max(n, 1)), float64((c1-c0).Microseconds())/1000/float64(max(n, 1)),
		float64(s1-s0)/float64(el), float64(c1-c0)/float64(el))
	fmt.Fprintf(stdout, "floor handshake: connect_to_answer_ms p50=%.2f p90=%.2f p99=%.2f max=%.2f\n", d.P50, d.P90, d.P99, d.Max)
	if n == 0 {
		return errors.New("floor handshake: no handshake completed in the window")
	}
	return nil
}

func rateText(r float64) string {
	if r <= 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f/s", r)
}
