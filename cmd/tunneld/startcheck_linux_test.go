package main

// tunnelc checks that it can do its job before it connects: a handshake
// replaces the live session of the same identity on the server, so a
// start that fails afterwards (no privileges, a --tun name another
// process holds) would cut the user's working tunnel first.

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"tlsvpn/certs/certstest"
	"tlsvpn/cmd/internal/cli"
	"tlsvpn/routing/netnstest"
)

// exitCode waits (bounded) for p to exit on its own and returns its exit
// code.
func exitCode(t *testing.T, p *proc) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s still running after 20s, want it to refuse to start:\n%s", p.cmd.Path, p.log)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("wait %s: %v", p.cmd.Path, p.err)
	return -1
}

// TestNetNSTunnelcTUNInUse: a second tunnelc with the identity of a live
// one, started with a --tun name that is taken (by the live tunnelc, or
// by an interface that is not a TUN device), exits with ExitCannotRun
// and a message naming the interface, without connecting: the live
// session is not replaced and keeps carrying traffic.
func TestNetNSTunnelcTUNInUse(t *testing.T) {
	e := newEnv(t)
	laptop := e.laptops[0]
	live := e.connect(t, 0, "laptop1", netip.MustParsePrefix("100.64.0.2/24"))
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Fatalf("tunnel before the second tunnelc: %v", err)
	}
	if err := laptop.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "busy0"}, PeerName: "busy1"}); err != nil {
		t.Fatalf("add veth busy0: %v", err) // removed with the namespace
	}
	counters := []string{"tunneld_sessions_opened_total", "tunneld_sessions_replaced_total", "tunneld_handshake_failures_total"}
	before := map[string]float64{}
	for _, c := range counters {
		before[c] = e.metric(t, c)
	}

	for _, tc := range []struct{ tun, want string }{
		{"tunnelc0", "interface tunnelc0 is in use by another process"},
		{"busy0", "interface busy0 already exists and is not a TUN device"},
	} {
		second := start(t, laptop, e.tunnelc, "--server", e.serverIPs[0]+":443", "--tun", tc.tun,
			"--cert", e.file("laptop1.crt"), "--key", e.file("laptop1.key"), "--ca", e.file("ca.crt"), "--log-level", "debug")
		if code := exitCode(t, second); code != cli.ExitCannotRun {
			t.Errorf("tunnelc --tun %s exited %d, want %d (cannot run)", tc.tun, code, cli.ExitCannotRun)
		}
		out := second.log.String()
		if !strings.Contains(out, tc.want) {
			t.Errorf("tunnelc --tun %s said:\n%s\nwant %q", tc.tun, out, tc.want)
		}
		if strings.Contains(out, "connecting to the server") {
			t.Errorf("tunnelc --tun %s connected before it failed:\n%s", tc.tun, out)
		}
	}

	for _, c := range counters {
		if got := e.metric(t, c); got != before[c] {
			t.Errorf("%s = %v, was %v: the server saw the refused tunnelc", c, got, before[c])
		}
	}
	if strings.Contains(live.log.String(), "replaced") {
		t.Errorf("the live session was replaced:\n%s", live.log)
	}
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Errorf("tunnel after the refused tunnelc: %v", err)
	}
}

