package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
)

// portalNet is the captive portal topology of the tests below:
//
//	laptop 198.18.40.2, 2001:db8:40::2 (resolv.conf: the router)
//	  |
//	router: LAN 198.18.40.1, 2001:db8:40::1: DNS (probe.portal.test), the
//	  |     portal's web server on :8080, where all TCP 80 from the laptop
//	  |     goes until it logged in; forwards nothing else of the laptop's
//	  |     until then. WAN 198.18.41.1, 2001:db8:41::1
//	server 198.18.41.2, 2001:db8:41::2: tunneld on :443
//
// The router counts every packet from the laptop that is neither the
// hole's (DNS, TCP 80/443, the server's 443 among them) nor neighbor
// discovery: what the kill switch must never let out (counter "leaks").
type portalNet struct {
	laptop, router, server *netnstest.NS
	laptopIf               string
	tunnelc, pki           string
	resolv                 string // the laptop's resolv.conf (ip netns exec bind-mounts it)
	browser                *http.Client

	mu       sync.Mutex
	loginErr error // guarded by mu
}

const (
	portalProbeURL = "http://probe.portal.test/generate_204"
	portalPage     = "http://198.18.40.1/portal"
)

func newPortalNet(t *testing.T, loggedIn bool, serverArgs ...string) *portalNet {
	t.Helper()
	n := &portalNet{laptop: netnstest.New(t), router: netnstest.New(t), server: netnstest.New(t)}
	laptop, router, server := n.laptop, n.router, n.server
	tunneld, tunnelc := binaries(t)
	n.tunnelc = tunnelc
	for _, ns := range []*netnstest.NS{laptop, router, server} {
		noDAD(t, ns)
	}
	laptopIf, lan := netnstest.Veth(t, laptop, netip.MustParsePrefix("198.18.40.2/24"), router, netip.MustParsePrefix("198.18.40.1/24"))
	wan, serverIf := netnstest.Veth(t, router, netip.MustParsePrefix("198.18.41.1/24"), server, netip.MustParsePrefix("198.18.41.2/24"))
	n.laptopIf = laptopIf
	laptop.Run(t, "ip", "addr", "add", "2001:db8:40::2/64", "dev", laptopIf, "nodad")
	router.Run(t, "ip", "addr", "add", "2001:db8:40::1/64", "dev", lan, "nodad")
	router.Run(t, "ip", "addr", "add", "2001:db8:41::1/64", "dev", wan, "nodad")
	server.Run(t, "ip", "addr", "add", "2001:db8:41::2/64", "dev", serverIf, "nodad")
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.40.1")
	laptop.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:40::1")
	server.Run(t, "ip", "route", "add", "198.18.40.0/24", "via", "198.18.41.1")
	server.Run(t, "ip", "-6", "route", "add", "2001:db8:40::/64", "via", "2001:db8:41::1")
	router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

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
	if loggedIn {
		n.setLoggedIn(true)
	}

	// The portal: everything is redirected to the login page; /login lets
	// the laptop through, as a hotel's portal does after "I accept".
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, portalPage, http.StatusFound)
	})
	mux.HandleFunc("/portal", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>Welcome to the hotel. <a href=/login>Accept</a></html>\n")
	})
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := n.setLoggedIn(true); err != nil {
			http.Error(w, "login failed", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "You are online.\n")
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(router.Listen(t, "tcp", ":8080"))
	t.Cleanup(func() { hs.Close() })
	serveDNS(t, router, "198.18.40.1:53", map[string]netip.Addr{"probe.portal.test.": netip.MustParseAddr("198.18.41.2")})

	// The laptop's resolver is the router's, as DHCP would set it.
	n.resolv = netnsResolvConf(t, laptop, "nameserver 198.18.40.1\n")

	n.browser = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return laptop.Dial(ctx, network, addr)
		},
	}}
	t.Cleanup(n.browser.CloseIdleConnections)

	n.pki = t.TempDir()
	e := &env{}
	e.run(t, tunneld, "pki", "init", "--dir", n.pki)
	e.run(t, tunneld, "pki", "issue", "--dir", n.pki, "--server", "--name", "server", "--ip", "198.18.41.2")
	e.run(t, tunneld, "pki", "issue", "--dir", n.pki, "--client", "--name", "laptop")
	srv := start(t, server, tunneld, append([]string{"--listen", "198.18.41.2:443",
		"--cert", n.pki + "/server.crt", "--key", n.pki + "/server.key", "--ca", n.pki + "/ca.crt",
		"--subnet", "100.64.0.0/24", "--state-dir", t.TempDir()}, serverArgs...)...)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	return n
}

