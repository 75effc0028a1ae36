package main

// The systemd units (dist/systemd) run as systemd would run them, without
// systemd (PID 1 here need not be it): each Exec line of the unit, with
// the unit's user, group, capabilities and no-new-privileges applied by
// setpriv, /proc/sys read-only except the unit's ReadWritePaths, and a
// NOTIFY_SOCKET the test reads as systemd does. A tunneld and a tunnelc
// so started must bring a tunnel up, say READY=1, answer the control
// commands at their default sockets, reload and stop.
//
// Each machine of a test is a host: a network namespace, and its own
// /etc/tlsvpn, /var/lib/tlsvpn, /run/tlsvpn and /etc/hosts, bind-mounted
// from a temporary directory in a private mount namespace around every
// command. Commands and files therefore use the paths an operator types,
// and nothing is written to this machine's real ones.
//
// By default the test uses the units of this tree and freshly built
// binaries; with TLSVPN_INSTALLED=1 (scripts/test.sh's package step, after
// dpkg -i) it uses /lib/systemd/system and /usr/bin.

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tlsvpn/routing/netnstest"
	"tlsvpn/tunnel/tunneltest"
)

// unit is the [Service] section of a unit file, values in order.
type unit struct {
	name     string // the file's name: tunnelc@.service
	instance string // what %i stands for
	keys     map[string][]string
}

func readUnit(t *testing.T, path, instance string) *unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := &unit{name: filepath.Base(path), instance: instance, keys: map[string][]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		if section == "[Service]" {
			u.keys[k] = append(u.keys[k], strings.ReplaceAll(v, "%i", instance))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of key.
func (u *unit) one(t *testing.T, key string) string {
	t.Helper()
	if v := u.keys[key]; len(v) == 1 {
		return v[0]
	}
	t.Fatalf("%s: want exactly one %s=, have %q", u.name, key, u.keys[key])
	return ""
}

// words splits the space-separated values of key.
func (u *unit) words(key string) []string {
	var w []string
	for _, v := range u.keys[key] {
		w = append(w, strings.Fields(v)...)
	}
	return w
}

// host is one machine of a test: a network namespace, and the tlsvpn
// directories of its own (see the file comment).
type host struct {
	ns    *netnstest.NS
	root  string      // stands in for /: etc/tlsvpn, var/lib/tlsvpn, run/tlsvpn, etc/hosts
	binds [][2]string // what is mounted where: {source, target}
}

// hostDirs are the directories a host has of its own.
var hostDirs = []string{"/etc/tlsvpn", "/var/lib/tlsvpn", "/run/tlsvpn"}

// newHost makes a host on ns: /etc/tlsvpn with client/ and server/ (0750
// root:gid, as the package makes them, and a copy of the package's files
// when it is installed), the units' StateDirectory and RuntimeDirectory
// (0750 uid:gid, as systemd makes them), and an /etc/hosts with hosts.
// A mount point missing on this machine is made, and removed at the end.
func newHost(t *testing.T, ns *netnstest.NS, uid, gid int, hosts string) *host {
	t.Helper()
	root, err := os.MkdirTemp("", "tlsvpn-host-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	h := &host{ns: ns, root: root}
	mkdir := func(rel string, mode os.FileMode, owner, group int) {
		dir := filepath.Join(root, rel)
		if err := os.MkdirAll(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, owner, group); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"etc", "run", "var", "var/lib"} {
		mkdir(d, 0o755, 0, 0)
	}
	if os.Getenv("TLSVPN_INSTALLED") == "1" {
		// The package's example files, with their owners and modes.
		if out, err := exec.Command("cp", "-a", "/etc/tlsvpn", filepath.Join(root, "etc")).CombinedOutput(); err != nil {
			t.Fatalf("copying the installed /etc/tlsvpn: %v\n%s", err, out)
		}
	}
	for _, d := range []string{"etc/tlsvpn", "etc/tlsvpn/client", "etc/tlsvpn/server"} {
		mkdir(d, 0o750, 0, gid)
	}
	mkdir("var/lib/tlsvpn", 0o750, uid, gid)
	mkdir("run/tlsvpn", 0o750, uid, gid)
	for _, d := range hostDirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(d) })
		}
		h.binds = append(h.binds, [2]string{filepath.Join(root, d), d})
	}
	hostsFile := filepath.Join(root, "etc", "hosts")
	if err := os.WriteFile(hostsFile, []byte("127.0.0.1 localhost\n::1 localhost\n"+hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	h.binds = append(h.binds, [2]string{hostsFile, "/etc/hosts"})
	return h
}

// path is where the host's file p (/etc/tlsvpn/...) is on this machine.
func (h *host) path(p string) string { return filepath.Join(h.root, p) }

// wrap returns the command that runs args on the host, in its namespace
// with its directories mounted; script runs first (a shell fragment that
// ends in " && " or is empty).
func (h *host) wrap(script string, args ...string) (string, []string) {
	mounts := ""
	for _, b := range h.binds {
		mounts += "mount --bind " + b[0] + " " + b[1] + " && "
	}
	return "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-ec", mounts + script + `exec "$@"`, "sh"}, args...)
}