// TestNetNSTunnelcPrivileges: tunnelc as an unprivileged user fails
// before it connects (nothing reaches the server's port) with a message
// about root or CAP_NET_ADMIN and ExitCannotRun; the same user given
// CAP_NET_ADMIN (as a systemd unit would) gets past the check and dials.
func TestNetNSTunnelcPrivileges(t *testing.T) {
	ns := netnstest.New(t)
	_, tunnelc := binaries(t)
	// The unprivileged user must reach the binary and the files: a
	// directory of their own instead of the tests' (mode 0700).
	dir, err := os.MkdirTemp("", "tlsvpn-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "tunnelc")
	copyFile(t, tunnelc, bin, 0o755)
	ca := certstest.NewCA(t)
	caFile := ca.WriteFiles(t, dir)
	certFile, keyFile := certstest.WriteCert(t, dir, "laptop", ca.ClientCert(t, "laptop"))
	for _, p := range []string{dir, bin, caFile, certFile, keyFile} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln := ns.Listen(t, "tcp", "127.0.0.1:0")
	args := []string{"--server", ln.Addr().String(), "--tun", "tvtnobody0",
		"--cert", certFile, "--key", keyFile, "--ca", caFile, "--log-level", "debug",
		"--control", ""} // nobody may not create a socket in /run/tlsvpn
	nobody := []string{"--reuid", "65534", "--regid", "65534", "--clear-groups"}

	// Changing all uids away from 0 clears the capabilities.
	p := start(t, ns, "setpriv", append(append(nobody, bin), args...)...)
	if code := exitCode(t, p); code != cli.ExitCannotRun {
		t.Errorf("tunnelc as nobody exited %d, want %d (cannot run):\n%s", code, cli.ExitCannotRun, p.log)
	}
	if out := p.log.String(); !strings.Contains(out, "needs root or CAP_NET_ADMIN") || strings.Contains(out, "connecting to the server") {
		t.Errorf("tunnelc as nobody said:\n%s\nwant a message about root or CAP_NET_ADMIN, before connecting", out)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now())
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Error("the server's port got a connection from tunnelc run as nobody")
	}
	if _, err := ns.Handle().LinkByName("tvtnobody0"); err == nil {
		t.Error("tunnelc run as nobody created its interface")
	}

	// With CAP_NET_ADMIN (inheritable and ambient, so it survives exec):
	// past the check, the interface is created and the server dialed.
	capable := append(nobody, "--inh-caps", "+net_admin", "--ambient-caps", "+net_admin", bin)
	p = start(t, ns, "setpriv", append(capable, args...)...)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(15 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("tunnelc as nobody with CAP_NET_ADMIN did not connect: %v\n%s", err, p.log)
	}
	c.Close()
	if _, err := ns.Handle().LinkByName("tvtnobody0"); err != nil {
		t.Errorf("tunnelc as nobody with CAP_NET_ADMIN has no interface: %v", err)
	}
	if err := p.stop(t); err != nil {
		t.Errorf("tunnelc as nobody with CAP_NET_ADMIN: exit %v\n%s", err, p.log)
	}
}

// TestNetNSTunnelcPermanentProblem: tunnelc told to check a name the
// server's certificate does not hold says where it connects, names the
// problem with the names the certificate holds and a hint, and waits the
// slow backoff (about 30s first) instead of 250ms; with --max-attempts 1
// it exits with that explanation, said once.
func TestNetNSTunnelcPermanentProblem(t *testing.T) {
	e := newEnv(t)
	args := []string{"--server", e.serverIPs[0] + ":443", "--server-name", "wrong.example",
		"--cert", e.file("laptop1.crt"), "--key", e.file("laptop1.key"), "--ca", e.file("ca.crt")}
	c := start(t, e.laptops[0], e.tunnelc, append(args, "--log-level", "debug")...)
	var failed string
	eventually(t, "tunnelc to report the name mismatch", func() bool {
		failed = logLine(c.log.String(), "level=ERROR", `msg="connect failed"`)
		return failed != ""
	})
	connecting := logLine(c.log.String(), `msg="connecting to the server" server=`+e.serverIPs[0]+":443")
	if connecting == "" || strings.Index(c.log.String(), connecting) > strings.Index(c.log.String(), failed) {
		t.Errorf("no \"connecting to the server\" line before the failure:\n%s", c.log)
	}
	if got := logAttr(failed, "problem"); got != "server name mismatch" {
		t.Errorf("problem = %q, want server name mismatch: %s", got, failed)
	}
	if r := logAttr(failed, "reason"); !strings.Contains(r, e.serverIPs[0]) || !strings.Contains(r, "not wrong.example") {
		t.Errorf("reason = %q, want the certificate's names and the name checked", r)
	}
	if h := logAttr(failed, "hint"); !strings.Contains(h, "--server-name") {
		t.Errorf("hint = %q, want a pointer to --server-name", h)
	}
	if wait := logDuration(t, failed, "retry_in"); wait < 15*time.Second {
		t.Errorf("retry_in = %v after a name mismatch, want the slow backoff (30s drawn from [15s, 45s])", wait)
	}
	if err := c.stop(t); err != nil {
		t.Errorf("tunnelc exit: %v", err)
	}

	once := start(t, e.laptops[0], e.tunnelc, append(args, "--max-attempts", "1")...)
	if code := exitCode(t, once); code != cli.ExitFailure {
		t.Errorf("tunnelc --max-attempts 1 exited %d, want %d", code, cli.ExitFailure)
	}
	last := strings.TrimSpace(once.log.String())
	last = last[strings.LastIndex(last, "\n")+1:]
	if !strings.HasPrefix(last, "tunnelc: the server's certificate is for ") || !strings.Contains(last, "--server-name") ||
		strings.Contains(last, "x509") || strings.Contains(last, "tls:") {
		t.Errorf("tunnelc --max-attempts 1 ended with %q, want the reason and hint without the TLS error chain", last)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
