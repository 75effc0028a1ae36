package server

// The control socket's commands (status, clients, reload, kick), answered
// from the running server's state. The commands that ask (tunneld status
// ...) are in cmd/tunneld.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/control"
	"tlsvpn/internal/service"
	"tlsvpn/state"
	"tlsvpn/transport"
	"tlsvpn/tunnel"
)

// message is the reply of a command that only reports what it did
// (reload, kick); 'tunneld reload' and 'kick' print it (cli.Message).
type message struct {
	Message string `json:"message"`
}

// controlSource answers the control socket's commands from the running
// server's state.
type controlSource struct {
	srv      *tunnel.Server
	stats    *tunnel.Stats
	limits   *tunnel.Limiter
	reload   interface{ Reload() (string, error) } // *reloader
	crl      *crlHolder                            // the revocation list in force; nil inside without --crl
	version  string                                // Options.Version, or buildVersion()
	started  time.Time
	listen   string
	tun      string
	subnets  []netip.Prefix
	certFile string
	certEnd  time.Time
	rate     *rateMeter
	bgp      *announcer // nil without BGP
	// ctx is Run's: a drain ends with it. draining is when 'tunneld
	// drain' started (Unix nanoseconds; 0: not draining).
	ctx      context.Context
	log      *slog.Logger
	draining atomic.Int64
	// share is the shared port's listener (nil: not shared), relaying
	// to shareBackend.
	share        *transport.ShareListener
	shareBackend string
	store        func() *control.StoreStatus // the fleet's store; nil for a gateway on its own
	// fleetSessions lists the fleet's sessions; nil for a gateway on
	// its own.
	fleetSessions func() []control.FleetSession
}

// drainRate is how many sessions a second 'tunneld drain' closes, so that
// their clients' reconnects (most resume, on other gateways) do not come
// as one crowd.
const drainRate = 50

// drain starts taking the gateway out of service and returns at once;
// tunneld status shows the progress.
func (c *controlSource) drain() (any, error) {
	n := c.srv.Sessions()
	if !c.draining.CompareAndSwap(0, time.Now().UnixNano()) {
		return message{Message: fmt.Sprintf("already draining; %d sessions left", n)}, nil
	}
	service.NotifyStatus(c.log, "draining: refusing new connections, moving clients off")
	go func() {
		closed := c.srv.Drain(c.ctx, drainRate)
		if c.ctx.Err() == nil {
			c.log.Info("drained: no session left", "sessions_closed", closed)
			service.NotifyStatus(c.log, "drained: no session left; refusing new connections")
		}
	}()
	return message{Message: fmt.Sprintf("draining: new connections are refused and /ready answers 503; %d sessions move off, %d a second ('tunneld status' shows how many are left)", n, drainRate)}, nil
}

// handle is the control.Handler of tunneld.
func (c *controlSource) handle(ctx context.Context, cmd string, args []string) (any, error) {
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %d arguments, got %d", cmd, n, len(args))
		}
		return nil
	}
	switch cmd {
	case "status":
		if err := want(0); err != nil {
			return nil, err
		}
		return c.status(time.Now()), nil
	case "clients":
		if len(args) == 1 && args[0] == "--fleet" {
			return c.fleetClients()
		}
		if err := want(0); err != nil {
			return nil, err
		}
		return c.clients(ctx), nil
	case "reload":
		if err := want(0); err != nil {
			return nil, err
		}
		msg, err := c.reload.Reload()
		if err != nil {
			return nil, err
		}
		return message{Message: msg}, nil
	case "kick":
		if err := want(1); err != nil {
			return nil, err
		}
		return c.kick(args[0])
	case "drain":
		if err := want(0); err != nil {
			return nil, err
		}
		return c.drain()
	}
	return nil, fmt.Errorf("unknown command %q (tunneld knows status, clients, reload, kick, drain)", cmd)
}

// clients lists the sessions, with the RTT measured for those that had
// no keepalive in the last minute (waiting at most a second).
func (c *controlSource) clients(ctx context.Context) []control.Session {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	c.srv.ProbeRTT(pctx, time.Minute)
	cancel()
	return sessionsOf(c.srv.SessionList())
}

func (c *controlSource) kick(id string) (any, error) {
	var info *tunnel.SessionInfo
	for _, s := range c.srv.SessionList() {
		if s.Identity == id {
			info = &s
			break
		}
	}
	if info == nil || !c.srv.Kick(id, "closed by the server's operator (tunneld kick)") {
		return nil, fmt.Errorf("no session of client %q (see 'tunneld clients')", id)
	}
	return message{Message: fmt.Sprintf("closed the session of %s (%s from %s)", id, joinAddrs(info.Addrs), info.Remote)}, nil
}

func joinAddrs(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ", "
		}
		s += a.String()
	}
	return s
}