// setLoggedIn lets the laptop through the router, or (false) puts it back
// behind the portal, as when it joins another portal's network.
func (n *portalNet) setLoggedIn(in bool) error {
	op := "add"
	if !in {
		op = "delete"
	}
	out, err := n.router.Cmd(context.Background(), "sh", "-c",
		"nft "+op+" element inet portal authed4 '{ 198.18.40.2 }' && nft "+op+" element inet portal authed6 '{ 2001:db8:40::2 }'").CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s the laptop to the portal's sets: %v\n%s", op, err, out)
		n.mu.Lock()
		n.loginErr = err
		n.mu.Unlock()
	}
	return err
}

// startClient starts tunnelc --full-tunnel --kill-switch with short
// timeouts, the test's probe and a 50s window; it returns the process and
// its control socket.
func (n *portalNet) startClient(t *testing.T) (*proc, string) {
	t.Helper()
	ctlPath := controlPath(t)
	cli := start(t, n.laptop, n.tunnelc, "--server", "198.18.41.2:443",
		"--cert", n.pki+"/laptop.crt", "--key", n.pki+"/laptop.key", "--ca", n.pki+"/ca.crt",
		"--full-tunnel", "--kill-switch", "--handshake-timeout", "2s",
		"--portal-probe", portalProbeURL, "--portal-window", "50s",
		"--control", ctlPath, "--log-level", "debug")
	return cli, ctlPath
}

// status asks tunnelc; the zero status until its socket answers.
func (n *portalNet) status(t *testing.T, ctlPath string) control.ClientStatus {
	t.Helper()
	var st control.ClientStatus
	if r := ctl(t, n.tunnelc, "status", "--control", ctlPath, "--json"); r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("tunnelc status --json: %v\n%s", err, r.stdout)
		}
	}
	return st
}

// waitPortal waits until tunnelc shows the portal with its hole open and
// checks what it shows and logs.
func (n *portalNet) waitPortal(t *testing.T, cli *proc, ctlPath string, d time.Duration) control.ClientStatus {
	t.Helper()
	var st control.ClientStatus
	waitFor(t, d, "tunnelc to find the portal", func() bool {
		st = n.status(t, ctlPath)
		return st.Portal != nil && !st.Portal.OpenUntil.IsZero()
	})
	if st.Portal.URL != portalPage || st.Portal.Interface != n.laptopIf || st.State == "up" {
		t.Fatalf("status with the portal: state %s, portal %+v; want the portal %s on %s", st.State, st.Portal, portalPage, n.laptopIf)
	}
	if left := time.Until(st.Portal.OpenUntil); left <= 0 || left > 50*time.Second {
		t.Errorf("hole open until %v (%v from now), want within --portal-window 50s", st.Portal.OpenUntil, left)
	}
	human := ctl(t, n.tunnelc, "status", "--control", ctlPath).stdout
	if !strings.Contains(human, "captive portal:") || !strings.Contains(human, portalPage+": DNS and TCP 80/443 open on "+n.laptopIf) {
		t.Errorf("tunnelc status does not show the portal:\n%s", human)
	}
	if !strings.Contains(cli.log.String(), "captive portal detected at "+portalPage+"; opening DNS and TCP 80/443 on "+n.laptopIf+" for 50s so you can log in") {
		t.Errorf("tunnelc did not log the portal:\n%s", cli.log)
	}
	return st
}