// cmd returns the command args on the host, as root.
func (h *host) cmd(ctx context.Context, args ...string) *exec.Cmd {
	name, a := h.wrap("", args...)
	return h.ns.Cmd(ctx, name, a...)
}

// run runs args on the host as root to completion and returns its
// combined output, failing the test if it fails.
func (h *host) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := h.cmd(t.Context(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("on %s: %s: %v\n%s", h.ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sandbox is what the test needs to run a unit's commands as systemd would.
type sandbox struct {
	u        *unit
	h        *host
	bins     map[string]string // /usr/bin/NAME -> the binary to run
	uid, gid int
	named    bool // the unit's User= exists on this host
}

// command maps one of the unit's Exec lines to this test's binaries and
// prefixes what applies the unit's credentials and /proc/sys protection.
func (s *sandbox) command(t *testing.T, line string) (string, []string) {
	t.Helper()
	args := strings.Fields(line)
	if len(args) == 0 || strings.ContainsAny(args[0][:1], "-+!@:|") {
		t.Fatalf("%s: Exec line %q: the test does not emulate prefixes", s.u.name, line)
	}
	if b, ok := s.bins[args[0]]; ok {
		args[0] = b
	}
	caps := func(set []string) string {
		out := "-all"
		for _, c := range set {
			out += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
		return out
	}
	ambient := caps(s.u.words("AmbientCapabilities"))
	priv := []string{"setpriv",
		"--reuid=" + strconv.Itoa(s.uid), "--regid=" + strconv.Itoa(s.gid),
		"--inh-caps=" + ambient, "--ambient-caps=" + ambient,
		"--bounding-set=" + caps(s.u.words("CapabilityBoundingSet"))}
	if s.named {
		priv = append(priv, "--init-groups")
	} else {
		priv = append(priv, "--clear-groups")
	}
	if s.u.one(t, "NoNewPrivileges") == "yes" {
		priv = append(priv, "--no-new-privs")
	}
	// ProtectKernelTunables=yes: /proc/sys read-only but for the files
	// in ReadWritePaths= (a leading '-': may be missing).
	script := ""
	if s.u.one(t, "ProtectKernelTunables") == "yes" {
		script = "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
		for _, p := range s.u.words("ReadWritePaths") {
			p = strings.TrimPrefix(p, "-")
			if strings.HasPrefix(p, "/proc/sys/") {
				script += "{ [ ! -e " + p + " ] || { mount --bind " + p + " " + p + " && mount -o remount,bind,rw " + p + "; }; } && "
			}
		}
	}
	return s.h.wrap(script, append(priv, append([]string{"--"}, args...)...)...)
}

// run runs an Exec line to completion, as the unit's user.
func (s *sandbox) run(t *testing.T, key string) string {
	t.Helper()
	name, args := s.command(t, s.u.one(t, key))
	out, err := s.h.ns.Cmd(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s=%s: %v\n%s", s.u.name, key, s.u.one(t, key), err, out)
	}
	return string(out)
}

// start starts ExecStart with NOTIFY_SOCKET set; it is stopped in t.Cleanup.
func (s *sandbox) start(t *testing.T, notifySocket string) *proc {
	t.Helper()
	name, args := s.command(t, s.u.one(t, "ExecStart"))
	p := &proc{log: new(tunneltest.SyncBuffer), done: make(chan struct{})}
	p.cmd = s.h.ns.Cmd(context.Background(), name, args...)
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifySocket)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("log of %s:\n%s", s.u.name, p.log)
		}
	})
	return p
}

