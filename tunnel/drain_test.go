package tunnel_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

func TestDrain(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	a := srv.StartClient(t, "alice")
	b := srv.StartClient(t, "bob")
	// A packet queued toward alice before the drain still arrives: the
	// close is graceful.
	down := tunneltest.UDP4(serverAddr, a.Config.Addr.Addr(), bytes.Repeat([]byte{7}, 200))
	srv.Dev.Inbound <- down
	tunneltest.Expect(t, a.Dev.Outbound, down)

	start := time.Now()
	if n := srv.Server.Drain(context.Background(), 20); n != 2 {
		t.Fatalf("Drain closed %d sessions, want 2", n)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("Drain of 2 sessions at 20/s took %v: not paced", took)
	}
	if !srv.Server.Draining() || srv.Server.Sessions() != 0 {
		t.Fatalf("after Drain: draining %v, %d sessions", srv.Server.Draining(), srv.Server.Sessions())
	}
	for name, c := range map[string]*tunneltest.Client{"alice": a, "bob": b} {
		// The client learns why, and backs off before reconnecting (a
		// minute for the test clients).
		tunneltest.Eventually(t, func() bool { return c.Client.Status().State == tunnel.StateBackingOff }, "%s not backing off", name)
		if st := c.Client.Status(); !strings.Contains(st.LastError, "draining") || !strings.Contains(st.LastError, "being drained") {
			t.Errorf("%s: last error %q, want the draining close and its reason", name, st.LastError)
		}
	}
	// New connections are closed at once and counted.
	if _, err := srv.TryClient(t, srv.CA.ClientConfig(t, "carol", "server")); err == nil {
		t.Fatal("a new client connected to a draining server")
	}
	if got := srv.Stats.RefusedDraining.Load(); got < 1 {
		t.Errorf("RefusedDraining = %d, want the refused connections counted", got)
	}
}