// checkHole checks that during the portal window a browser on the laptop
// reaches the portal over IPv4 and IPv6, and that nothing else leaves the
// laptop: other ports, UDP, ICMP, both families.
func (n *portalNet) checkHole(t *testing.T) {
	t.Helper()
	for _, u := range []string{"http://198.18.41.2/", "http://[2001:db8:41::2]/", portalPage} {
		if body, err := get(n.browser, u); err != nil || !strings.Contains(body, "Welcome to the hotel") {
			t.Errorf("browser GET %s through the hole: %v %q, want the portal page", u, err, body)
		}
	}
	for _, addr := range []string{"198.18.41.2:22", "[2001:db8:41::2]:22", "198.18.40.1:8080", "[2001:db8:40::1]:8080"} {
		if err := dialTCP(n.laptop, addr); err == nil {
			t.Errorf("TCP to %s left the laptop during the portal window", addr)
		}
	}
	for _, addr := range []string{"198.18.41.2:5000", "[2001:db8:41::2]:5000", "198.18.40.1:123"} {
		if err := sendUDP(n.laptop, addr); !errors.Is(err, syscall.EPERM) {
			t.Errorf("UDP to %s during the portal window: %v, want EPERM from the kill switch", addr, err)
		}
	}
	for _, dst := range []string{"198.18.41.2", "2001:db8:41::2"} {
		if err := n.laptop.Cmd(t.Context(), "ping", "-n", "-c1", "-W1", dst).Run(); err == nil {
			t.Errorf("ping %s left the laptop during the portal window", dst)
		}
	}
	n.checkNoLeaks(t)
}

func (n *portalNet) checkNoLeaks(t *testing.T) {
	t.Helper()
	if c := nftCounter(t, n.router, "leaks"); c != 0 {
		t.Errorf("the router saw %d packets from the laptop outside the hole:\n%s", c, n.router.Run(t, "nft", "list", "ruleset"))
	}
}

// loginAndWaitUp fetches the login URL from the laptop like a browser,
// waits for the tunnel, and checks that the hole is closed: tunnelc's
// status and log, its kill switch, and TCP 80 outside the tunnel (to a
// listener on the server's underlay address, now forwarded by the
// router) dropped again.
func (n *portalNet) loginAndWaitUp(t *testing.T, cli *proc, ctlPath string) {
	t.Helper()
	if body, err := get(n.browser, "http://198.18.41.2/login"); err != nil || !strings.Contains(body, "You are online") {
		n.mu.Lock()
		defer n.mu.Unlock()
		t.Fatalf("login: %v %q (%v)", err, body, n.loginErr)
	}
	var st control.ClientStatus
	waitFor(t, 40*time.Second, "the tunnel to come up after the login", func() bool {
		st = n.status(t, ctlPath)
		return st.State == "up" && st.Portal == nil
	})
	if table := n.laptop.Run(t, "nft", "list", "table", "inet", "tlsvpn-tunnelc0"); strings.Contains(table, `oifname "`+n.laptopIf+`" tcp dport 80 accept`) {
		t.Errorf("tunnel up, but the hole is still in the kill switch:\n%s", table)
	}
	if !strings.Contains(cli.log.String(), "tunnel up: captive portal hole closed") {
		t.Errorf("tunnelc did not log the hole closing:\n%s", cli.log)
	}
	if human := ctl(t, n.tunnelc, "status", "--control", ctlPath).stdout; strings.Contains(human, "portal") {
		t.Errorf("tunnel up, tunnelc status still shows a portal:\n%s", human)
	}
	if err := ping(t, n.laptop, "100.64.0.1"); err != nil {
		t.Errorf("through the tunnel: %v", err)
	}
	web := n.server.Listen(t, "tcp", "198.18.41.2:80")
	defer web.Close()
	if err := dialTCP(n.laptop, "198.18.41.2:80"); err == nil {
		t.Errorf("TCP 80 outside the tunnel left the laptop after the hole closed")
	}
	web.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := web.Accept(); err == nil {
		c.Close()
		t.Errorf("the server accepted TCP 80 from the laptop outside the tunnel after the hole closed")
	}
	n.checkNoLeaks(t)
}

// TestNetNSCaptivePortal: tunnelc --full-tunnel --kill-switch starts
// behind a captive portal (portalNet). Before the login tunnelc finds the
// portal with its probe (resolving the probe's name with the router's DNS
// through the kill switch), shows it in 'tunnelc status', and its kill
// switch lets out only DNS and TCP 80/443: the browser reaches the portal
// over IPv4 and IPv6; TCP 22, UDP and ICMP to anything do not leave the
// laptop, as the router's counter shows. After the login the tunnel comes
// up, the hole is closed (TCP 80 outside the tunnel is dropped again) and
// the status shows no portal.
func TestNetNSCaptivePortal(t *testing.T) {
	n := newPortalNet(t, false)
	cli, ctlPath := n.startClient(t)
	n.waitPortal(t, cli, ctlPath, 30*time.Second)
	n.checkHole(t)
	n.loginAndWaitUp(t, cli, ctlPath)
}