// service is a unit started the way systemctl start would: ExecStartPre,
// then ExecStart until it says READY=1.
type service struct {
	sb     *sandbox
	p      *proc
	notify *notifySocket
}

func startService(t *testing.T, sb *sandbox) *service {
	t.Helper()
	sb.run(t, "ExecStartPre")
	n := listenNotify(t, sb.h.root, strings.TrimSuffix(sb.u.name, ".service")+sb.u.instance, sb.uid, sb.gid)
	sv := &service{sb: sb, p: sb.start(t, n.path), notify: n}
	sv.notify.want(t, "READY=1", sv.p)
	return sv
}

// reload is systemctl reload: ExecReload as the unit's user, bracketed
// by RELOADING=1 and READY=1. It returns what ExecReload printed.
func (sv *service) reload(t *testing.T) string {
	t.Helper()
	out := sv.sb.run(t, "ExecReload")
	sv.notify.want(t, "RELOADING=1", sv.p)
	sv.notify.want(t, "READY=1", sv.p)
	return out
}

// stop is systemctl stop: SIGTERM, STOPPING=1, a clean exit, ExecStopPost.
func (sv *service) stop(t *testing.T) {
	t.Helper()
	if err := sv.p.stop(t); err != nil {
		t.Errorf("%s: exit after SIGTERM: %v", sv.sb.u.name, err)
	}
	sv.notify.want(t, "STOPPING=1", sv.p)
	sv.sb.run(t, "ExecStopPost")
}

// notifySocket listens where a unit's NOTIFY_SOCKET points.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T, dir, name string, uid, gid int) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify-"+name)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	return &notifySocket{path: path, conn: c}
}

// want waits for the next message and checks that it starts with state.
// It gives up at once when p has exited.
func (n *notifySocket) want(t *testing.T, state string, p *proc) {
	t.Helper()
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(30 * time.Second); ; {
		n.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		k, err := n.conn.Read(buf)
		if err == nil {
			if msg := string(buf[:k]); !strings.HasPrefix(msg, state+"\n") && msg != state {
				t.Fatalf("NOTIFY_SOCKET: got %q, want %s first", msg, state)
			}
			return
		}
		exited := false
		select {
		case <-p.done:
			exited = state != "STOPPING=1" // sent before the exit, so already queued
		default:
		}
		if exited || time.Now().After(deadline) {
			t.Fatalf("no %s on NOTIFY_SOCKET (%v; exited: %v)\nlog:\n%s", state, err, exited, p.log)
		}
	}
}

