package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"tlsvpn/tunnel/tunneltest"
)

// testDialer is a serverDialer for vpn.test:port whose name resolves to
// addrs, logging to the returned buffer.
func testDialer(t *testing.T, port string, addrs ...string) (*serverDialer, *tunneltest.SyncBuffer) {
	t.Helper()
	return testServers(t, map[string][]string{"vpn.test": addrs}, "vpn.test:"+port)
}

// testServers is a serverDialer for servers (HOST:PORT each) whose names
// resolve as names says, logging to the returned buffer.
func testServers(t *testing.T, names map[string][]string, servers ...string) (*serverDialer, *tunneltest.SyncBuffer) {
	t.Helper()
	log := new(tunneltest.SyncBuffer)
	specs, err := parseServers(servers, "")
	if err != nil {
		t.Fatal(err)
	}
	d := newServerDialer(specs, slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	d.lookup = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		addrs, ok := names[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var ips []netip.Addr
		for _, a := range addrs {
			ips = append(ips, netip.MustParseAddr(a))
		}
		return ips, nil
	}
	return d, log
}

// wantLines checks that log has a line containing each of want, in order.
func wantLines(t *testing.T, log string, want ...string) {
	t.Helper()
	lines := strings.Split(log, "\n")
	i := 0
	for _, w := range want {
		for i < len(lines) && !strings.Contains(lines[i], w) {
			i++
		}
		if i == len(lines) {
			t.Fatalf("log lacks %q (in this order):\n%s", w, log)
		}
		i++
	}
}

// TestServerDialerLogs: before each dial the dialer says what it
// resolved and which of several addresses it tries; an address that
// fails is named and the next one tried; repeats in a retry loop go to
// debug level.
func TestServerDialerLogs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	// Linux routes all of 127.0.0.0/8 to lo: nothing listens on .2.
	d, log := testDialer(t, port, "127.0.0.2", "127.0.0.1")

	c, err := d.Dial(context.Background(), false)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	if got, want := d.lastAddr().String(), "127.0.0.1:"+port; got != want {
		t.Errorf("lastAddr() = %s, want %s", got, want)
	}
	wantLines(t, log.String(),
		`level=INFO msg="resolving the server's name" host=vpn.test`,
		`level=INFO msg="connecting to the server" server=vpn.test:`+port+` resolved_to=127.0.0.2:`+port+` address="1 of 2"`,
		`level=INFO msg="no connection to this address of the server; trying the next" addr=127.0.0.2:`+port+` err="connect to 127.0.0.2:`+port+`: connection refused"`,
		`level=INFO msg="connecting to the server" server=vpn.test:`+port+` resolved_to=127.0.0.1:`+port+` address="2 of 2"`)

	// The same attempt again at once: the same lines, at debug level.
	from := len(log.String())
	c, err = d.Dial(context.Background(), false)
	if err != nil {
		t.Fatalf("second Dial: %v", err)
	}
	c.Close()
	again := log.String()[from:]
	if strings.Contains(again, "level=INFO") || strings.Count(again, "level=DEBUG") != 4 {
		t.Errorf("a repeated attempt logged, want the same four lines at debug level:\n%s", again)
	}
}

// TestServerDialerAddress: an address given as --server is dialed as is:
// no lookup, and no resolved_to in the line.
func TestServerDialerAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	log := new(tunneltest.SyncBuffer)
	specs, err := parseServers([]string{ln.Addr().String()}, "")
	if err != nil {
		t.Fatal(err)
	}
	d := newServerDialer(specs, slog.New(slog.NewTextHandler(log, nil)))
	d.lookup = nil // must not be called
	c, err := d.Dial(context.Background(), false)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	want := `level=INFO msg="connecting to the server" server=` + ln.Addr().String() + "\n"
	if got := log.String(); !strings.HasSuffix(got, want) || strings.Count(got, "\n") != 1 {
		t.Errorf("log:\n%s\nwant one line ending in %q", got, want)
	}
}

// TestServerDialerErrors: a failed dial says each thing once, names every
// address tried, and keeps the cause for errors.Is; a failed lookup is
// the resolver's error as is.
func TestServerDialerErrors(t *testing.T) {
	d, _ := testDialer(t, "9", "127.0.0.2", "127.0.0.3") // discard: nothing listens
	_, err := d.Dial(context.Background(), false)
	want := "connect to 127.0.0.2:9: connection refused; connect to 127.0.0.3:9: connection refused"
	if err == nil || err.Error() != want || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Dial = %v, want %q wrapping ECONNREFUSED", err, want)
	}

	d, _ = testDialer(t, "9", "127.0.0.2")
	if _, err := d.Dial(context.Background(), false); err == nil || err.Error() != "connect to 127.0.0.2:9: connection refused" {
		t.Errorf("Dial = %v, want one address's failure", err)
	}

	d, log := testServers(t, nil, "nowhere.test:443")
	_, err = d.Dial(context.Background(), false)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || strings.Count(err.Error(), "nowhere.test") != 1 {
		t.Errorf("Dial = %v, want the resolver's error naming the host once", err)
	}
	if strings.Contains(log.String(), "connecting to the server") {
		t.Errorf("dialed without an address:\n%s", log)
	}
}

