package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
)

// ctlResult is what a control command printed and how it exited.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// ctl runs a control command of the real binary (outside any namespace:
// the socket is a file).
func ctl(t *testing.T, bin string, args ...string) ctlResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := ctlResult{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return r
}

// ctlJSON runs a control command with --json, wants exit status 0 and
// decodes its output into v.
func ctlJSON(t *testing.T, bin string, v any, args ...string) {
	t.Helper()
	r := ctl(t, bin, append(args, "--json")...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\n%s%s", filepath.Base(bin), strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("%s %s --json: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, r.stdout)
	}
}

// TestNetNSControlSocket drives a running tunneld and tunnelc through
// their control sockets the way an operator does: status, clients,
// reload (good and broken file), kick, and a second instance that must
// not start.
func TestNetNSControlSocket(t *testing.T) {
	tunneld, tunnelc := binaries(t)
	server, laptop := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.1/30"), laptop, netip.MustParsePrefix("198.18.0.2/30"))
	pki := filepath.Join(t.TempDir(), "pki")
	e := &env{pki: pki}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.0.1")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	clients := filepath.Join(t.TempDir(), "clients.yaml")
	if err := os.WriteFile(clients, []byte("laptop:\n  routes: [198.18.30.0/24]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srvCtl, cliCtl := controlPath(t), controlPath(t)
	srvArgs := []string{"--listen", "198.18.0.1:443", "--cert", e.file("server.crt"), "--key", e.file("server.key"),
		"--ca", e.file("ca.crt"), "--crl", e.file("crl.pem"), "--subnet", "100.64.0.0/24", "--clients", clients,
		"--keepalive", "2s", "--state-dir", "", "--control", srvCtl}
	srv := start(t, server, tunneld, srvArgs...)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	cli := start(t, laptop, tunnelc, "--server", "198.18.0.1:443", "--cert", e.file("laptop.crt"), "--key", e.file("laptop.key"),
		"--ca", e.file("ca.crt"), "--control", cliCtl)
	addr := netip.MustParsePrefix("100.64.0.2/24")
	eventually(t, "laptop to get its address", func() bool { return hasAddr(laptop, "tunnelc0", addr) })
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Fatal(err)
	}

	t.Run("socket is 0660", func(t *testing.T) {
		for _, p := range []string{srvCtl, cliCtl} {
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
				t.Errorf("%s: mode %v, want a socket with 0660", p, fi.Mode())
			}
		}
	})

	t.Run("tunneld clients lists the laptop with its address and traffic", func(t *testing.T) {
		var list []control.Session
		ctlJSON(t, tunneld, &list, "clients", "--control", srvCtl)
		if len(list) != 1 || list[0].Identity != "laptop" {
			t.Fatalf("clients = %+v, want just laptop", list)
		}
		s := list[0]
		if !slices.Contains(s.Addresses, addr.Addr()) || s.BytesIn == 0 || s.BytesOut == 0 ||
			!strings.HasPrefix(s.Underlay, "198.18.0.2:") || s.Since.IsZero() || s.RTTMillis <= 0 {
			t.Errorf("laptop = %+v, want address %v, bytes both ways after a ping, underlay 198.18.0.2 and an RTT", s, addr.Addr())
		}
		table := ctl(t, tunneld, "clients", "--control", srvCtl)
		t.Logf("tunneld clients:\n%s", table.stdout)
		if table.code != 0 || !strings.Contains(table.stdout, "IDENTITY") || !strings.Contains(table.stdout, "laptop") {
			t.Errorf("tunneld clients: exit %d\n%s%s", table.code, table.stdout, table.stderr)
		}
	})

	t.Run("tunneld status", func(t *testing.T) {
		var st control.ServerStatus
		ctlJSON(t, tunneld, &st, "status", "--control", srvCtl)
		if st.Sessions != 1 || st.PeakSessions < 1 || st.Listen != "198.18.0.1:443" || st.TUN != "tunneld0" ||
			st.Handshakes.Full < 1 || st.BytesIn == 0 || st.CRL == nil || st.CRL.Expires.IsZero() || st.Certificate.Expires.IsZero() {
			t.Errorf("status = %+v", st)
		}
		human := ctl(t, tunneld, "status", "--control", srvCtl)
		t.Logf("tunneld status:\n%s", human.stdout)
		if human.code != 0 || !strings.Contains(human.stdout, "sessions:") || !strings.Contains(human.stdout, "1 now") {
			t.Errorf("tunneld status: exit %d\n%s%s", human.code, human.stdout, human.stderr)
		}
	})

	clientStatus := func(t *testing.T) control.ClientStatus {
		t.Helper()
		var st control.ClientStatus
		ctlJSON(t, tunnelc, &st, "status", "--control", cliCtl)
		return st
	}
	t.Run("tunnelc status", func(t *testing.T) {
		st := clientStatus(t)
		if st.State != "up" || !slices.Contains(st.Addresses, addr) || !slices.Contains(st.Routes, netip.MustParsePrefix("198.18.30.0/24")) ||
			st.Server != "198.18.0.1:443" || st.BytesOut == 0 || st.LastHandshake.IsZero() || st.RTTMillis <= 0 {
			t.Errorf("tunnelc status = %+v, want up with %v and route 198.18.30.0/24", st, addr)
		}
		human := ctl(t, tunnelc, "status", "--control", cliCtl)
		t.Logf("tunnelc status:\n%s", human.stdout)
		if human.code != 0 || !strings.Contains(human.stdout, "state:") || !strings.Contains(human.stdout, "up for") {
			t.Errorf("tunnelc status: exit %d\n%s%s", human.code, human.stdout, human.stderr)
		}
	})

	t.Run("reload applies an edited clients file", func(t *testing.T) {
		before := clientStatus(t).Reconnects
		if err := os.WriteFile(clients, []byte("laptop:\n  routes: [198.18.31.0/24]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := ctl(t, tunneld, "reload", "--control", srvCtl)
		if r.code != 0 || !strings.Contains(r.stdout, "client policies reloaded") || !strings.Contains(r.stdout, "1 sessions reconnected") {
			t.Fatalf("tunneld reload: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		eventually(t, "the laptop to reconnect with the new route", func() bool {
			st := clientStatus(t)
			return st.State == "up" && st.Reconnects > before && slices.Contains(st.Routes, netip.MustParsePrefix("198.18.31.0/24"))
		})
	})

	t.Run("reload with a broken file fails and keeps the session", func(t *testing.T) {
		before := clientStatus(t).Reconnects
		if err := os.WriteFile(clients, []byte("laptop:\n  routes: [198.18.31.0/24\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := ctl(t, tunneld, "reload", "--control", srvCtl)
		t.Logf("tunneld reload of a broken file:\n%s", r.stderr)
		if r.code != 1 || !strings.Contains(r.stderr, "reload refused") || !strings.Contains(r.stderr, clients+": line ") {
			t.Fatalf("tunneld reload of a broken file: exit %d (want 1)\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if err := ping(t, laptop, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		if st := clientStatus(t); st.State != "up" || st.Reconnects != before {
			t.Errorf("after a failed reload, tunnelc status = %+v, want still up with %d reconnects", st, before)
		}
	})

	t.Run("kick makes the client reconnect", func(t *testing.T) {
		before := clientStatus(t).Reconnects
		r := ctl(t, tunneld, "kick", "laptop", "--control", srvCtl)
		if r.code != 0 || !strings.Contains(r.stdout, "closed the session of laptop") {
			t.Fatalf("tunneld kick laptop: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		eventually(t, "tunnelc to log the kick", func() bool { return strings.Contains(cli.log.String(), "kicked") })
		for _, l := range strings.Split(cli.log.String(), "\n") {
			if strings.Contains(l, "kicked") {
				t.Logf("tunnelc: %s", l)
			}
		}
		eventually(t, "tunnelc to reconnect", func() bool {
			st := clientStatus(t)
			return st.State == "up" && st.Reconnects > before
		})
		if err := ping(t, laptop, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		r = ctl(t, tunneld, "kick", "nobody", "--control", srvCtl)
		if r.code != 1 || !strings.Contains(r.stderr, `no session of client "nobody"`) {
			t.Errorf("tunneld kick nobody: exit %d (want 1)\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("exit codes: usage 2, unreachable 3", func(t *testing.T) {
		r := ctl(t, tunneld, "kick", "--control", srvCtl)
		if r.code != 2 {
			t.Errorf("tunneld kick without NAME: exit %d, want 2\n%s", r.code, r.stderr)
		}
		missing := filepath.Join(filepath.Dir(srvCtl), "missing.sock")
		r = ctl(t, tunneld, "status", "--control", missing)
		t.Logf("tunneld status on a missing socket:\n%s", r.stderr)
		if r.code != 3 || !strings.Contains(r.stderr, missing) || !strings.Contains(r.stderr, "--tun") {
			t.Errorf("tunneld status on a missing socket: exit %d, want 3 naming the socket and --tun\n%s", r.code, r.stderr)
		}
	})

	t.Run("a second tunneld with the same control socket refuses to start", func(t *testing.T) {
		other := netnstest.New(t) // nothing else is in its way there
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := other.Cmd(ctx, tunneld, srvArgs...).CombinedOutput()
		var ee *exec.ExitError
		t.Logf("second tunneld:\n%s", out)
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "another instance is running") {
			t.Fatalf("second tunneld: %v, want exit 1 with \"another instance is running\"\n%s", err, out)
		}
		if _, err := other.Handle().LinkByName("tunneld0"); err == nil {
			t.Error("the refused tunneld created its TUN device anyway")
		}
		var st control.ServerStatus
		ctlJSON(t, tunneld, &st, "status", "--control", srvCtl)
		if st.Sessions != 1 {
			t.Errorf("first tunneld after the second's refusal: %d sessions, want 1", st.Sessions)
		}
	})

	t.Run("the socket file goes away on exit", func(t *testing.T) {
		if err := cli.stop(t); err != nil {
			t.Fatalf("tunnelc exit: %v", err)
		}
		if err := srv.stop(t); err != nil {
			t.Fatalf("tunneld exit: %v", err)
		}
		for _, p := range []string{srvCtl, cliCtl} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind after exit (%v)", p, err)
			}
		}
	})
}