// TestNetNSCaptivePortalWhileUp: the tunnel is up (full tunnel, the
// server's DNS pushed) when the laptop finds itself behind a portal, as
// after sleeping at the office and waking in a hotel. tunnelc notices the
// dead session, finds the portal (its probe resolving with the network's
// DNS server, not the tunnel's that resolv.conf names), and besides the
// hole takes the full tunnel's routes and DNS settings off so that the
// browser reaches the portal; after the login the tunnel, its routes and
// its DNS settings are back and the hole is closed.
func TestNetNSCaptivePortalWhileUp(t *testing.T) {
	n := newPortalNet(t, true, "--keepalive", "1s", "--dns", "100.64.0.1")
	cli, ctlPath := n.startClient(t)
	waitFor(t, 15*time.Second, "the tunnel to come up", func() bool { return n.status(t, ctlPath).State == "up" })
	tunnelState := func() (routes, resolv string) {
		b, _ := os.ReadFile(n.resolv)
		return n.laptop.Run(t, "ip", "route", "show", "dev", "tunnelc0"), string(b)
	}
	if routes, resolv := tunnelState(); !strings.Contains(routes, "0.0.0.0/1") || !strings.Contains(resolv, "nameserver 100.64.0.1\n") {
		t.Fatalf("tunnel up: routes through tunnelc0:\n%s\nresolv.conf:\n%s", routes, resolv)
	}

	if err := n.setLoggedIn(false); err != nil {
		t.Fatal(err)
	}
	n.waitPortal(t, cli, ctlPath, 40*time.Second)
	if routes, resolv := tunnelState(); strings.Contains(routes, "0.0.0.0/1") || resolv != "nameserver 198.18.40.1\n" {
		t.Errorf("portal window: the full tunnel's routes or DNS are still in the way: routes through tunnelc0:\n%s\nresolv.conf:\n%s", routes, resolv)
	}
	n.checkHole(t)
	n.loginAndWaitUp(t, cli, ctlPath)
	if routes, resolv := tunnelState(); !strings.Contains(routes, "0.0.0.0/1") || !strings.Contains(resolv, "nameserver 100.64.0.1\n") {
		t.Errorf("tunnel back: routes through tunnelc0:\n%s\nresolv.conf:\n%s", routes, resolv)
	}
}

// netnsResolvConf gives ns a resolv.conf of its own with content and
// returns its path: `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf
// over /etc/resolv.conf, so what a daemon in ns writes there lands in that
// file. It is removed after the test.
func netnsResolvConf(t *testing.T, ns *netnstest.NS, content string) string {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns.Name)
	if _, err := os.Stat("/etc/netns"); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove("/etc/netns") }) // only if we made it (and it is empty)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
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
	i := strings.Index(out, "packets ")
	if i < 0 {
		t.Fatalf("counter %s: %q", name, out)
	}
	f := strings.Fields(out[i:])
	c, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("counter %s: %q", name, out)
	}
	return c
}

// serveDNS answers A queries for names (fully qualified) on the UDP
// address addr in ns until the test ends; anything else gets an empty
// answer. Enough for a resolver; not a DNS server.
func serveDNS(t *testing.T, ns *netnstest.NS, addr string, names map[string]netip.Addr) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen for DNS on %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:m], names); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
}

// dnsAnswer returns the response to the one-question query q (RFC 1035
// section 4.1), nil if q is not one.
func dnsAnswer(q []byte, names map[string]netip.Addr) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i, name := 12, ""
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if l > 63 || i+1+l > len(q) {
			return nil
		}
		name += string(q[i+1:i+1+l]) + "."
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	question := q[12 : i+5] // name, type, class
	qtype := binary.BigEndian.Uint16(q[i+1:])
	resp := append([]byte(nil), q[:2]...) // ID
	resp = append(resp, 0x81, 0x80, 0, 1) // response, recursion desired and available; 1 question
	a, ok := names[strings.ToLower(name)]
	if ok && qtype == 1 && a.Is4() {
		resp = append(resp, 0, 1, 0, 0, 0, 0)
		resp = append(resp, question...)
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4) // name (pointer), A, IN, TTL 60, 4 bytes
		return append(resp, a.AsSlice()...)
	}
	resp = append(resp, 0, 0, 0, 0, 0, 0)
	return append(resp, question...)
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
