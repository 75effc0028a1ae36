package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

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

// handle is the control.Handler of the client's control socket.
func (c *Client) handle(ctx context.Context, cmd string, args []string) (any, error) {
	switch cmd {
	case "status":
	case "reconnect":
		return c.reconnect(args)
	default:
		return nil, fmt.Errorf("unknown command %q (tunnelc knows status and reconnect)", cmd)
	}
	if len(args) != 0 {
		return nil, fmt.Errorf("status: want no arguments, got %d", len(args))
	}
	// The keepalive measures the RTT every interval; right after a
	// (re)connect there is none yet: ask for one, briefly.
	if tc := c.tunnelClient(); tc != nil {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		tc.ProbeRTT(pctx, time.Minute)
		cancel()
	}
	return c.Status(), nil
}

// Status reports what the client is doing, as 'tunnelc status' shows it:
// the server, the connection state, what is installed on the host,
// traffic, handshake age, RTT and reconnects. Before Run it reports
// connecting with nothing installed. It is safe to call at any time.
func (c *Client) Status() control.ClientStatus {
	st := tunnel.ClientStatus{State: tunnel.StateConnecting}
	if tc := c.tunnelClient(); tc != nil {
		st = tc.Status()
	}
	c.view.mu.Lock()
	out := control.ClientStatus{
		Server:        c.sd.current(),
		Servers:       c.sd.specs(),
		ServerAddr:    st.Server,
		State:         st.State,
		TUN:           c.cfg.TUN,
		Addresses:     c.view.addrs,
		Routes:        c.view.routes,
		DNS:           c.view.dns,
		FullTunnel:    c.cfg.FullTunnel,
		KillSwitch:    c.cfg.KillSwitch,
		Since:         st.Since,
		LastHandshake: st.LastHandshake,
		RTTMillis:     float64(st.RTT.Microseconds()) / 1000,
		BytesIn:       c.stats.RxBytes.Load(),
		BytesOut:      c.stats.TxBytes.Load(),
		Reconnects:    st.Reconnects,
		Rotations:     st.Rotations,
		RetryAt:       st.RetryAt,
		LastError:     st.LastError,
		Portal:        c.portal.status(),
	}
	if c.proxy != nil {
		// The connection's address is the proxy's; where the proxy
		// connects to is not known here.
		out.Proxy, out.ProxyAddr, out.ProxyAuth = c.proxy.proxy.String(), st.Server, c.proxy.proxy.HasAuth()
		out.ServerAddr = ""
	}
	c.view.mu.Unlock()
	return out
}

// Message is the result of a control command that only reports what it
// did; 'tunnelc reconnect' prints it.
type Message struct {
	Message string `json:"message"`
}

// reconnect is 'tunnelc reconnect [SERVER]': it replaces the session (or
// ends the wait before the next attempt) and steers that attempt: to
// SERVER first when given, else, with several servers, to another one
// than the server in use.
func (c *Client) reconnect(args []string) (any, error) {
	if len(args) > 1 {
		return nil, fmt.Errorf("reconnect: want at most one server, got %d arguments", len(args))
	}
	var server string
	if len(args) == 1 {
		server = args[0]
	}
	msg, err := c.sd.steer(server)
	if err != nil {
		return nil, err
	}
	tc := c.tunnelClient()
	if tc == nil {
		return Message{Message: msg + " (not started yet)"}, nil
	}
	switch tc.Status().State {
	case tunnel.StateConnecting:
		msg += "; an attempt is already under way: this applies if it fails"
	default:
		tc.Kick("asked by 'tunnelc reconnect'")
	}
	return Message{Message: msg}, nil
}

// startControl serves the control socket's commands with h until ctx
// ends; wg counts the serving goroutine.
func startControl(ctx context.Context, ctl *control.Server, h control.Handler, wg *sync.WaitGroup, log *slog.Logger) {
	if ctl == nil {
		return
	}
	wg.Go(func() {
		if err := ctl.Serve(ctx, h); err != nil {
			log.Error("control socket", "err", err)
		}
	})
	log.Info("control socket listening", "path", ctl.Path())
}
