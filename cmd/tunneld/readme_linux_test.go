package main

// The operator path of README.md ("Set up a server and a laptop"), run as
// written: every shell block marked <!-- operator-path: server --> or
// <!-- operator-path: laptop --> runs, command by command, on that host
// (unit_linux_test.go: a network namespace with its own /etc/tlsvpn,
// /var/lib/tlsvpn, /run/tlsvpn and /etc/hosts), as root, with the installed
// package's binaries and units. systemctl is the one command the test
// plays itself, because PID 1 here need not be systemd: it runs the
// installed unit's Exec lines as systemd would (sandbox). The copy of the
// laptop's files, which the README leaves to scp or a USB stick, is done by
// the test when the first laptop block comes.

import (
	"bufio"
	"encoding/json"
	"fmt"
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
)

// readmeBlock is one marked shell block of README.md.
type readmeBlock struct {
	host string   // server or laptop
	line int      // of the block's first command
	cmds []string // a heredoc is part of its command
}

// readmeBlocks returns the operator path's blocks in order.
func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []readmeBlock
	var cur *readmeBlock
	host, inBlock, heredoc, n := "", false, "", 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case !inBlock && strings.HasPrefix(line, "<!-- operator-path: "):
			host = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- operator-path: "), " -->")
			if host != "server" && host != "laptop" {
				t.Fatalf("README.md:%d: operator-path %q: want server or laptop", n, host)
			}
		case !inBlock && host != "" && line == "```sh":
			inBlock = true
			blocks = append(blocks, readmeBlock{host: host, line: n + 1})
			cur = &blocks[len(blocks)-1]
		case !inBlock && host != "" && strings.TrimSpace(line) != "":
			t.Fatalf("README.md:%d: an operator-path mark must come just before a ```sh block", n)
		case inBlock && heredoc != "":
			cur.cmds[len(cur.cmds)-1] += "\n" + line
			if line == heredoc {
				heredoc = ""
			}
		case inBlock && line == "```":
			inBlock, host = false, ""
		case inBlock && (strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#")):
		case inBlock:
			cur.cmds = append(cur.cmds, line)
			if i := strings.Index(line, "<<'"); i >= 0 {
				heredoc, _, _ = strings.Cut(line[i+3:], "'")
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if inBlock || heredoc != "" {
		t.Fatalf("README.md: the last operator-path block does not end")
	}
	return blocks
}

// TestReadmeOperatorPath checks, without root, that README.md's operator
// path is there and uses only the systemctl commands TestNetNSReadme plays.
func TestReadmeOperatorPath(t *testing.T) {
	blocks := readmeBlocks(t)
	hosts := map[string]int{}
	for _, b := range blocks {
		hosts[b.host]++
		for _, c := range b.cmds {
			if f := strings.Fields(c); f[0] == "systemctl" {
				if _, _, err := systemctlVerb(f); err != nil {
					t.Errorf("README.md:%d: %v", b.line, err)
				}
			}
		}
	}
	if hosts["server"] < 3 || hosts["laptop"] < 1 {
		t.Errorf("README.md has %v operator-path blocks, want the server's and the laptop's", hosts)
	}
}

// systemctlVerb returns what a systemctl command of the README asks:
// start, reload or stop, and the unit.
func systemctlVerb(f []string) (verb, unit string, err error) {
	switch {
	case len(f) == 4 && f[1] == "enable" && f[2] == "--now", len(f) == 3 && f[1] == "start":
		return "start", f[len(f)-1], nil
	case len(f) == 3 && (f[1] == "reload" || f[1] == "stop"):
		return f[1], f[2], nil
	}
	return "", "", fmt.Errorf("%q: the test plays only systemctl enable --now, start, reload and stop UNIT", strings.Join(f, " "))
}

// clientSince is what `tunneld clients --json` says of each identity.
type clientSince struct {
	Identity string    `json:"identity"`
	Since    time.Time `json:"connected_since"`
}

func TestNetNSReadme(t *testing.T) {
	if os.Getenv("TLSVPN_INSTALLED") != "1" {
		t.Skip("runs in scripts/test.sh's package step, after dpkg -i: its commands use the installed binaries, units and user")
	}
	blocks := readmeBlocks(t)
	usr, err := user.Lookup("tlsvpn")
	if err != nil {
		t.Fatalf("the package's user: %v", err)
	}
	uid, _ := strconv.Atoi(usr.Uid)
	gid, _ := strconv.Atoi(usr.Gid)

	serverNS, laptopNS := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, serverNS, netip.MustParsePrefix("192.0.2.1/24"), laptopNS, netip.MustParsePrefix("192.0.2.2/24"))
	hosts := map[string]*host{
		"server": newHost(t, serverNS, uid, gid, ""),
		"laptop": newHost(t, laptopNS, uid, gid, "192.0.2.1 vpn.example.com\n"),
	}

	var started []*service
	services := map[string]*service{}
	systemctl := func(h *host, b readmeBlock, c string) string {
		t.Helper()
		verb, name, err := systemctlVerb(strings.Fields(c))
		if err != nil {
			t.Fatalf("README.md:%d: %v", b.line, err)
		}
		key := b.host + "/" + name
		switch sv := services[key]; {
		case verb == "start" && sv == nil:
			file, instance := name+".service", ""
			if tmpl, inst, ok := strings.Cut(name, "@"); ok {
				file, instance = tmpl+"@.service", inst
			}
			u := readUnit(t, filepath.Join("/lib/systemd/system", file), instance)
			sv = startService(t, &sandbox{u: u, h: h, bins: map[string]string{}, uid: uid, gid: gid, named: true})
			services[key] = sv
			started = append(started, sv)
			return ""
		case sv == nil:
			t.Fatalf("README.md:%d: %s: %s was not started", b.line, c, name)
		case verb == "reload":
			return sv.reload(t)
		case verb == "stop":
			sv.stop(t)
			delete(services, key)
		}
		return ""
	}

	// since[instance] is when the laptop's session there was first seen:
	// no later command may drop it.
	since := map[string]time.Time{}
	checkClients := func(h *host, b readmeBlock, args []string) {
		t.Helper()
		out, err := h.cmd(t.Context(), append(append([]string{"tunneld", "clients"}, args...), "--json")...).CombinedOutput()
		if err != nil {
			t.Fatalf("README.md:%d: tunneld clients %s --json: %v\n%s", b.line, strings.Join(args, " "), err, out)
		}
		var list []clientSince
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("tunneld clients --json: %v\n%s", err, out)
		}
		if len(list) != 1 || list[0].Identity != "laptop" {
			t.Fatalf("README.md:%d: tunneld clients %s lists %+v, want the laptop once", b.line, strings.Join(args, " "), list)
		}
		instance := strings.Join(args, " ")
		if first, ok := since[instance]; !ok {
			since[instance] = list[0].Since
		} else if !list[0].Since.Equal(first) {
			t.Errorf("README.md:%d: the laptop's session on %q was replaced (connected since %v, was %v)", b.line, instance, list[0].Since, first)
		}
	}
	copied := false
	for _, b := range blocks {
		h := hosts[b.host]
		if b.host == "laptop" && !copied {
			// scp, as the README says.
			for _, f := range []string{"ca.crt", "laptop.crt", "laptop.key"} {
				src := hosts["server"].path("/etc/tlsvpn/pki/" + f)
				if out, err := exec.Command("cp", "-a", src, h.path("/etc/tlsvpn/client")).CombinedOutput(); err != nil {
					t.Fatalf("copying %s to the laptop: %v\n%s", f, err, out)
				}
			}
			copied = true
		}
		for _, c := range b.cmds {
			var out string
			if strings.HasPrefix(c, "systemctl ") {
				out = systemctl(h, b, c)
			} else {
				o, err := h.cmd(t.Context(), "bash", "-euo", "pipefail", "-c", c).CombinedOutput()
				out = string(o)
				if err != nil {
					t.Fatalf("README.md:%d, on the %s: %s: %v\n%s", b.line, b.host, c, err, out)
				}
			}
			t.Logf("%s# %s\n%s", b.host, c, out)
			f := strings.Fields(c)
			switch {
			case len(f) > 1 && (f[0] == "tunneld" || f[0] == "tunnelc") && f[1] == "check":
				if !strings.HasSuffix(strings.TrimSpace(out), ": ok") {
					t.Errorf("README.md:%d: %s printed %q, want FILE: ok", b.line, c, out)
				}
			case len(f) > 1 && f[0] == "tunnelc" && f[1] == "status":
				if !strings.Contains(out, "state:           up") {
					t.Errorf("README.md:%d: %s: the tunnel is not up:\n%s", b.line, c, out)
				}
			case len(f) > 1 && f[0] == "tunneld" && f[1] == "clients":
				checkClients(h, b, f[2:])
			case len(f) > 1 && f[0] == "systemctl" && f[1] == "reload":
				if !strings.Contains(out, "applied: max-clients") {
					t.Errorf("README.md:%d: %s printed %q, want the changed max-clients applied", b.line, c, out)
				}
			}
		}
	}
	if len(since) < 2 {
		t.Errorf("the operator path showed the laptop on %d server instances, want 2", len(since))
	}
	// Nobody was dropped by the reload or the second instance: the first
	// instance still has the session it had at step 5.
	checkClients(hosts["server"], readmeBlock{host: "server"}, nil)
	for _, p := range []string{"work", "office"} {
		out := hosts["laptop"].run(t, "tunnelc", "status", "--profile", p, "--json")
		var st struct {
			Reconnects uint64 `json:"reconnects"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Reconnects != 0 {
			t.Errorf("tunnelc status --profile %s: reconnects %d (%v), want 0", p, st.Reconnects, err)
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		started[i].stop(t)
	}
	for _, x := range []struct {
		ns     *netnstest.NS
		ifname string
	}{{serverNS, "tunneld0"}, {serverNS, "office0"}, {laptopNS, "tunnelc0"}, {laptopNS, "tunnelc1"}} {
		if _, err := x.ns.Handle().LinkByName(x.ifname); err == nil {
			t.Errorf("%s still exists after its unit stopped", x.ifname)
		}
	}
}