// status collects the server's status; everything it reads is an atomic
// counter or a short lock.
func (c *controlSource) status(now time.Time) control.ServerStatus {
	opened, resumed := c.stats.SessionsOpened.Load(), c.stats.SessionsResumed.Load()
	ls := c.limits.Stats()
	refusals := map[string]uint64{
		"handshake_rate":                ls.RefusedRate.Load(),
		"handshakes_in_progress":        ls.RefusedHandshakes.Load(),
		"source_handshakes_in_progress": ls.RefusedSource.Load(),
		"reserved_needs_resumption":     ls.RefusedResumption.Load(),
		"connections":                   ls.RefusedConns.Load(),
		"clients":                       ls.RefusedClients.Load(),
		"sessions_per_client":           ls.RefusedSessions.Load(),
		"failed_handshakes":             c.stats.HandshakeFailures.Load(),
		"advertised_networks":           c.stats.AdvertiseRefused.Load(),
	}
	for k, v := range refusals {
		if v == 0 {
			delete(refusals, k)
		}
	}
	s := control.ServerStatus{
		Version:      c.version,
		Started:      c.started,
		Uptime:       now.Sub(c.started).Seconds(),
		Listen:       c.listen,
		TUN:          c.tun,
		Subnets:      c.subnets,
		Sessions:     c.srv.Sessions(),
		PeakSessions: c.srv.PeakSessions(),
		Connections:  c.srv.Connections(),
		BytesIn:      c.stats.RxBytes.Load(),
		BytesOut:     c.stats.TxBytes.Load(),
		Handshakes:   control.Handshakes{Full: opened - min(resumed, opened), Resumed: resumed, PerMinute: c.rate.perMinute(now, opened)},
		Refusals:     refusals,
		Certificate:  control.Expiry{File: c.certFile, Expires: c.certEnd},
	}
	if sh := c.share; sh != nil {
		st := sh.Stats()
		s.Shared = &control.Shared{Backend: c.shareBackend, Tunnel: st.Tunnel.Load(), Relayed: st.Relayed.Load(),
			Relaying: st.Relaying.Load(), Peeking: st.Peeking.Load(), Refused: st.RefusedRelays.Load(), BackendErrors: st.BackendErrors.Load()}
	}
	if rev := c.crlInForce(); rev != nil {
		e := control.Expiry{File: rev.Path()}
		if next, err := rev.NextUpdate(); err != nil {
			e.Error = err.Error()
		} else {
			e.Expires = next
		}
		s.CRL = &e
	}
	if at := c.draining.Load(); at != 0 {
		s.DrainingSince = time.Unix(0, at)
	}
	if c.bgp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.BGP = c.bgp.status(ctx)
		cancel()
	}
	if c.store != nil {
		s.Store = c.store()
		if n := s.Store.Refusals; n > 0 {
			s.Refusals["state_store_unreachable"] = n
		}
	}
	return s
}

// sessionsOf converts the server's session list for the control socket.
func sessionsOf(list []tunnel.SessionInfo) []control.Session {
	out := make([]control.Session, len(list))
	for i, s := range list {
		out[i] = control.Session{
			Identity:      s.Identity,
			Addresses:     s.Addrs,
			Networks:      s.Nets,
			Underlay:      s.Remote,
			Since:         s.Started,
			LastHandshake: s.LastHandshake,
			BytesIn:       s.RxBytes,
			BytesOut:      s.TxBytes,
			RTTMillis:     float64(s.RTT.Microseconds()) / 1000,
		}
	}
	return out
}

// rateMeter keeps a minute of samples of a growing counter, so status
// can say how fast it grew over the last minute.
type rateMeter struct {
	mu      sync.Mutex
	samples []rateSample // oldest first, spanning at most a minute
}

type rateSample struct {
	at time.Time
	n  uint64
}

// newRateMeter starts with the counter at n.
func newRateMeter(now time.Time, n uint64) *rateMeter {
	return &rateMeter{samples: []rateSample{{now, n}}}
}

// add records the counter's value at now and forgets samples more than
// a minute older.
func (m *rateMeter) add(now time.Time, n uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples = append(m.samples, rateSample{now, n})
	i := 0
	for i < len(m.samples)-1 && now.Sub(m.samples[i+1].at) >= time.Minute {
		i++
	}
	m.samples = m.samples[i:]
}

// perMinute is the growth from the oldest sample to n at now, per
// minute.
func (m *rateMeter) perMinute(now time.Time, n uint64) float64 {
	m.mu.Lock()
	first := m.samples[0]
	m.mu.Unlock()
	d := now.Sub(first.at)
	if d < time.Second || n < first.n {
		return 0
	}
	return float64(n-first.n) / d.Minutes()
}

// run samples counter every interval until ctx ends.
func (m *rateMeter) run(ctx context.Context, every time.Duration, counter func() uint64) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.add(now, counter())
		}
	}
}

// buildVersion names the build for 'tunneld status' when Options.Version
// is empty: the module version and the VCS revision Go recorded, if any.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 7 {
			v += " (" + s.Value[:7] + ")"
		}
	}
	return v
}

// serveControl serves the control socket's commands from cs until ctx
// ends.
func serveControl(ctx context.Context, ctl *control.Server, cs *controlSource, log *slog.Logger) {
	if ctl == nil {
		return
	}
	go func() {
		if err := ctl.Serve(ctx, cs.handle); err != nil {
			log.Error("control socket", "err", err)
		}
	}()
	log.Info("control socket listening", "path", ctl.Path())
}

// crlInForce is the revocation list in force, nil without --crl.
func (c *controlSource) crlInForce() state.Revocation {
	if c.crl == nil {
		return nil
	}
	return c.crl.load()
}
