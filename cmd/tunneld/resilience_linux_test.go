package main

// Faults against a live tunnel: in each case a long inner TCP transfer must
// complete byte-exact and the client must keep its tunnel address. The
// results are logged as "RESULT" lines for the resilience table.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"tlsvpn/routing/netnstest"
)

// pair is a server and one laptop joined by a veth in 198.18.0.0/29, so
// the laptop can move to another address of the same link.
type pair struct {
	tunneld, tunnelc string
	pki, state       string
	server, laptop   *netnstest.NS
	laptopIf         string
	srvArgs          []string
	srv, cli         *proc
}

var clientAddr = netip.MustParsePrefix("100.64.0.2/24")

func newPair(t *testing.T, clientFlags ...string) *pair {
	t.Helper()
	return newPairWith(t, nil, nil, clientFlags...)
}

// newPairWith is newPair with extra tunneld flags and a hook that runs on
// the laptop namespace before tunnelc starts.
func newPairWith(t *testing.T, serverFlags []string, prepare func(laptop *netnstest.NS), clientFlags ...string) *pair {
	t.Helper()
	p := &pair{server: netnstest.New(t), laptop: netnstest.New(t)}
	p.tunneld, p.tunnelc = binaries(t)
	_, p.laptopIf = netnstest.Veth(t, p.server, netip.MustParsePrefix("198.18.0.1/29"), p.laptop, netip.MustParsePrefix("198.18.0.2/29"))
	p.pki = t.TempDir()
	p.state = t.TempDir()
	run := func(args ...string) {
		t.Helper()
		(&env{}).run(t, p.tunneld, args...)
	}
	run("pki", "init", "--dir", p.pki)
	run("pki", "issue", "--dir", p.pki, "--server", "--name", "server", "--ip", "198.18.0.1")
	run("pki", "issue", "--dir", p.pki, "--client", "--name", "laptop")
	p.srvArgs = []string{"--listen", "198.18.0.1:443",
		"--cert", p.pki + "/server.crt", "--key", p.pki + "/server.key", "--ca", p.pki + "/ca.crt",
		"--subnet", "100.64.0.0/24", "--keepalive", "2s", "--state-dir", p.state, "--log-level", "debug"}
	p.srvArgs = append(p.srvArgs, serverFlags...)
	p.startServer(t)
	if prepare != nil {
		prepare(p.laptop)
	}
	args := append([]string{"--server", "198.18.0.1:443",
		"--cert", p.pki + "/laptop.crt", "--key", p.pki + "/laptop.key", "--ca", p.pki + "/ca.crt", "--log-level", "debug"}, clientFlags...)
	p.cli = start(t, p.laptop, p.tunnelc, args...)
	eventually(t, "client address", func() bool { return hasAddr(p.laptop, "tunnelc0", clientAddr) })
	return p
}

func (p *pair) startServer(t *testing.T) {
	t.Helper()
	p.srv = start(t, p.server, p.tunneld, p.srvArgs...)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(p.srv.log.String(), "msg=listening") })
}

// pacedTransfer sends n bytes at about rate bytes/s from the laptop to the
// server's tunnel address and reports whether the receiver got exactly
// them. It runs in the background; the result arrives on the channel.
func (p *pair) pacedTransfer(t *testing.T, port int, n int64, rate int64) <-chan error {
	t.Helper()
	addr := fmt.Sprintf("100.64.0.1:%d", port)
	ln := p.server.Listen(t, "tcp", addr)
	res := make(chan error, 1)
	got := make(chan [32]byte, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(90 * time.Second))
		h := sha256.New()
		m, _ := io.Copy(h, c)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		if m != n {
			sum = [32]byte{}
		}
		got <- sum
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := p.laptop.Dial(ctx, "tcp", addr)
	cancel()
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(90 * time.Second))
		h := sha256.New()
		buf := make([]byte, 32<<10)
		start := time.Now()
		var sent int64
		for sent < n {
			k := min(int64(len(buf)), n-sent)
			rand.Read(buf[:k])
			h.Write(buf[:k])
			if _, err := c.Write(buf[:k]); err != nil {
				res <- fmt.Errorf("send after %d bytes: %w", sent, err)
				return
			}
			sent += k
			if ahead := time.Duration(sent*int64(time.Second)/rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		var want [32]byte
		copy(want[:], h.Sum(nil))
		if sum := <-got; sum != want {
			res <- fmt.Errorf("receiver's bytes differ from the %d sent (or fewer arrived)", n)
			return
		}
		res <- nil
	}()
	return res
}

