package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/control"
	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

// statusCommand is 'tunnelc status': it asks a running tunnelc over its
// control socket.
var statusCommand = cli.ControlCommand{
	Prog: "tunnelc", Name: "status", DefaultTun: "tunnelc0",
	Help: `Show what a running tunnelc is doing: the server (and the address it
connected to), its state (connecting, up, backing off with the time of the
next attempt and the last error), the tunnel addresses, routes and DNS
servers it installed, whether the full tunnel and kill switch are on, IP
bytes received from and sent to the server, when the session's keys last
changed (TLS handshake or KeyUpdate), the keepalive round-trip time, and how
often it reconnected and rotated sessions.`,
	Example: `  $ tunnelc status
  server:          vpn.example.com:443 (192.0.2.1:443)
  state:           up for 2h03m
  tun:             tunnelc0 100.64.0.2/24, fd00:64::2/64
  routes:          198.18.10.0/24
  dns:             100.64.0.1
  full tunnel:     off
  kill switch:     off
  traffic:         3.0 GiB in, 1.1 GiB out
  last handshake:  2h03m ago
  rtt:             23.4ms
  reconnects:      1, rotations 0
`,
	Render: func(w io.Writer, raw json.RawMessage, now time.Time) error {
		var s control.ClientStatus
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		return control.WriteClientStatus(w, s, now)
	},
}

// tunnelView is what the client installed on the host for the current
// session, as status reports it.
type tunnelView struct {
	mu     sync.Mutex
	addrs  []netip.Prefix
	routes []netip.Prefix
	dns    []netip.Addr
}

// set records the interface state and DNS servers in place.
func (v *tunnelView) set(rc routing.Config, dns []netip.Addr) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.addrs, v.routes, v.dns = slices.Clone(rc.Addresses), slices.Clone(rc.Routes), slices.Clone(dns)
}

// clientSource answers the control socket's commands from the running
// client's state.
type clientSource struct {
	client     *tunnel.Client
	stats      *tunnel.Stats
	view       *tunnelView
	server     string // --server as given
	tun        string
	fullTunnel bool
	killSwitch bool
}

// handle is the control.Handler of tunnelc.
func (c *clientSource) handle(ctx context.Context, cmd string, args []string) (any, error) {
	if cmd != "status" {
		return nil, fmt.Errorf("unknown command %q (tunnelc knows status)", cmd)
	}
	if len(args) != 0 {
		return nil, fmt.Errorf("status: want no arguments, got %d", len(args))
	}
	// The keepalive measures the RTT every interval; right after a
	// (re)connect there is none yet: ask for one, briefly.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	c.client.ProbeRTT(pctx, time.Minute)
	cancel()
	return c.status(), nil
}

func (c *clientSource) status() control.ClientStatus {
	st := c.client.Status()
	c.view.mu.Lock()
	out := control.ClientStatus{
		Server:        c.server,
		ServerAddr:    st.Server,
		State:         st.State,
		TUN:           c.tun,
		Addresses:     c.view.addrs,
		Routes:        c.view.routes,
		DNS:           c.view.dns,
		FullTunnel:    c.fullTunnel,
		KillSwitch:    c.killSwitch,
		Since:         st.Since,
		LastHandshake: st.LastHandshake,
		RTTMillis:     float64(st.RTT.Microseconds()) / 1000,
		BytesIn:       c.stats.RxBytes.Load(),
		BytesOut:      c.stats.TxBytes.Load(),
		Reconnects:    st.Reconnects,
		Rotations:     st.Rotations,
		RetryAt:       st.RetryAt,
		LastError:     st.LastError,
	}
	c.view.mu.Unlock()
	return out
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
func startControl(ctx context.Context, ctl *control.Server, cs *clientSource, log *slog.Logger) {
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
