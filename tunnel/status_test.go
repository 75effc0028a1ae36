package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"tlsvpn/tun"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// sessionOf returns the server's SessionInfo of id.
func sessionOf(t *testing.T, srv *tunnel.Server, id string) tunnel.SessionInfo {
	t.Helper()
	for _, s := range srv.SessionList() {
		if s.Identity == id {
			return s
		}
	}
	t.Fatalf("no session of %s in %+v", id, srv.SessionList())
	return tunnel.SessionInfo{}
}

func TestSessionList(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	bob := srv.StartClient(t, "bob")
	alice := srv.StartClient(t, "alice")
	up := tunneltest.UDP4(alice.Config.Addr.Addr(), serverAddr, bytes.Repeat([]byte{1}, 100))
	down := tunneltest.UDP4(serverAddr, alice.Config.Addr.Addr(), bytes.Repeat([]byte{2}, 300))
	alice.Dev.Inbound <- up
	tunneltest.Expect(t, srv.Dev.Outbound, up)
	srv.Dev.Inbound <- down
	tunneltest.Expect(t, alice.Dev.Outbound, down)

	// The counters move just after the packet was handed on (to the TUN,
	// to the socket), so the packet can arrive before they do.
	tunneltest.Eventually(t, func() bool {
		a := sessionOf(t, srv.Server, "alice")
		return a.RxBytes == uint64(len(up)) && a.TxBytes == uint64(len(down))
	}, "alice's byte counters do not show her two packets")
	list := srv.Server.SessionList()
	if len(list) != 2 || list[0].Identity != "alice" || list[1].Identity != "bob" {
		t.Fatalf("SessionList = %+v, want alice and bob, sorted", list)
	}
	a := list[0]
	if len(a.Addrs) != 1 || a.Addrs[0] != alice.Config.Addr.Addr() || a.Remote == "" || a.Started.IsZero() || a.LastHandshake != a.Started {
		t.Errorf("alice = %+v", a)
	}
	if a.RxBytes != uint64(len(up)) || a.TxBytes != uint64(len(down)) {
		t.Errorf("alice bytes rx %d tx %d, want %d and %d", a.RxBytes, a.TxBytes, len(up), len(down))
	}
	if b := list[1]; b.RxBytes != 0 || b.TxBytes != 0 || b.Addrs[0] != bob.Config.Addr.Addr() {
		t.Errorf("bob = %+v, want no traffic", b)
	}
	if got := srv.Server.PeakSessions(); got != 2 {
		t.Errorf("PeakSessions = %d, want 2", got)
	}
	bob.Stop()
	tunneltest.Eventually(t, func() bool { return srv.Server.Sessions() == 1 }, "bob's session still listed")
	if got := srv.Server.PeakSessions(); got != 2 {
		t.Errorf("PeakSessions after bob left = %d, want still 2", got)
	}
}

func TestKick(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	c := srv.StartClient(t, "laptop")
	// Setup (which StartClient waits for) runs just before the session
	// starts.
	tunneltest.Eventually(t, func() bool { return c.Client.Status().State == tunnel.StateUp }, "client not up")
	if st := c.Client.Status(); st.State != tunnel.StateUp || st.Since.IsZero() || st.Server == "" || st.Config.Addr != c.Config.Addr {
		t.Fatalf("client Status before the kick = %+v", st)
	}
	if srv.Server.Kick("nobody", "test") {
		t.Error("Kick(nobody) = true, want false")
	}
	if !srv.Server.Kick("laptop", "closed by the operator") {
		t.Fatal("Kick(laptop) = false, want true")
	}
	// The test client waits a minute before reconnecting: it is backing
	// off, and says why.
	tunneltest.Eventually(t, func() bool { return c.Client.Status().State == tunnel.StateBackingOff }, "client not backing off after the kick")
	st := c.Client.Status()
	if !strings.Contains(st.LastError, "kicked") || !strings.Contains(st.LastError, "closed by the operator") || st.RetryAt.IsZero() || !st.Since.IsZero() {
		t.Errorf("client Status after the kick = %+v, want the kick as last error and a retry time", st)
	}
}

func TestProbeRTT(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{}) // no keepalive: nobody pings
	srv.StartClient(t, "laptop")
	if rtt := sessionOf(t, srv.Server, "laptop").RTT; rtt != 0 {
		t.Fatalf("RTT before any ping = %v, want 0", rtt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Server.ProbeRTT(ctx, time.Minute)
	if ctx.Err() != nil {
		t.Fatal("ProbeRTT did not return when the PONG arrived")
	}
	if rtt := sessionOf(t, srv.Server, "laptop").RTT; rtt <= 0 {
		t.Errorf("RTT after ProbeRTT = %v, want > 0", rtt)
	}
	// A fresh measurement is not repeated: this returns at once.
	before := srv.Stats.ControlFrames.Load()
	srv.Server.ProbeRTT(ctx, time.Minute)
	if got := srv.Stats.ControlFrames.Load(); got != before {
		t.Errorf("ProbeRTT with a fresh RTT sent a PING (control frames %d -> %d)", before, got)
	}
}

func TestLastHandshakeMovesWithKeyUpdate(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{RekeyRecords: 4})
	c := srv.StartClient(t, "laptop")
	started := sessionOf(t, srv.Server, "laptop").Started
	me := c.Config.Addr.Addr()
	for i := range 12 { // one record each: three keys' worth
		p := tunneltest.UDP4(serverAddr, me, []byte{byte(i)})
		srv.Dev.Inbound <- p
		tunneltest.Expect(t, c.Dev.Outbound, p)
	}
	if srv.Stats.KeyUpdatesSent.Load() == 0 {
		t.Skip("no KeyUpdate sent (data phase not on the own record layer here)")
	}
	if got := sessionOf(t, srv.Server, "laptop").LastHandshake; !got.After(started) {
		t.Errorf("LastHandshake = %v after %d KeyUpdates, want after the session start %v", got, srv.Stats.KeyUpdatesSent.Load(), started)
	}
	tunneltest.Eventually(t, func() bool { return c.Client.Status().LastHandshake.After(started) }, "client's LastHandshake did not move with the KeyUpdate it received")
}

func TestClientStatusBackingOff(t *testing.T) {
	ca := tunneltest.StartServer(t, tunneltest.ServerOptions{}).CA
	cl, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("connection refused") },
		TLS:  ca.ClientConfig(t, "laptop", "server"),
		Setup: func(context.Context, tunnel.Config) (tun.Device, error) {
			return nil, errors.New("not reached")
		},
		MinBackoff: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := cl.Status(); st.State != tunnel.StateConnecting {
		t.Errorf("Status before Run = %+v, want connecting", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tunneltest.Eventually(t, func() bool { return cl.Status().State == tunnel.StateBackingOff }, "client not backing off after a failed dial")
	st := cl.Status()
	if !strings.Contains(st.LastError, "connection refused") || time.Until(st.RetryAt) < 10*time.Second || st.Reconnects != 0 {
		t.Errorf("Status = %+v, want the dial error and a retry about a minute away", st)
	}
}