func waitTransfer(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(100 * time.Second):
		return fmt.Errorf("transfer still running after 100s")
	}
}

var outageRE = regexp.MustCompile(`msg=reconnected .*outage_ms=(\d+)`)

// lastOutage returns the outage of the client's last reconnect, from its
// log, or "-".
func lastOutage(log string) string {
	m := outageRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return "-"
	}
	return m[len(m)-1][1] + " ms"
}

func report(t *testing.T, fault, seen string, outage string, err error) {
	t.Helper()
	ok := "byte-exact"
	if err != nil {
		ok = "FAILED: " + err.Error()
	}
	t.Logf("RESULT | %s | %s | %s | %s |", fault, seen, outage, ok)
	if err != nil {
		t.Fatal(err)
	}
}

func TestNetNSResilience(t *testing.T) {
	t.Run("server killed and restarted", func(t *testing.T) {
		p := newPair(t)
		res := p.pacedTransfer(t, 6001, 24<<20, 8<<20)
		time.Sleep(700 * time.Millisecond) // the transfer is under way
		p.srv.cmd.Process.Signal(syscall.SIGKILL)
		<-p.srv.done
		p.startServer(t)
		err := waitTransfer(t, res)
		if !hasAddr(p.laptop, "tunnelc0", clientAddr) {
			t.Errorf("client lost its tunnel address %v", clientAddr)
		}
		eventually(t, "client reconnected", func() bool { return strings.Contains(p.cli.log.String(), "msg=reconnected") })
		report(t, "tunneld killed (SIGKILL) and restarted mid-transfer", "session ended (EOF), reconnected with backoff; same address from leases.json", lastOutage(p.cli.log.String()), err)
	})

	t.Run("underlay link down for 10s", func(t *testing.T) {
		p := newPair(t)
		res := p.pacedTransfer(t, 6002, 16<<20, 2<<20)
		time.Sleep(time.Second)
		p.laptop.Run(t, "ip", "link", "set", p.laptopIf, "down")
		time.Sleep(10 * time.Second)
		p.laptop.Run(t, "ip", "link", "set", p.laptopIf, "up")
		err := waitTransfer(t, res)
		seen := "TCP retransmitted; session survived"
		if strings.Contains(p.cli.log.String(), "msg=reconnected") {
			seen = "session ended, reconnected"
		}
		report(t, "underlay link down 10 s", seen, lastOutage(p.cli.log.String()), err)
	})

	t.Run("client underlay address changes", func(t *testing.T) {
		p := newPair(t)
		res := p.pacedTransfer(t, 6003, 24<<20, 8<<20)
		time.Sleep(700 * time.Millisecond)
		// The old address goes, a new one comes (as on a new Wi-Fi).
		p.laptop.Run(t, "ip", "addr", "del", "198.18.0.2/29", "dev", p.laptopIf)
		p.laptop.Run(t, "ip", "addr", "add", "198.18.0.3/29", "dev", p.laptopIf)
		err := waitTransfer(t, res)
		eventually(t, "session from the new address", func() bool {
			return strings.Contains(p.srv.log.String(), `msg="session established" remote_addr=198.18.0.3:`)
		})
		if !hasAddr(p.laptop, "tunnelc0", clientAddr) {
			t.Errorf("client lost its tunnel address %v", clientAddr)
		}
		report(t, "client underlay address changed (roaming)", "address watch replaced the session from the new address", lastOutage(p.cli.log.String()), err)
	})

	t.Run("reconnect time with and without resumption", func(t *testing.T) {
		// The client moves to a new address twice; the second reconnect
		// of each client is timed (the first one may lack a ticket).
		for _, mode := range []struct {
			name  string
			flags []string
			want  string
		}{
			{"with session resumption", nil, "resumed=true"},
			{"full handshake (--no-resumption)", []string{"--no-resumption"}, "resumed=false"},
		} {
			p := newPair(t, mode.flags...)
			for i, addr := range []string{"198.18.0.3/29", "198.18.0.4/29"} {
				old := "198.18.0.2/29"
				if i == 1 {
					old = "198.18.0.3/29"
				}
				p.laptop.Run(t, "ip", "addr", "del", old, "dev", p.laptopIf)
				p.laptop.Run(t, "ip", "addr", "add", addr, "dev", p.laptopIf)
				n := i + 1
				eventually(t, "reconnect", func() bool { return strings.Count(p.cli.log.String(), "msg=reconnected") >= n })
			}
			log := p.cli.log.String()
			lines := regexp.MustCompile(`msg=reconnected [^\n]*`).FindAllString(log, -1)
			last := lines[len(lines)-1]
			if !strings.Contains(last, mode.want) {
				t.Errorf("%s: reconnect line lacks %s: %s", mode.name, mode.want, last)
			}
			hs := regexp.MustCompile(`handshake_ms=(\d+)`).FindStringSubmatch(last)
			report(t, "reconnect "+mode.name, "handshake "+hs[1]+" ms, "+mode.want, lastOutage(log), nil)
		}
	})

	t.Run("1% random loss on the underlay", func(t *testing.T) {
		p := newPair(t)
		table := "tvtloss"
		p.laptop.Run(t, "nft", "add", "table", "inet", table)
		t.Cleanup(func() { p.laptop.Cmd(context.Background(), "nft", "delete", "table", "inet", table).Run() })
		for _, hook := range []string{"input", "output"} {
			p.laptop.Run(t, "nft", "add", "chain", "inet", table, hook, "{ type filter hook "+hook+" priority 0 ; }")
			dir := "iifname"
			if hook == "output" {
				dir = "oifname"
			}
			p.laptop.Run(t, "nft", "add", "rule", "inet", table, hook, dir, p.laptopIf, "numgen", "random", "mod", "100", "<", "1", "drop")
		}
		start := time.Now()
		res := p.pacedTransfer(t, 6004, 32<<20, 1<<40)
		err := waitTransfer(t, res)
		report(t, "1% random loss each way (nftables numgen)", fmt.Sprintf("slower; 32 MiB in %v", time.Since(start).Round(10*time.Millisecond)), "-", err)
	})

	t.Run("forced session rotation every 4 MB", func(t *testing.T) {
		p := newPair(t, "--rotate-bytes", "4000000")
		res := p.pacedTransfer(t, 6005, 48<<20, 24<<20)
		err := waitTransfer(t, res)
		rotations := strings.Count(p.cli.log.String(), `msg="session rotated"`)
		if rotations < 4 {
			t.Errorf("%d rotations during 48 MiB with --rotate-bytes 4000000, want >= 4", rotations)
		}
		if strings.Contains(p.cli.log.String(), "msg=reconnected") {
			t.Errorf("client reconnected during rotation; want hitless rotation:\n%s", p.cli.log.String())
		}
		report(t, "forced rotation every 4 MB", fmt.Sprintf("%d rotations, no reconnect", rotations), "0 (new session before old closes)", err)
	})
}

