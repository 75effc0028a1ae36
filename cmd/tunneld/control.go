package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"tlsvpn/certs"
	"tlsvpn/cmd/internal/cli"
	"tlsvpn/control"
	"tlsvpn/tunnel"
)

// controlCommands are the tunneld subcommands that ask a running tunneld
// over its control socket.
var controlCommands = map[string]cli.ControlCommand{
	"status": {
		Help: `Show what a running tunneld is doing: uptime, listen address, TUN and tunnel
subnets, sessions now and at peak, bytes from and to clients, sessions
established (full TLS handshakes and resumptions) and their rate over the
last minute, connections refused by reason, and when the server certificate
expires and the CRL needs its next update.`,
		Example: `  $ tunneld status
  version:      v0.4.0 (3f2a9c1)
  uptime:       3h12m (since 2026-12-05 06:35:10 UTC)
  listen:       0.0.0.0:443
  tun:          tunneld0 100.64.0.0/24, fd00:64::/64
  sessions:     2 now, 3 peak, 2 connections open
  traffic:      1.2 GiB in, 3.4 GiB out
  handshakes:   5 full, 41 resumed, 0.2/min
  refusals:     handshake_rate 4
  certificate:  /etc/tlsvpn/pki/vpn.example.com.crt: expires in 362d4h (2027-12-01 09:00:00 UTC)
  crl:          /etc/tlsvpn/pki/crl.pem: next update in 6d23h (2026-12-12 06:30:00 UTC)
`,
		Render: func(w io.Writer, raw json.RawMessage, now time.Time) error {
			var s control.ServerStatus
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			return control.WriteServerStatus(w, s, now)
		},
	},
	"clients": {
		Help: `List the clients connected to a running tunneld, one session a line: the
certificate name, tunnel addresses (and accepted networks behind it, after
+), the underlay address it connects from, when it connected, when its keys
last changed (TLS handshake or KeyUpdate), IP bytes received from it (IN)
and sent to it (OUT), and the round-trip time of the last keepalive PING
(measured on demand for sessions with none in the last minute; - if none).`,
		Example: `  $ tunneld clients
  IDENTITY  ADDRESSES                   UNDERLAY           CONNECTED   HANDSHAKE   IN        OUT       RTT
  laptop    100.64.0.2, fd00:64::2      198.51.100.7:5123  2h03m ago   2h03m ago   1.1 GiB   3.0 GiB   23.4ms
  site-b    100.64.0.3 +198.18.20.0/24  203.0.113.9:40100  12m30s ago  12m30s ago  88.2 MiB  12.0 MiB  41.0ms
`,
		Render: func(w io.Writer, raw json.RawMessage, now time.Time) error {
			var list []control.Session
			if err := json.Unmarshal(raw, &list); err != nil {
				return err
			}
			return control.WriteSessions(w, list, now)
		},
	},
	"reload": {
		Help: `Make a running tunneld re-read its config file (--config), its clients
policy and its --crl, exactly as SIGHUP does, but for this instance only, and
report the result. A file that does not parse or validate changes nothing and
is reported with its error (exit status 1); sessions stay up. Only what
changed is applied; only clients whose own configuration changed reconnect;
settings that need a restart are named and keep their running value.`,
		Example: `  $ tunneld reload
  configuration reloaded from /etc/tlsvpn/tunneld.yaml
  applied: max-clients, route
  client policies reloaded from /etc/tlsvpn/clients.yaml
  3 sessions reconnected for a changed configuration
  revocation list reloaded from /etc/tlsvpn/pki/crl.pem
`,
	},
	"kick": {
		Args:  "NAME",
		NArgs: 1,
		Help: `Close the session of the client whose certificate name is NAME. The client
logs that it was kicked and reconnects after its usual short wait: kick is
for forcing a fresh session (new keys, new configuration); to keep a client
out, revoke its certificate ('tunneld pki revoke') and reload. Exit status 1
if no such client is connected.`,
		Example: `  $ tunneld kick laptop
  closed the session of laptop (100.64.0.2 from 198.51.100.7:5123)
`,
	},
}

// isControlCommand reports whether args name a control subcommand.
func isControlCommand(args []string) bool {
	if len(args) == 0 {
		return false
	}
	_, ok := controlCommands[args[0]]
	return ok
}

// runControlCommand runs 'tunneld status|clients|reload|kick ...'.
func runControlCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := controlCommands[args[0]]
	c.Prog, c.Name, c.DefaultTun = "tunneld", args[0], "tunneld0"
	return cli.RunControl(ctx, c, args[1:], stdout, stderr)
}

// controlSource answers the control socket's commands from the running
// server's state.
type controlSource struct {
	srv      *tunnel.Server
	stats    *tunnel.Stats
	limits   *tunnel.Limiter
	reload   interface{ Reload() (string, error) } // *reloader
	crl      *crlHolder                            // the revocation list in force; nil inside without --crl
	started  time.Time
	listen   string
	tun      string
	subnets  []netip.Prefix
	certFile string
	certEnd  time.Time
	rate     *rateMeter
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
		if err := want(0); err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		c.srv.ProbeRTT(pctx, time.Minute)
		cancel()
		return sessionsOf(c.srv.SessionList()), nil
	case "reload":
		if err := want(0); err != nil {
			return nil, err
		}
		msg, err := c.reload.Reload()
		if err != nil {
			return nil, err
		}
		return cli.Message{Message: msg}, nil
	case "kick":
		if err := want(1); err != nil {
			return nil, err
		}
		return c.kick(args[0])
	}
	return nil, fmt.Errorf("unknown command %q (tunneld knows status, clients, reload, kick)", cmd)
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
	return cli.Message{Message: fmt.Sprintf("closed the session of %s (%s from %s)", id, joinAddrs(info.Addrs), info.Remote)}, nil
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
		Version:      controlVersion(),
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
	if rev := c.crlInForce(); rev != nil {
		e := control.Expiry{File: rev.Path()}
		if crl, err := rev.Current(); err != nil {
			e.Error = err.Error()
		} else {
			e.Expires = crl.List.NextUpdate
		}
		s.CRL = &e
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

// controlVersion names the build for 'tunneld status': the module
// version and the VCS revision Go recorded, if any.
func controlVersion() string {
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

// listenControl opens the control socket at path; "" turns it off (nil,
// which Close and startControl accept).
func listenControl(path, group string, log *slog.Logger) (*control.Server, error) {
	if path == "" {
		return nil, nil
	}
	return control.Listen(path, control.Options{Group: group, Logger: log})
}

// startControl serves the control socket's commands from cs until ctx
// ends.
func startControl(ctx context.Context, ctl *control.Server, cs *controlSource, log *slog.Logger) {
	if ctl == nil {
		return
	}
	cs.started = time.Now()
	cs.rate = newRateMeter(cs.started, cs.stats.SessionsOpened.Load())
	go cs.rate.run(ctx, 5*time.Second, cs.stats.SessionsOpened.Load)
	go func() {
		if err := ctl.Serve(ctx, cs.handle); err != nil {
			log.Error("control socket", "err", err)
		}
	}()
	log.Info("control socket listening", "path", ctl.Path())
}

// tunnelSubnets lists the tunnel subnets (subnet6 only when valid).
func tunnelSubnets(subnet, subnet6 netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{subnet}
	if subnet6.IsValid() {
		out = append(out, subnet6)
	}
	return out
}

// crlInForce is the revocation list in force, nil without --crl.
func (c *controlSource) crlInForce() *certs.Revocation {
	if c.crl == nil {
		return nil
	}
	return c.crl.rev.Load()
}