// TestServerDialerSeveral: of two servers, the one that does not answer
// is named and the next tried in the same attempt; the certificate name
// checked is the server reached; once its session is up, the next
// attempt goes to it first.
func TestServerDialerSeveral(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d, log := testServers(t, map[string][]string{"a.test": {"127.0.0.2"}, "b.test": {"127.0.0.1"}}, "a.test:"+port, "b.test:"+port)
	d.order.shuffle = func(int, func(i, j int)) {} // a, then b

	c, err := d.Dial(context.Background(), false)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	if got := d.current(); got != "b.test:"+port {
		t.Errorf("current() = %s, want b.test:%s", got, port)
	}
	if got := d.serverName(); got != "b.test" {
		t.Errorf("serverName() = %q, want b.test", got)
	}
	wantLines(t, log.String(),
		`msg="connecting to the server" server=a.test:`+port+` resolved_to=127.0.0.2:`+port+` server_try="1 of 2"`,
		`msg="no connection to this server; trying the next" server=a.test:`+port+` next=b.test:`+port+` err="connect to 127.0.0.2:`+port+`: connection refused"`,
		`msg="connecting to the server" server=b.test:`+port+` resolved_to=127.0.0.1:`+port+` server_try="2 of 2"`)

	d.up()
	from := len(log.String())
	c, err = d.Dial(context.Background(), false)
	if err != nil {
		t.Fatalf("second Dial: %v", err)
	}
	c.Close()
	if again := log.String()[from:]; strings.Contains(again, "a.test") {
		t.Errorf("after a session on b, the next attempt tried a first:\n%s", again)
	}
}

// TestServerDialerPinAll: with a full tunnel every server is resolved
// once at start (a name that does not resolve is left out with a
// warning) and only those addresses are dialed from then on.
func TestServerDialerPinAll(t *testing.T) {
	d, log := testServers(t, map[string][]string{"a.test": {"127.0.0.2", "::1"}}, "a.test:9", "nowhere.test:9", "192.0.2.1:9")
	all, err := d.pinAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(all), "[127.0.0.2:9 [::1]:9 192.0.2.1:9]"; got != want {
		t.Errorf("pinAll = %s, want %s", got, want)
	}
	if !strings.Contains(log.String(), `msg="leaving out a server whose name does not resolve" server=nowhere.test:9`) {
		t.Errorf("no warning for the server left out:\n%s", log)
	}
	d.lookup = func(context.Context, string, string) ([]netip.Addr, error) {
		t.Error("resolved a name after pinAll")
		return nil, errors.New("no")
	}
	var dialed []string
	d.before = func(_ context.Context, a netip.AddrPort) error {
		dialed = append(dialed, a.String())
		return errors.New("not here")
	}
	d.order.shuffle = func(int, func(i, j int)) {}
	if _, err := d.Dial(context.Background(), false); err == nil {
		t.Fatal("Dial succeeded")
	}
	if got, want := fmt.Sprint(dialed), "[127.0.0.2:9 [::1]:9 192.0.2.1:9]"; got != want {
		t.Errorf("dialed %s, want %s", got, want)
	}

	d, _ = testServers(t, nil, "nowhere.test:9")
	if _, err := d.pinAll(context.Background()); err == nil {
		t.Error("pinAll with no server resolving succeeded")
	}
}

// TestServerDialerHungServer: a server that does not answer at all (a
// host that is down, a firewall that drops) gets its share of the
// attempt's time, not all of it, and the next server is tried in the
// same attempt. Time is synctest's: the two minutes pass at once.
func TestServerDialerHungServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, log := testServers(t, map[string][]string{"a.test": {"192.0.2.1"}, "b.test": {"192.0.2.2"}}, "a.test:443", "b.test:443")
		d.order.shuffle = func(int, func(i, j int)) {} // a, then b
		var hung time.Duration
		d.before = func(ctx context.Context, a netip.AddrPort) error {
			if a.Addr() == netip.MustParseAddr("192.0.2.1") {
				start := time.Now()
				<-ctx.Done() // no answer
				hung = time.Since(start)
				return ctx.Err()
			}
			return errors.New("refused by the test") // b answered; stop short of a real dial
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := d.Dial(ctx, false)
		if hung != time.Minute {
			t.Errorf("the server that does not answer held the attempt %v, want half of it (1m0s)", hung)
		}
		want := "connect to 192.0.2.1:443: no answer (timed out); connect to 192.0.2.2:443: refused by the test"
		if err == nil || err.Error() != want {
			t.Errorf("Dial = %v, want %q", err, want)
		}
		if !strings.Contains(log.String(), `msg="no connection to this server; trying the next" server=a.test:443 next=b.test:443`) {
			t.Errorf("the move to the next server is not logged:\n%s", log)
		}
	})
}
