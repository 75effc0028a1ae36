package tunnel_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// TestFIPSModeKeepsRecordsOnStdlib runs a client and a server in a child
// process with GODEBUG=fips140=on and =only: the data phase must stay on crypto/tls
// (whose AES-GCM is the FIPS module's) on both sides, and the tunnel must
// work.
func TestFIPSModeKeepsRecordsOnStdlib(t *testing.T) {
	if os.Getenv("TLSVPN_FIPS_CHILD") == "1" {
		if tunnel.OwnRecordLayer() == nil {
			t.Fatal("FIPS 140 mode is not on in the child")
		}
		srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
		cl := srv.StartClient(t, "laptop")
		me := cl.Config.Addr.Addr()
		up := tunneltest.UDP4(me, serverAddr, []byte("up"))
		cl.Dev.Inbound <- up
		tunneltest.Expect(t, srv.Dev.Outbound, up)
		down := tunneltest.UDP4(serverAddr, me, []byte("down"))
		srv.Dev.Inbound <- down
		tunneltest.Expect(t, cl.Dev.Outbound, down)
		if s, c := srv.Stats.RecordHandOvers.Load(), cl.Stats.RecordHandOvers.Load(); s != 0 || c != 0 {
			t.Fatalf("record hand-overs in FIPS mode: server %d, client %d; want none", s, c)
		}
		return
	}
	for _, mode := range []string{"on", "only"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSModeKeepsRecordsOnStdlib$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "GODEBUG=fips140="+mode, "TLSVPN_FIPS_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFIPSModeKeepsRecordsOnStdlib") {
			t.Fatalf("child with GODEBUG=fips140=%s: %v\n%s", mode, err, out)
		}
	}
}

// TestFIPSModeServerGroups: a server in FIPS 140 mode (GODEBUG=fips140=on)
// accepts only the FIPS-approved key exchange groups of its preferences,
// which leaves X25519MLKEM768: a client that offers only X25519 (like
// OpenSSL 3.0, which has no ML-KEM) is refused with handshake_failure,
// and one that offers X25519MLKEM768 gets it, with an AES-GCM suite. The
// server runs in a child process; the clients, in this one, are not in
// FIPS mode (which would filter their own offer instead).
func TestFIPSModeServerGroups(t *testing.T) {
	if os.Getenv("TLSVPN_FIPS_SERVER_CHILD") == "1" {
		if tunnel.OwnRecordLayer() == nil {
			t.Fatal("FIPS 140 mode is not on in the child")
		}
		srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
		dir := t.TempDir()
		ca := srv.CA.WriteFiles(t, dir)
		cert, key := certstest.WriteCert(t, dir, "client", srv.CA.ClientCert(t, "laptop"))
		fmt.Printf("FIPS_SERVER %s %s %s %s\n", srv.Listener.Addr(), ca, cert, key)
		io.Copy(io.Discard, os.Stdin) // serve until the parent is done
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSModeServerGroups$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODEBUG=fips140=on", "TLSVPN_FIPS_SERVER_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr tunneltest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := new(strings.Builder)
	done := make(chan error, 1)
	defer func() {
		stdin.Close()
		if err := <-done; err != nil || !strings.Contains(out.String(), "--- PASS: TestFIPSModeServerGroups") {
			t.Errorf("child with GODEBUG=fips140=on: %v\n%s%s", err, out, stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	var f []string
	for lines.Scan() {
		out.WriteString(lines.Text() + "\n")
		if f = strings.Fields(lines.Text()); len(f) == 5 && f[0] == "FIPS_SERVER" {
			break
		}
		f = nil
	}
	go func() {
		for lines.Scan() {
			out.WriteString(lines.Text() + "\n")
		}
		done <- cmd.Wait()
	}()
	if f == nil {
		t.Error("the child did not start its server")
		return
	}
	addr, caFile, certFile, keyFile := f[1], f[2], f[3], f[4]
	base, err := certs.ClientConfig(certFile, keyFile, caFile, "server")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		group tls.CurveID
		ok    bool
	}{
		{"X25519 only", tls.X25519, false},
		{"X25519MLKEM768", tls.X25519MLKEM768, true},
	} {
		cfg := base.Clone()
		cfg.NextProtos = []string{tunnel.ALPN}
		cfg.CurvePreferences = []tls.CurveID{tc.group}
		conn, err := tls.Dial("tcp", addr, cfg)
		if !tc.ok {
			if err == nil || !strings.Contains(err.Error(), "handshake failure") {
				t.Errorf("%s: a FIPS-mode server accepted the handshake (%v); want a handshake_failure alert", tc.name, err)
			}
			if conn != nil {
				conn.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: the FIPS-mode server refused the handshake: %v", tc.name, err)
			continue
		}
		cs := conn.ConnectionState()
		if cs.CurveID != tc.group || cs.CipherSuite == tls.TLS_CHACHA20_POLY1305_SHA256 {
			t.Errorf("%s: negotiated %v with %s; want %v with an AES-GCM suite", tc.name, cs.CurveID, tls.CipherSuiteName(cs.CipherSuite), tc.group)
		}
		conn.Close()
	}
}