// TestNetNSIPv6Underlay: the server listens on an IPv6 address and the
// client reaches it over IPv6; both IPv4 and IPv6 work inside the tunnel.
func TestNetNSIPv6Underlay(t *testing.T) {
	server, laptop := netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	netnstest.Veth(t, server, netip.MustParsePrefix("2001:db8:6::1/64"), laptop, netip.MustParsePrefix("2001:db8:6::2/64"))
	pki, state := t.TempDir(), t.TempDir()
	e := &env{}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "2001:db8:6::1")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	srv := start(t, server, tunneld, "--listen", "[2001:db8:6::1]:443",
		"--cert", pki+"/server.crt", "--key", pki+"/server.key", "--ca", pki+"/ca.crt",
		"--subnet", "100.64.0.0/24", "--subnet6", "fd00:64::/64", "--state-dir", state)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	cli := start(t, laptop, tunnelc, "--server", "[2001:db8:6::1]:443",
		"--cert", pki+"/laptop.crt", "--key", pki+"/laptop.key", "--ca", pki+"/ca.crt")
	eventually(t, "client addresses", func() bool {
		return hasAddr(laptop, "tunnelc0", clientAddr) && hasAddr(laptop, "tunnelc0", netip.MustParsePrefix("fd00:64::2/64"))
	})
	// The client logs "connected" after it has set up its addresses.
	eventually(t, "client connected", func() bool { return strings.Contains(cli.log.String(), "msg=connected") })
	if !strings.Contains(cli.log.String(), "server=[2001:db8:6::1]:443") {
		t.Errorf("client did not connect over IPv6:\n%s", cli.log.String())
	}
	for _, dst := range []string{"100.64.0.1", "fd00:64::1"} {
		if err := ping(t, laptop, dst); err != nil {
			t.Fatal(err)
		}
	}
	transfer(t, laptop, server, "[fd00:64::1]:5021", 4<<20)
}
