package server

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// newControlSource answers control commands from an in-process server;
// reload runs clients.
func newControlSource(t *testing.T, clients func() (string, error)) (*controlSource, *tunneltest.Server) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	now := time.Now()
	cs := &controlSource{
		srv: srv.Server, stats: srv.Stats, limits: tunnel.NewLimiter(tunnel.LimitConfig{}),
		reload:  reloadFunc(clients),
		started: now.Add(-time.Hour), listen: "198.18.0.1:443", tun: "tunneld0",
		subnets:  []netip.Prefix{tunneltest.Subnet},
		certFile: "server.crt", certEnd: now.Add(24 * time.Hour), version: "1.4.0",
		rate: newRateMeter(now.Add(-time.Minute), 0),
	}
	return cs, srv
}

func TestControlSource(t *testing.T) {
	reloads := 0
	var reloadErr error
	cs, srv := newControlSource(t, func() (string, error) {
		reloads++
		if reloadErr != nil {
			return "", reloadErr
		}
		return "client policies reloaded", nil
	})
	c := srv.StartClient(t, "laptop")
	ctx := context.Background()
	// The client can have its CONFIG a moment before the server counts
	// the session as established.
	tunneltest.Eventually(t, func() bool { return srv.Stats.SessionsOpened.Load() == 1 }, "session not counted")

	res, err := cs.handle(ctx, "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := res.(control.ServerStatus)
	if st.Sessions != 1 || st.PeakSessions != 1 || st.Handshakes.Full != 1 || st.Handshakes.PerMinute < 0.9 ||
		st.Listen != "198.18.0.1:443" || st.Uptime < 3599 || st.CRL != nil || st.Certificate.File != "server.crt" || st.Version != "1.4.0" {
		t.Errorf("status = %+v", st)
	}

	res, err = cs.handle(ctx, "clients", nil)
	if err != nil {
		t.Fatal(err)
	}
	list := res.([]control.Session)
	if len(list) != 1 || list[0].Identity != "laptop" || list[0].Addresses[0] != c.Config.Addr.Addr() || list[0].RTTMillis <= 0 {
		t.Errorf("clients = %+v, want laptop with its address and a measured RTT", list)
	}

	res, err = cs.handle(ctx, "reload", nil)
	if err != nil || res.(message).Message != "client policies reloaded" || reloads != 1 {
		t.Errorf("reload = %v, %v (reloads %d)", res, err, reloads)
	}
	reloadErr = errors.New("keeping the previous client policies: yaml: line 2: bad")
	if _, err := cs.handle(ctx, "reload", nil); err == nil || err.Error() != reloadErr.Error() {
		t.Errorf("failing reload = %v, want the reload's error as is", err)
	}

	if _, err := cs.handle(ctx, "kick", []string{"nobody"}); err == nil || !strings.Contains(err.Error(), `no session of client "nobody"`) {
		t.Errorf("kick nobody = %v", err)
	}
	res, err = cs.handle(ctx, "kick", []string{"laptop"})
	if err != nil || !strings.Contains(res.(message).Message, "closed the session of laptop ("+c.Config.Addr.Addr().String()) {
		t.Errorf("kick laptop = %v, %v", res, err)
	}
	for _, bad := range []struct {
		cmd  string
		args []string
	}{{"status", []string{"x"}}, {"kick", nil}, {"shutdown", nil}} {
		if _, err := cs.handle(ctx, bad.cmd, bad.args); err == nil {
			t.Errorf("%s %v: no error", bad.cmd, bad.args)
		}
	}
}

// reloadFunc is a fake reloader.
type reloadFunc func() (string, error)

func (f reloadFunc) Reload() (string, error) { return f() }

func TestRateMeter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newRateMeter(t0, 100)
	if got := m.perMinute(t0, 100); got != 0 {
		t.Errorf("rate at start = %v, want 0", got)
	}
	if got := m.perMinute(t0.Add(30*time.Second), 110); got != 20 {
		t.Errorf("10 in 30s = %v/min, want 20", got)
	}
	for i := 1; i <= 24; i++ { // two minutes of samples, 1 per 5s
		m.add(t0.Add(time.Duration(i)*5*time.Second), 100+uint64(i))
	}
	// Only the last minute counts: 12 samples of +1 each.
	if got := m.perMinute(t0.Add(2*time.Minute), 124); got != 12 {
		t.Errorf("rate over the last minute = %v, want 12", got)
	}
}
