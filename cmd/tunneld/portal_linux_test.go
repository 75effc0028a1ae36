package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
)

// TestNetNSCaptivePortal: a laptop behind a "Wi-Fi router" with a captive
// portal, tunnelc --full-tunnel --kill-switch. The router sends all TCP 80
// from the laptop to its portal page and drops everything else it would
// forward until a login request puts the laptop into an nftables set.
// Before the login tunnelc finds the portal with its probe, shows it in
// 'tunnelc status', and its kill switch lets out only DNS and TCP 80/443
// (the browser reaches the portal over IPv4 and IPv6; TCP 22, UDP, ICMP to
// anything do not leave the laptop, as the router's counter shows); after
// the login the tunnel comes up, the hole is closed (TCP 80 outside the
// tunnel is dropped again) and the status shows no portal.
//
//	laptop 198.18.40.2, 2001:db8:40::2
//	  | (router LAN 198.18.40.1, 2001:db8:40::1; portal on :8080, DNAT from any :80)
//	router
//	  | (router WAN 198.18.41.1, 2001:db8:41::1)
//	server 198.18.41.2, 2001:db8:41::2: tunneld on :443
func TestNetNSCaptivePortal(t *testing.T) {
	laptop, router, server := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	for _, ns := range []*netnstest.NS{laptop, router, server} {
		noDAD(t, ns)
	}
	_, lan := netnstest.Veth(t, laptop, netip.MustParsePrefix("198.18.40.2/24"), router, netip.MustParsePrefix("198.18.40.1/24"))
	wan, _ := netnstest.Veth(t, router, netip.MustParsePrefix("198.18.41.1/24"), server, netip.MustParsePrefix("198.18.41.2/24"))
	laptopIf := mustLinkName(t, laptop, "198.18.40.2")
	laptop.Run(t, "ip", "addr", "add", "2001:db8:40::2/64", "dev", laptopIf, "nodad")
	router.Run(t, "ip", "addr", "add", "2001:db8:40::1/64", "dev", lan, "nodad")
	router.Run(t, "ip", "addr", "add", "2001:db8:41::1/64", "dev", wan, "nodad")
	serverIf := mustLinkName(t, server, "198.18.41.2")
	server.Run(t, "ip", "addr", "add", "2001:db8:41::2/64", "dev", serverIf, "nodad")
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.40.1")
	laptop.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:40::1")
	server.Run(t, "ip", "route", "add", "198.18.40.0/24", "via", "198.18.41.1")
	server.Run(t, "ip", "-6", "route", "add", "2001:db8:40::/64", "via", "2001:db8:41::1")
	router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

	// The router: portal DNAT, forwarding only for the logged in, and a
	// counter of every packet from the laptop that is neither the hole's
	// (DNS, TCP 80/443; the server's 443 among them) nor neighbor
	// discovery: what the kill switch must never let out.
	ruleset := `table inet portal {
	set authed4 { type ipv4_addr; }
	set authed6 { type ipv6_addr; }
	counter leaks { }
	chain watch {
		type filter hook prerouting priority raw; policy accept;
		iifname != "LAN" return
		tcp dport { 53, 80, 443 } return
		udp dport 53 return
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report } return
		counter name leaks
	}
	chain portal {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "LAN" ip saddr != @authed4 tcp dport 80 dnat ip to 198.18.40.1:8080
		iifname "LAN" ip6 saddr != @authed6 tcp dport 80 dnat ip6 to [2001:db8:40::1]:8080
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "LAN" ip saddr @authed4 accept
		iifname "LAN" ip6 saddr @authed6 accept
		iifname "LAN" drop
	}
}
`
	nftIn(t, router, strings.ReplaceAll(ruleset, `"LAN"`, strconv.Quote(lan)))

	// The portal: the probe is redirected to the login page; /login lets
	// the laptop through, as a hotel's portal does after "I accept".
	var loginErr error
	var loginMu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://198.18.40.1/portal", http.StatusFound)
	})
	mux.HandleFunc("/portal", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>Welcome to the hotel. <a href=/login>Accept</a></html>\n")
	})
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		out, err := router.Cmd(context.Background(), "sh", "-c",
			"nft add element inet portal authed4 '{ 198.18.40.2 }' && nft add element inet portal authed6 '{ 2001:db8:40::2 }'").CombinedOutput()
		loginMu.Lock()
		defer loginMu.Unlock()
		if err != nil {
			loginErr = fmt.Errorf("login: %v\n%s", err, out)
			http.Error(w, "login failed", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "You are online.\n")
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(router.Listen(t, "tcp", ":8080"))
	t.Cleanup(func() { hs.Close() })

	pki := t.TempDir()
	e := &env{}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.41.2")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	srv := start(t, server, tunneld, "--listen", "198.18.41.2:443",
		"--cert", pki+"/server.crt", "--key", pki+"/server.key", "--ca", pki+"/ca.crt",
		"--subnet", "100.64.0.0/24", "--state-dir", t.TempDir())
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })

	ctlPath := controlPath(t)
	cli := start(t, laptop, tunnelc, "--server", "198.18.41.2:443",
		"--cert", pki+"/laptop.crt", "--key", pki+"/laptop.key", "--ca", pki+"/ca.crt",
		"--full-tunnel", "--kill-switch", "--handshake-timeout", "2s",
		"--portal-probe", "http://198.18.41.2/generate_204", "--portal-window", "50s",
		"--control", ctlPath, "--log-level", "debug")
	// status asks tunnelc; the zero status until its socket answers.
	status := func() control.ClientStatus {
		var st control.ClientStatus
		if r := ctl(t, tunnelc, "status", "--control", ctlPath, "--json"); r.code == 0 {
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("tunnelc status --json: %v\n%s", err, r.stdout)
			}
		}
		return st
	}

	// Before the login: the portal is found, the hole is open.
	var st control.ClientStatus
	waitFor(t, 30*time.Second, "tunnelc to find the portal", func() bool {
		st = status()
		return st.Portal != nil && !st.Portal.OpenUntil.IsZero()
	})
	if st.Portal.URL != "http://198.18.40.1/portal" || st.Portal.Interface != laptopIf || st.State == "up" {
		t.Fatalf("status before login: state %s, portal %+v; want the portal http://198.18.40.1/portal on %s", st.State, st.Portal, laptopIf)
	}
	if left := time.Until(st.Portal.OpenUntil); left <= 0 || left > 50*time.Second {
		t.Errorf("hole open until %v (%v from now), want within --portal-window 50s", st.Portal.OpenUntil, left)
	}
	human := ctl(t, tunnelc, "status", "--control", ctlPath).stdout
	if !strings.Contains(human, "captive portal:") || !strings.Contains(human, "http://198.18.40.1/portal: DNS and TCP 80/443 open on "+laptopIf) {
		t.Errorf("tunnelc status does not show the portal:\n%s", human)
	}
	if !strings.Contains(cli.log.String(), "captive portal detected at http://198.18.40.1/portal; opening DNS and TCP 80/443 on "+laptopIf+" for 50s so you can log in") {
		t.Errorf("tunnelc did not log the portal:\n%s", cli.log)
	}

	// A browser on the laptop reaches the portal, over IPv4 and IPv6.
	browser := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return laptop.Dial(ctx, network, addr)
		},
	}}
	defer browser.CloseIdleConnections()
	for _, u := range []string{"http://198.18.41.2/", "http://[2001:db8:41::2]/", "http://198.18.40.1/portal"} {
		if body, err := get(browser, u); err != nil || !strings.Contains(body, "Welcome to the hotel") {
			t.Errorf("browser GET %s through the hole: %v %q, want the portal page", u, err, body)
		}
	}
	// Nothing else leaves the laptop: other ports, UDP, ICMP, both families.
	for _, addr := range []string{"198.18.41.2:22", "[2001:db8:41::2]:22", "198.18.40.1:8080", "[2001:db8:40::1]:8080"} {
		if err := dialTCP(laptop, addr); err == nil {
			t.Errorf("TCP to %s left the laptop during the portal window", addr)
		}
	}
	for _, addr := range []string{"198.18.41.2:5000", "[2001:db8:41::2]:5000", "198.18.40.1:123"} {
		if err := sendUDP(laptop, addr); !errors.Is(err, syscall.EPERM) {
			t.Errorf("UDP to %s during the portal window: %v, want EPERM from the kill switch", addr, err)
		}
	}
	for _, dst := range []string{"198.18.41.2", "2001:db8:41::2"} {
		if err := laptop.Cmd(t.Context(), "ping", "-n", "-c1", "-W1", dst).Run(); err == nil {
			t.Errorf("ping %s left the laptop during the portal window", dst)
		}
	}
	if n := nftCounter(t, router, "leaks"); n != 0 {
		t.Errorf("the router saw %d packets from the laptop outside the hole:\n%s", n, router.Run(t, "nft", "list", "ruleset"))
	}

	// The user logs in; the tunnel comes up and the hole closes.
	if body, err := get(browser, "http://198.18.41.2/login"); err != nil || !strings.Contains(body, "You are online") {
		loginMu.Lock()
		t.Fatalf("login: %v %q (%v)", err, body, loginErr)
	}
	waitFor(t, 40*time.Second, "the tunnel to come up after the login", func() bool {
		st = status()
		return st.State == "up"
	})
	waitFor(t, 5*time.Second, "the portal to leave the status", func() bool {
		st = status()
		return st.Portal == nil
	})
	if table := laptop.Run(t, "nft", "list", "table", "inet", "tlsvpn-tunnelc0"); strings.Contains(table, `oifname "`+laptopIf+`" tcp dport 80 accept`) {
		t.Errorf("tunnel up, but the hole is still in the kill switch:\n%s", table)
	}
	if !strings.Contains(cli.log.String(), "tunnel up: captive portal hole closed") {
		t.Errorf("tunnelc did not log the hole closing:\n%s", cli.log)
	}
	if human := ctl(t, tunnelc, "status", "--control", ctlPath).stdout; strings.Contains(human, "portal") {
		t.Errorf("tunnel up, tunnelc status still shows a portal:\n%s", human)
	}
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Errorf("through the tunnel: %v", err)
	}
	// TCP 80 outside the tunnel is the kill switch's again: a listener on
	// the server's underlay address (routed outside the tunnel, and now
	// forwarded by the router) sees nothing.
	web := server.Listen(t, "tcp", "198.18.41.2:80")
	if err := dialTCP(laptop, "198.18.41.2:80"); err == nil {
		t.Errorf("TCP 80 outside the tunnel left the laptop after the hole closed")
	}
	web.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := web.Accept(); err == nil {
		c.Close()
		t.Errorf("the server accepted TCP 80 from the laptop outside the tunnel after the hole closed")
	}
	if n := nftCounter(t, router, "leaks"); n != 0 {
		t.Errorf("the router saw %d packets from the laptop outside the hole", n)
	}
}

