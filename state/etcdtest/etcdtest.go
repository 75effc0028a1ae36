// Package etcdtest starts real etcd servers (the etcd binary, Debian's
// etcd-server package) for tests: one member or a cluster, on loopback
// ports, with data directories in the test's temporary directory, killed
// by PID when the test ends. Tests skip when the binary is missing (CI
// installs it).
package etcdtest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options shape a cluster; the zero value is one or more members on
// 127.0.0.1 of this network namespace, on free ports.
type Options struct {
	// Cmd makes the command that runs a member, e.g. in a network
	// namespace (netnstest.NS.Cmd); nil: exec.CommandContext.
	Cmd func(ctx context.Context, name string, args ...string) *exec.Cmd
	// Dial dials a member's client URL to see that it is up, from where
	// Cmd runs it; nil: net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Host is the address members listen on and advertise; "":
	// 127.0.0.1.
	Host string
	// ListenHost, if set, is where members accept clients instead of
	// Host (e.g. 0.0.0.0, for clients in other namespaces behind veths).
	ListenHost string
	// Ports are the members' client and peer ports, two per member
	// (client, peer); nil: free ports of this namespace. A fresh
	// namespace has every port free, so fixed ones do there.
	Ports []int
}

// Cluster is a running etcd cluster.
type Cluster struct {
	Members []*Member
	opts    Options
	token   string
	initial string // --initial-cluster
}

// Member is one etcd server of a Cluster.
type Member struct {
	Name      string
	ClientURL string // http://HOST:PORT
	listenURL string
	peerURL   string
	dataDir   string
	logFile   string
	c         *Cluster

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Binary returns the etcd binary's path, skipping the test without it.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (Debian package etcd-server); CI installs it")
	}
	return p
}

// Start starts a cluster of n members and waits until each answers its
// health endpoint. Everything is stopped when the test ends.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	Binary(t)
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	ports := opts.Ports
	if ports == nil {
		ports = freePorts(t, 2*n)
	}
	if len(ports) < 2*n {
		t.Fatalf("etcdtest: %d ports for %d members", len(ports), n)
	}
	c := &Cluster{opts: opts, token: fmt.Sprintf("tlsvpn-test-%d", time.Now().UnixNano())}
	dir := t.TempDir()
	var initial []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://%s:%d", opts.Host, ports[2*i]),
			listenURL: fmt.Sprintf("http://%s:%d", cmp.Or(opts.ListenHost, opts.Host), ports[2*i]),
			peerURL:   fmt.Sprintf("http://%s:%d", opts.Host, ports[2*i+1]),
			dataDir:   filepath.Join(dir, fmt.Sprintf("m%d", i)),
			logFile:   filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
			c:         c,
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.peerURL)
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
		if t.Failed() {
			for _, m := range c.Members {
				b, _ := os.ReadFile(m.logFile)
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("etcd member %s log (tail):\n%s", m.Name, b)
			}
		}
	})
	for _, m := range c.Members {
		m.start(t)
	}
	for _, m := range c.Members {
		m.waitHealthy(t)
	}
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Stop stops every member (SIGKILL), as a total outage.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		m.Kill()
	}
}

// Restart starts every stopped member again with its data and waits
// until they are healthy.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	for _, m := range c.Members {
		m.Restart(t)
	}
	for _, m := range c.Members {
		m.waitHealthy(t)
	}
}

// start runs the member; its data directory decides whether it joins
// anew or comes back.
func (m *Member) start(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	state := "new"
	if _, err := os.Stat(m.dataDir); err == nil {
		state = "existing"
	}
	args := []string{
		"--name", m.Name, "--data-dir", m.dataDir,
		"--listen-client-urls", m.listenURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", m.c.initial, "--initial-cluster-state", state,
		"--initial-cluster-token", m.c.token,
		// Fast elections: a test kills members and waits for the rest.
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-outputs", "stderr",
	}
	mk := m.c.opts.Cmd
	if mk == nil {
		mk = exec.CommandContext
	}
	cmd := mk(context.Background(), Binary(t), args...)
	log, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	log.Close()
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	m.cmd, m.done = cmd, done
}

// Kill stops the member at once (SIGKILL) and waits for it to exit; its
// data stays for Restart.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts a killed member again with its data.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	m.start(t)
}

// waitHealthy waits (at most 20s) until the member answers /health
// with a leader.
func (m *Member) waitHealthy(t testing.TB) {
	t.Helper()
	dial := m.c.opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr := &http.Transport{DialContext: dial}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(m.ClientURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return
			}
			err = fmt.Errorf("%s", b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd member %s not healthy within 20s: %v", m.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 now.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
