package main

// The systemd units (dist/systemd) run as systemd would run them, without
// systemd (PID 1 here need not be it): each Exec line of the unit, with
// the unit's user, group, capabilities and no-new-privileges applied by
// setpriv, /proc/sys read-only except the unit's ReadWritePaths, and a
// NOTIFY_SOCKET the test reads as systemd does. A tunneld and a tunnelc
// so started must bring a tunnel up, say READY=1, answer the control
// commands at the units' sockets, reload and stop.
//
// By default the test uses the units of this tree and freshly built
// binaries; with TLSVPN_INSTALLED=1 (scripts/test.sh's package step, after
// dpkg -i) it uses /lib/systemd/system and /usr/bin.

import (
	"bufio"
	"context"
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
	name string
	keys map[string][]string
}

func readUnit(t *testing.T, path, instance string) *unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := &unit{name: filepath.Base(path), keys: map[string][]string{}}
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

// sandbox is what the test needs to run a unit's commands as systemd would.
type sandbox struct {
	u        *unit
	root     string            // stands in for /: etc/tlsvpn, run/tlsvpn, var/lib/tlsvpn
	bins     map[string]string // /usr/bin/NAME -> the binary to run
	uid, gid int
	named    bool // the unit's User= exists on this host
}

// command maps one of the unit's Exec lines to this test's files and
// prefixes what applies the unit's credentials and /proc/sys protection.
// $MAINPID is main's PID, as systemd sets it for ExecReload.
func (s *sandbox) command(t *testing.T, line string, main *proc) []string {
	t.Helper()
	if main != nil {
		line = strings.ReplaceAll(line, "$MAINPID", strconv.Itoa(main.cmd.Process.Pid))
	}
	args := strings.Fields(line)
	if len(args) == 0 || strings.ContainsAny(args[0][:1], "-+!@:|") {
		t.Fatalf("%s: Exec line %q: the test does not emulate prefixes", s.u.name, line)
	}
	for i, a := range args {
		if b, ok := s.bins[a]; ok && i == 0 {
			args[i] = b
			continue
		}
		for _, dir := range []string{"/etc/tlsvpn/", "/run/tlsvpn/", "/var/lib/tlsvpn/"} {
			if strings.HasPrefix(a, dir) {
				args[i] = filepath.Join(s.root, a)
			}
		}
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
	script += `exec "$@"`
	return append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh"},
		append(priv, append([]string{"--"}, args...)...)...)
}

