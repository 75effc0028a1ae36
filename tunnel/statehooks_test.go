package tunnel_test

import (
	"context"
	"crypto/tls"
	"slices"
	"sync"
	"testing"
	"time"

	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// connectResumed runs a client's handshakes (TLS and protocol) with the
// server and reports whether TLS resumed a session.
func connectResumed(t *testing.T, srv *tunneltest.Server, cfg *tls.Config) bool {
	t.Helper()
	cl, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial: srv.Listener.Dial,
		TLS:  cfg,
		Setup: func(context.Context, tunnel.Config) (tun.Device, error) {
			return tuntest.NewChannelDevice("c", 1500, 1, 1), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, _, err := cl.Connect(ctx)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer tr.Close()
	return tr.Info().Resumed
}

// TestServerSessionTicketKeys: the keys given to SetSessionTicketKeys
// are the ones that seal and open tickets, also after a change while the
// server runs: a ticket resumes while its key is in the set, and not
// after the key left it.
func TestServerSessionTicketKeys(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{3}
	srv.Server.SetSessionTicketKeys([][32]byte{a})
	cfg := srv.CA.ClientConfig(t, "laptop", "server")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	for i, step := range []struct {
		keys [][32]byte // set before the connect; nil: unchanged
		want bool
	}{
		{nil, false},               // no ticket yet; one sealed with a
		{nil, true},                // resumed with a
		{[][32]byte{b, a}, true},   // a still opens; the new ticket is b's
		{[][32]byte{b}, true},      // b opens it
		{[][32]byte{c}, false},     // nothing opens it: a full handshake
		{[][32]byte{c, {4}}, true}, // c's ticket
	} {
		if step.keys != nil {
			srv.Server.SetSessionTicketKeys(step.keys)
		}
		if got := connectResumed(t, srv, cfg); got != step.want {
			t.Fatalf("step %d: resumed = %v, want %v", i, got, step.want)
		}
	}
}

// TestServerClaimedReleased: the session directory hooks hear of an
// identity's first session and of the end of its last one, not of a
// session replaced by a reconnect.
func TestServerClaimedReleased(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(what string) func(string) {
		return func(id string) {
			mu.Lock()
			events = append(events, what+" "+id)
			mu.Unlock()
		}
	}
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Claimed: record("claim"), Released: record("release")})
	first := srv.StartClient(t, "laptop")
	phone := srv.StartClient(t, "phone")
	second := srv.StartClient(t, "laptop") // replaces first's session
	first.Stop()
	if want := []string{"claim laptop", "claim phone"}; !slices.Equal(got(), want) {
		t.Fatalf("after a replaced session: %q, want %q", got(), want)
	}
	second.Stop()
	tunneltest.Eventually(t, func() bool { return len(got()) == 3 }, "events %q", got())
	phone.Stop()
	tunneltest.Eventually(t, func() bool { return len(got()) == 4 }, "events %q", got())
	if want := []string{"claim laptop", "claim phone", "release laptop", "release phone"}; !slices.Equal(got(), want) {
		t.Fatalf("events %q, want %q", got(), want)
	}
}
