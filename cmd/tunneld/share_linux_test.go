package main

// Port sharing end to end: tunneld on port 443 with --share-backend in
// front of a real nginx (Debian's) that speaks TLS with its own
// certificate and takes the PROXY protocol, in the server namespace; curl,
// tunnelc and a flood of web connections from the laptop namespace.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tlsvpn/routing/netnstest"
)

// startNginx runs nginx in ns as the website behind the shared port: TLS
// on 127.0.0.1:8443 with a self-signed certificate for www.share.test
// (returned as certFile), PROXY protocol v2 in front, an access log
// (accessLog) with the address the PROXY header names first. Its
// configuration, pid file, logs and temp files are in dir; it is stopped
// by its PID in t.Cleanup.
func startNginx(t *testing.T, ns *netnstest.NS, dir string) (certFile, accessLog string) {
	t.Helper()
	for _, cmd := range []string{"nginx", "openssl", "curl"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("%s is needed for the port sharing test (scripts/test.sh installs it): %v", cmd, err)
		}
	}
	certFile, keyFile := filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-subj", "/CN=www.share.test", "-addext", "subjectAltName=DNS:www.share.test", "-days", "1",
		"-keyout", keyFile, "-out", certFile).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	accessLog = filepath.Join(dir, "access.log")
	errorLog := filepath.Join(dir, "error.log")
	conf := filepath.Join(dir, "nginx.conf")
	writeTestFile(t, conf, fmt.Sprintf(`daemon off;
user root;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[2]s info;
events { worker_connections 4096; }
http {
	log_format share '$proxy_protocol_addr $remote_addr "$request" $status';
	access_log %[3]s share;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:8443 ssl proxy_protocol;
		server_name www.share.test;
		ssl_certificate %[4]s;
		ssl_certificate_key %[5]s;
		location / { return 200 "hello from nginx\n"; }
	}
}
`, dir, errorLog, accessLog, certFile, keyFile))
	cmd := ns.Cmd(context.Background(), "nginx", "-c", conf, "-p", dir, "-e", errorLog)
	out := new(strings.Builder)
	var mu sync.Mutex
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, out}, lockedWriter{&mu, out}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // the master stops its workers
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("nginx did not exit within 10s of SIGTERM")
		}
		if t.Failed() {
			b, _ := os.ReadFile(errorLog)
			mu.Lock()
			t.Logf("nginx output:\n%s\nerror log:\n%s", out, b)
			mu.Unlock()
		}
	})
	eventually(t, "nginx listening", func() bool {
		c, err := ns.Dial(context.Background(), "tcp", "127.0.0.1:8443")
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return certFile, accessLog
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestNetNSSharedPort(t *testing.T) {
	server, laptop := netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.1/30"), laptop, netip.MustParsePrefix("198.18.0.2/30"))
	dir := t.TempDir()
	webCert, accessLog := startNginx(t, server, dir)

	e := &env{tunneld: tunneld, tunnelc: tunnelc, pki: filepath.Join(dir, "pki"), server: server, serverIPs: [2]string{"198.18.0.1"}}
	e.laptops[0] = laptop
	e.run(t, tunneld, "pki", "init", "--dir", e.pki)
	e.run(t, tunneld, "pki", "issue", "--dir", e.pki, "--server", "--name", "server", "--ip", "198.18.0.1")
	e.run(t, tunneld, "pki", "issue", "--dir", e.pki, "--client", "--name", "laptop1")
	ctl := controlPath(t)
	e.srv = start(t, server, tunneld, "--listen", "0.0.0.0:443",
		"--cert", e.file("server.crt"), "--key", e.file("server.key"), "--ca", e.file("ca.crt"),
		"--subnet", "100.64.0.0/24", "--state-dir", filepath.Join(dir, "state"), "--control", ctl,
		"--share-backend", "127.0.0.1:8443", "--share-proxy-protocol",
		"--metrics", metricsAddr, "--log-level", "debug")
	eventually(t, "tunneld listening", func() bool { return strings.Contains(e.srv.log.String(), "msg=listening") })

	// A browser's view: the website on the VPN's port, verified against
	// nginx's own certificate (curl fails on any other), and nginx sees
	// the laptop's address through the PROXY header.
	page := laptop.Run(t, "curl", "-sS", "--max-time", "10", "--cacert", webCert,
		"--resolve", "www.share.test:443:198.18.0.1", "https://www.share.test/")
	if page != "hello from nginx\n" {
		t.Errorf("curl https://www.share.test/ through the shared port = %q, want nginx's page", page)
	}
	verbose, err := laptop.Cmd(context.Background(), "curl", "-sSv", "-o", "/dev/null", "--max-time", "10", "--cacert", webCert,
		"--resolve", "www.share.test:443:198.18.0.1", "https://www.share.test/").CombinedOutput()
	if err != nil || !strings.Contains(string(verbose), "subject: CN=www.share.test") || !strings.Contains(string(verbose), "issuer: CN=www.share.test") {
		t.Errorf("curl -v: %v, want nginx's certificate (subject and issuer CN=www.share.test):\n%s", err, verbose)
	}
	// Plain HTTP to port 443 gets the web server's answer too.
	plain, _ := laptop.Cmd(context.Background(), "curl", "-sS", "--max-time", "10", "http://198.18.0.1:443/").CombinedOutput()
	if !strings.Contains(string(plain), "The plain HTTP request was sent to HTTPS port") {
		t.Errorf("plain HTTP to the shared port got %q, want nginx's 400 page", plain)
	}
	eventually(t, "nginx's access log", func() bool {
		b, _ := os.ReadFile(accessLog)
		return strings.Count(string(b), "\n") >= 2
	})
	if b, _ := os.ReadFile(accessLog); !strings.HasPrefix(string(b), `198.18.0.2 127.0.0.1 "GET / HTTP/1.1" 200`) {
		t.Errorf("nginx access log:\n%s\nwant the laptop's address (198.18.0.2) from the PROXY header first", b)
	}

	// A flood of web connections held open: TLS handshakes with the
	// website (relayed, and held by nginx) and silent connections (held
	// while their ClientHello is awaited, then relayed).
	const webConns, silentConns = 150, 150
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for i := range webConns + silentConns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := laptop.Dial(ctx, "tcp", "198.18.0.1:443")
		cancel()
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
		if i < webConns {
			tc := tls.Client(c, &tls.Config{ServerName: "www.share.test", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("flood TLS handshake %d: %v", i, err)
			}
			if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "www.share.test" {
				t.Fatalf("flood connection %d reached %q, want the website", i, cn)
			}
			c.SetDeadline(time.Time{})
		}
	}
	if got := e.metric(t, "tunneld_share_relays"); got < webConns {
		t.Errorf("tunneld_share_relays = %v with %d web connections held open", got, webConns)
	}

	// While all of them are open, tunnelc connects on the same port at
	// its first attempt, within its normal handshake timeout, and
	// carries traffic.
	e.connect(t, 0, "laptop1", netip.MustParsePrefix("100.64.0.2/24"), "--max-attempts", "1")
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Errorf("ping through the tunnel during the flood: %v", err)
	}
	for series, want := range map[string]float64{
		`tunneld_share_tunnel_total`:       1,
		`tunneld_sessions_opened_total`:    1,
		`tunneld_handshake_failures_total`: 0,
		`tunneld_share_refused_total`:      0,
		// The data phase runs on the own record layer, which writes to
		// the socket under the shared port's wrapper directly.
		`tunneld_record_handovers_total`: 1,
	} {
		if got := e.metric(t, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := e.metric(t, "tunneld_share_relayed_total"); got < webConns+3 {
		t.Errorf("tunneld_share_relayed_total = %v, want at least %d", got, webConns+3)
	}

	status, err := exec.Command(tunneld, "status", "--control", ctl).CombinedOutput()
	if err != nil || !strings.Contains(string(status), "shared:") || !strings.Contains(string(status), "port with 127.0.0.1:8443: 1 to the tunnel") {
		t.Errorf("tunneld status: %v\n%s\nwant a shared: line with 1 to the tunnel", err, status)
	}
	t.Logf("tunneld status during the flood:\n%s", status)
}