// run runs an Exec line to completion, as the unit's user; main is the
// running ExecStart, if any.
func (s *sandbox) run(t *testing.T, ns *netnstest.NS, key string, main *proc) string {
	t.Helper()
	cmd := s.command(t, s.u.one(t, key), main)
	out, err := ns.Cmd(t.Context(), cmd[0], cmd[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s=%s: %v\n%s", s.u.name, key, s.u.one(t, key), err, out)
	}
	return string(out)
}

// start starts ExecStart with NOTIFY_SOCKET set; it is stopped in t.Cleanup.
func (s *sandbox) start(t *testing.T, ns *netnstest.NS, notifySocket string) *proc {
	t.Helper()
	cmd := s.command(t, s.u.one(t, "ExecStart"), nil)
	p := &proc{log: new(tunneltest.SyncBuffer), done: make(chan struct{})}
	p.cmd = ns.Cmd(context.Background(), cmd[0], cmd[1:]...)
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

	// root stands in for /: etc/tlsvpn root:tlsvpn 0750 as postinst makes
	// it, and what StateDirectory= and RuntimeDirectory= create.
	root, err := os.MkdirTemp("", "tlsvpn-unit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	mkdir := func(rel string, mode os.FileMode, owner, group int) string {
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
		return dir
	}
	os.Chmod(root, 0o755)
	for _, d := range []string{"etc", "run", "var", "var/lib"} {
		mkdir(d, 0o755, 0, 0)
	}
	etc := mkdir("etc/tlsvpn", 0o750, 0, gid)
	mkdir("etc/tlsvpn/client", 0o750, 0, gid)
	for _, u := range []*unit{srvUnit, cliUnit} {
		for _, d := range u.words("RuntimeDirectory") {
			mkdir(filepath.Join("run", d), 0o750, uid, gid)
		}
		for _, d := range u.words("StateDirectory") {
			mkdir(filepath.Join("var/lib", d), 0o750, uid, gid)
		}
	}

	// Keys owned by the unit's user, mode 0600, as the README tells operators.
	tunneld := bins["/usr/bin/tunneld"]
	pki := filepath.Join(etc, "pki")
	for _, args := range [][]string{
		{"pki", "init", "--dir", pki},
		{"pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.2.1"},
		{"pki", "issue", "--dir", pki, "--client", "--name", "laptop"},
	} {
		if out, err := exec.Command(tunneld, args...).CombinedOutput(); err != nil {
			t.Fatalf("tunneld %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	mkdir("etc/tlsvpn/pki", 0o750, 0, gid)
	for _, f := range []string{"server.key", "laptop.key"} {
		if err := os.Chown(filepath.Join(pki, f), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	writeFile := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		os.Chown(path, 0, gid)
	}
	// --route turns forwarding on: the one /proc/sys write the unit allows.
	writeFile(filepath.Join(etc, "tunneld.yaml"), "listen: 198.18.2.1:443\n"+
		"cert: "+pki+"/server.crt\nkey: "+pki+"/server.key\nca: "+pki+"/ca.crt\ncrl: "+pki+"/crl.pem\n"+
		"tun: tunneld0\nsubnet: 100.64.2.0/24\nroute:\n  - 198.18.10.0/24\n"+
		"state-dir: "+filepath.Join(root, "var/lib/tlsvpn/tunneld0")+"\nlog-level: debug\n")
	writeFile(filepath.Join(etc, "client", "work.yaml"), "server: 198.18.2.1:443\n"+
		"cert: "+pki+"/laptop.crt\nkey: "+pki+"/laptop.key\nca: "+pki+"/ca.crt\n"+
		"tun: tunnelc0\nlog-level: debug\n")

	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.2.1/30"), laptop, netip.MustParsePrefix("198.18.2.2/30"))
	srv := &sandbox{u: srvUnit, root: root, bins: bins, uid: uid, gid: gid, named: named}
	cli := &sandbox{u: cliUnit, root: root, bins: bins, uid: uid, gid: gid, named: named}

	srv.run(t, server, "ExecStartPre", nil)
	srvNotify := listenNotify(t, root, "tunneld", uid, gid)
	d := srv.start(t, server, srvNotify.path)
	srvNotify.want(t, "READY=1", d)
	if !strings.Contains(d.log.String(), "forwarding between the tunnel and other networks") {
		t.Errorf("tunneld did not turn forwarding on (the unit's /proc/sys write)")
	}

	cli.run(t, laptop, "ExecStartPre", nil)
	cliNotify := listenNotify(t, root, "tunnelc", uid, gid)
	c := cli.start(t, laptop, cliNotify.path)
	cliNotify.want(t, "READY=1", c)
	// READY=1 means the tunnel is up: no waiting for routes.
	if err := ping(t, laptop, "100.64.2.1"); err != nil {
		t.Fatalf("through the tunnel of the units: %v", err)
	}

	// The operator's commands reach each instance at the --control path
	// its unit names (in the RuntimeDirectory).
	control := func(u *unit) string {
		for _, a := range strings.Fields(u.one(t, "ExecStart")) {
			if strings.HasPrefix(a, "/run/tlsvpn/") {
				return filepath.Join(root, a)
			}
		}
		t.Fatalf("%s: ExecStart has no --control /run/tlsvpn/...", u.name)
		return ""
	}
	if out := server.Run(t, tunneld, "clients", "--control", control(srvUnit)); !strings.Contains(out, "laptop") {
		t.Errorf("tunneld clients through the unit's socket:\n%s", out)
	}
	if out := laptop.Run(t, bins["/usr/bin/tunnelc"], "status", "--control", control(cliUnit)); !strings.Contains(out, "100.64.2.") {
		t.Errorf("tunnelc status through the unit's socket:\n%s", out)
	}

	// systemctl reload: ExecReload as the unit's user, bracketed by
	// RELOADING=1 and READY=1.
	srv.run(t, server, "ExecReload", d)
	srvNotify.want(t, "RELOADING=1", d)
	srvNotify.want(t, "READY=1", d)

	// systemctl stop: SIGTERM, STOPPING=1, a clean exit, ExecStopPost.
	for _, x := range []struct {
		sb *sandbox
		ns *netnstest.NS
		p  *proc
		n  *notifySocket
	}{{cli, laptop, c, cliNotify}, {srv, server, d, srvNotify}} {
		if err := x.p.stop(t); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", x.sb.u.name, err)
		}
		x.n.want(t, "STOPPING=1", x.p)
		x.sb.run(t, x.ns, "ExecStopPost", nil)
	}
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