// mustLinkName returns the interface in ns that has addr.
func mustLinkName(t *testing.T, ns *netnstest.NS, addr string) string {
	t.Helper()
	out := ns.Run(t, "ip", "-o", "addr", "show", "to", addr)
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("no interface with %s in %s: %q", addr, ns.Name, out)
	}
	return f[1]
}

// nftIn loads an nft ruleset into ns.
func nftIn(t *testing.T, ns *netnstest.NS, ruleset string) {
	t.Helper()
	cmd := ns.Cmd(t.Context(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f in %s: %v\n%s\n%s", ns.Name, err, out, ruleset)
	}
}

// nftCounter reads the packets of the named counter of table inet portal.
func nftCounter(t *testing.T, ns *netnstest.NS, name string) int {
	t.Helper()
	out := ns.Run(t, "nft", "list", "counter", "inet", "portal", name)
	f := strings.Fields(out[strings.Index(out, "packets"):])
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("counter %s: %q", name, out)
	}
	return n
}

// waitFor polls cond every 100ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// dialTCP connects from ns to addr within a second: a SYN the kill switch
// drops fails with EPERM or times out.
func dialTCP(ns *netnstest.NS, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// sendUDP sends one datagram from ns to addr.
func sendUDP(ns *netnstest.NS, addr string) error {
	c, err := ns.Dial(context.Background(), "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("x"))
	return err
}