func TestNetNSUnitSandbox(t *testing.T) {
	server, laptop := netnstest.New(t), netnstest.New(t)
	unitDir, bins := filepath.Join("..", "..", "dist", "systemd"), map[string]string{}
	installed := os.Getenv("TLSVPN_INSTALLED") == "1"
	if installed {
		unitDir = "/lib/systemd/system"
		bins["/usr/bin/tunneld"], bins["/usr/bin/tunnelc"] = "/usr/bin/tunneld", "/usr/bin/tunnelc"
	} else {
		bins["/usr/bin/tunneld"], bins["/usr/bin/tunnelc"] = binaries(t)
		// The unit's user must be able to run them.
		if err := os.Chmod(filepath.Dir(bins["/usr/bin/tunneld"]), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srvUnit := readUnit(t, filepath.Join(unitDir, "tunneld.service"), "")
	cliUnit := readUnit(t, filepath.Join(unitDir, "tunnelc@.service"), "work")
	for _, u := range []*unit{srvUnit, cliUnit} {
		if got := u.one(t, "Type"); got != "notify" {
			t.Errorf("%s: Type=%s, want notify", u.name, got)
		}
	}

	// The unit's user, or (not installed) a uid no file belongs to.
	uid, gid, named := 64999, 64999, false
	if usr, err := user.Lookup(srvUnit.one(t, "User")); err == nil {
		uid, _ = strconv.Atoi(usr.Uid)
		gid, _ = strconv.Atoi(usr.Gid)
		named = true
	} else if installed {
		t.Fatalf("the package did not create the unit's user: %v", err)
	}

	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.2.1/30"), laptop, netip.MustParsePrefix("198.18.2.2/30"))
	srvHost, cliHost := newHost(t, server, uid, gid, ""), newHost(t, laptop, uid, gid, "")

	// Keys owned by the unit's user, mode 0600, as the README tells operators.
	tunneld := bins["/usr/bin/tunneld"]
	pki := srvHost.path("/etc/tlsvpn/pki")
	for _, args := range [][]string{
		{"pki", "init", "--dir", pki},
		{"pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.2.1"},
		{"pki", "issue", "--dir", pki, "--client", "--name", "laptop"},
	} {
		if out, err := exec.Command(tunneld, args...).CombinedOutput(); err != nil {
			t.Fatalf("tunneld %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	os.Chown(pki, 0, gid)
	os.Chmod(pki, 0o750)
	for _, f := range []string{"server.key", "laptop.key"} {
		if err := os.Chown(filepath.Join(pki, f), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"ca.crt", "laptop.crt", "laptop.key"} {
		if out, err := exec.Command("cp", "-a", filepath.Join(pki, f), cliHost.path("/etc/tlsvpn/client")).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v\n%s", f, err, out)
		}
	}
	writeFile := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		os.Chown(path, 0, gid)
	}
	// --route turns forwarding on: the one /proc/sys write the unit allows.
	writeFile(srvHost.path("/etc/tlsvpn/tunneld.yaml"), "listen: 198.18.2.1:443\n"+
		"cert: /etc/tlsvpn/pki/server.crt\nkey: /etc/tlsvpn/pki/server.key\nca: /etc/tlsvpn/pki/ca.crt\ncrl: /etc/tlsvpn/pki/crl.pem\n"+
		"subnet: 100.64.2.0/24\nroute:\n  - 198.18.10.0/24\nlog-level: debug\n")
	writeFile(cliHost.path("/etc/tlsvpn/client/work.yaml"), "server: 198.18.2.1:443\n"+
		"cert: /etc/tlsvpn/client/laptop.crt\nkey: /etc/tlsvpn/client/laptop.key\nca: /etc/tlsvpn/client/ca.crt\n"+
		"log-level: debug\n")

	srv := &sandbox{u: srvUnit, h: srvHost, bins: bins, uid: uid, gid: gid, named: named}
	cli := &sandbox{u: cliUnit, h: cliHost, bins: bins, uid: uid, gid: gid, named: named}

	d := startService(t, srv)
	if !strings.Contains(d.p.log.String(), "forwarding between the tunnel and other networks") {
		t.Errorf("tunneld did not turn forwarding on (the unit's /proc/sys write)")
	}
	c := startService(t, cli)
	// READY=1 means the tunnel is up: no waiting for routes.
	if err := ping(t, laptop, "100.64.2.1"); err != nil {
		t.Fatalf("through the tunnel of the units: %v", err)
	}

	// The operator's commands find each instance at its default socket
	// (in the RuntimeDirectory), or through its config file.
	if out := srvHost.run(t, tunneld, "clients"); !strings.Contains(out, "laptop") {
		t.Errorf("tunneld clients at the unit's socket:\n%s", out)
	}
	if out := cliHost.run(t, bins["/usr/bin/tunnelc"], "status", "--profile", "work"); !strings.Contains(out, "100.64.2.") {
		t.Errorf("tunnelc status --profile work at the unit's socket:\n%s", out)
	}
	if _, err := os.Stat(srvHost.path("/var/lib/tlsvpn/tunneld0/leases.json")); err != nil {
		t.Errorf("the lease is not in the unit's StateDirectory: %v", err)
	}

	if out := d.reload(t); !strings.Contains(out, "reloaded") {
		t.Errorf("ExecReload printed %q, want the reload's report", out)
	}
	c.stop(t)
	d.stop(t)
	if fwd := strings.TrimSpace(server.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "0" {
		t.Errorf("ip_forward after stop = %s, want 0 again", fwd)
	}
	for _, x := range []struct {
		ns     *netnstest.NS
		ifname string
	}{{server, "tunneld0"}, {laptop, "tunnelc0"}} {
		if _, err := x.ns.Handle().LinkByName(x.ifname); err == nil {
			t.Errorf("%s still exists after the unit stopped", x.ifname)
		}
	}
}
