package main

// tunneld drain with the real binaries: a gateway taken out of service
// moves its client to the other server of the client's list, says so in
// its status, and answers 503 on /ready.

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tlsvpn/routing/netnstest"
)

// ready fetches http://addr/ready inside ns and returns the status code.
func ready(t *testing.T, ns *netnstest.NS, addr string) int {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return ns.Dial(ctx, network, a)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/ready")
	if err != nil {
		t.Fatalf("GET /ready: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestNetNSDrain(t *testing.T) {
	srv, laptop := netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	netnstest.Veth(t, srv, netip.MustParsePrefix("198.18.0.1/30"), laptop, netip.MustParsePrefix("198.18.0.2/30"))
	for _, a := range []string{"198.18.100.1/32", "198.18.100.2/32"} {
		srv.Run(t, "ip", "addr", "add", a, "dev", "lo")
	}
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")

	pki := t.TempDir()
	e := &env{pki: pki}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "gw", "--ip", "198.18.100.1", "--ip", "198.18.100.2")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	type gateway struct {
		p       *proc
		ctl     string
		metrics string
	}
	gw := func(listen, tun, subnet, metrics string) gateway {
		g := gateway{ctl: controlPath(t), metrics: metrics}
		g.p = start(t, srv, tunneld, "--listen", listen, "--tun", tun, "--cert", e.file("gw.crt"), "--key", e.file("gw.key"),
			"--ca", e.file("ca.crt"), "--subnet", subnet, "--state-dir", "", "--metrics", metrics, "--control", g.ctl)
		eventually(t, tun+" listening", func() bool { return strings.Contains(g.p.log.String(), "msg=listening") })
		return g
	}
	a := gw("198.18.100.1:443", "tunneld1", "100.64.1.0/24", "127.0.0.1:9101")
	b := gw("198.18.100.2:443", "tunneld2", "100.64.2.0/24", "127.0.0.1:9102")
	if code := ready(t, srv, a.metrics); code != http.StatusOK {
		t.Fatalf("/ready of a gateway in service = %d, want 200", code)
	}

	ctl := controlPath(t)
	start(t, laptop, tunnelc, "--server", "198.18.100.1:443", "--server", "198.18.100.2:443",
		"--cert", e.file("laptop.crt"), "--key", e.file("laptop.key"), "--ca", e.file("ca.crt"),
		"--control", ctl, "--log-level", "debug")
	// Whichever it took first is drained; it must end up on the other.
	on := func(prefix string) bool {
		return hasAddr(laptop, "tunnelc0", netip.MustParsePrefix(prefix))
	}
	eventually(t, "the laptop's tunnel", func() bool { return on("100.64.1.2/24") || on("100.64.2.2/24") })
	from, to, toAddr := a, b, "100.64.2.2/24"
	if on("100.64.2.2/24") {
		from, to, toAddr = b, a, "100.64.1.2/24"
	}

	out := srv.Run(t, tunneld, "drain", "--control", from.ctl)
	if !strings.Contains(out, "draining: new connections are refused") || !strings.Contains(out, "1 sessions move off") {
		t.Errorf("tunneld drain printed %q", out)
	}
	eventually(t, "the laptop on the other gateway", func() bool { return on(toAddr) })
	if err := ping(t, laptop, strings.Replace(toAddr, ".2/24", ".1", 1)); err != nil {
		t.Errorf("through the tunnel to the other gateway: %v", err)
	}
	status := srv.Run(t, tunneld, "status", "--control", from.ctl)
	if !strings.Contains(status, "state:") || !strings.Contains(status, "draining for") || !strings.Contains(status, "0 sessions left") {
		t.Errorf("tunneld status of the drained gateway:\n%s", status)
	}
	if code := ready(t, srv, from.metrics); code != http.StatusServiceUnavailable {
		t.Errorf("/ready of the drained gateway = %d, want 503", code)
	}
	if code := ready(t, srv, to.metrics); code != http.StatusOK {
		t.Errorf("/ready of the other gateway = %d, want 200", code)
	}
	if st := laptop.Run(t, tunnelc, "status", "--control", ctl); !strings.Contains(st, "state:           up") {
		t.Errorf("tunnelc status after the move:\n%s", st)
	}
	// A new connection to the drained gateway is closed at once, before
	// any byte, and counted.
	fromAddr := "198.18.100.1:443"
	if from == b {
		fromAddr = "198.18.100.2:443"
	}
	c, err := laptop.Dial(t.Context(), "tcp", fromAddr)
	if err != nil {
		t.Fatalf("dial the drained gateway: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a new connection to the drained gateway read %d bytes, %v; want EOF at once", n, err)
	}
	c.Close()
	eventually(t, "the drained gateway's refusals counted", func() bool {
		return scrapeMetric(t, srv, from.metrics, "tunneld_refused_draining_total") >= 1
	})
}
