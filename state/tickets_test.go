package state_test

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/state"
)

// clock is a settable clock, safe to read from handshake goroutines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestMemoryTicketKeysRotation: the first key is made on the first call
// and kept until Rotation; then a new one comes first, and a replaced key
// stays for Lifetime after it was replaced.
func TestMemoryTicketKeysRotation(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	k := state.NewMemoryTicketKeys(state.TicketKeysOptions{Rotation: time.Hour, Lifetime: 2 * time.Hour, Now: clk.Now})
	keys := func() [][32]byte {
		t.Helper()
		ks, err := k.Keys()
		if err != nil || len(ks) == 0 {
			t.Fatalf("Keys() = %d keys, %v", len(ks), err)
		}
		return ks
	}
	k0 := keys()[0]
	clk.Add(59 * time.Minute)
	if ks := keys(); len(ks) != 1 || ks[0] != k0 {
		t.Fatalf("before the rotation: %d keys, first changed %v; want the first key alone", len(ks), ks[0] != k0)
	}
	clk.Add(time.Minute) // 1h: k1 replaces k0
	ks := keys()
	if len(ks) != 2 || ks[1] != k0 || ks[0] == k0 {
		t.Fatalf("at the rotation: %d keys; want a new key first and the old one second", len(ks))
	}
	k1 := ks[0]
	clk.Add(time.Hour) // 2h: k2; k0 still opens tickets sealed until 1h
	if ks := keys(); len(ks) != 3 || ks[1] != k1 || ks[2] != k0 {
		t.Fatalf("at 2h: %d keys; want k2, k1, k0", len(ks))
	}
	clk.Add(time.Hour) // 3h: k0's last ticket (sealed at 1h) has expired
	if ks := keys(); len(ks) != 3 || ks[2] != k1 {
		t.Fatalf("at 3h: %d keys; want k3, k2, k1", len(ks))
	}
	// A long pause (a suspended laptop, a stopped clock): one new key, and
	// the old ones dropped when their tickets can no longer be valid.
	clk.Add(10 * time.Hour)
	if ks := keys(); len(ks) != 2 {
		t.Fatalf("after 10h more: %d keys; want the new one and the one it replaced", len(ks))
	}
}

// tcpPair returns the two ends of a loopback TCP connection (buffered,
// unlike net.Pipe, on which both TLS peers can block writing at once).
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return server, client
}

// handshake runs a TLS handshake between server and client over
// loopback TCP, and has the client read the session tickets the server
// sends after it. It reports whether the client resumed.
func handshake(t *testing.T, server, client *tls.Config) bool {
	t.Helper()
	sc, cc := tcpPair(t)
	defer sc.Close()
	defer cc.Close()
	srv := tls.Server(sc, server)
	errc := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte{1}) // the client reads the tickets before it
		}
		errc <- err
	}()
	cl := tls.Client(cc, client)
	if err := cl.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if _, err := cl.Read(make([]byte, 1)); err != nil {
		t.Fatalf("client read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return cl.ConnectionState().DidResume
}

// TestMemoryTicketKeysResumption: with the keys set on the server's
// tls.Config after each rotation, a ticket sealed before a rotation still
// resumes within its lifetime, and one whose key was dropped does not
// (long before crypto/tls's own seven-day limit would refuse it).
func TestMemoryTicketKeysResumption(t *testing.T) {
	ca := certstest.NewCA(t)
	clk := &clock{t: time.Now()} // certificates are valid from now on
	keys := state.NewMemoryTicketKeys(state.TicketKeysOptions{Rotation: time.Hour, Lifetime: 2 * time.Hour, Now: clk.Now})
	server := ca.ServerConfig(t, "vpn.test")
	server.Time = clk.Now
	apply := func() {
		ks, err := keys.Keys()
		if err != nil {
			t.Fatal(err)
		}
		server.SetSessionTicketKeys(ks)
	}
	client := func() *tls.Config {
		c := ca.ClientConfig(t, "laptop", "vpn.test")
		c.Time = clk.Now
		c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		return c
	}
	apply()
	// Three clients get a ticket sealed with the first key, at 0h.
	early, late, check := client(), client(), client()
	for _, c := range []*tls.Config{early, late, check} {
		if handshake(t, server, c) {
			t.Fatal("first handshake resumed")
		}
	}
	if !handshake(t, server, check) {
		t.Fatal("no resumption with the key that sealed the ticket")
	}

	// At 1h30 the first key is replaced (when next asked for), and opens
	// the tickets it sealed until it was replaced for 2h more: until 3h30.
	clk.Add(90 * time.Minute)
	apply()
	if !handshake(t, server, early) {
		t.Fatal("a ticket sealed before the rotation did not resume within its lifetime")
	}
	clk.Add(2*time.Hour + time.Second)
	apply()
	if handshake(t, server, late) {
		t.Fatal("a ticket sealed with a dropped key resumed")
	}
}
