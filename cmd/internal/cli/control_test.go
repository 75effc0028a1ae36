package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/control"
)

// fakeDaemon serves a control socket that answers "kick" for "laptop"
// and "status" with a message, like a daemon would.
func fakeDaemon(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cli-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "d.sock")
	s, err := control.Listen(path, control.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ctx, func(_ context.Context, cmd string, args []string) (any, error) {
			switch {
			case cmd == "kick" && len(args) == 1 && args[0] == "laptop":
				return Message{Message: "closed the session of laptop"}, nil
			case cmd == "kick":
				return nil, fmt.Errorf("no session of client %q", args[0])
			case cmd == "status" && len(args) == 1 && args[0] == "--all":
				return map[string]any{"sessions": 5}, nil
			case cmd == "status":
				return map[string]any{"sessions": 2}, nil
			case cmd == "reconnect":
				return Message{Message: fmt.Sprintf("reconnecting %q", args)}, nil
			}
			return nil, fmt.Errorf("unknown command %q", cmd)
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func TestRunControl(t *testing.T) {
	path := fakeDaemon(t)
	kick := ControlCommand{Prog: "tunneld", Name: "kick", Args: "NAME", NArgs: 1, DefaultTun: "tunneld0", Help: "Close a session."}
	status := ControlCommand{Prog: "tunneld", Name: "status", DefaultTun: "tunneld0", Help: "Show status.",
		Render: func(w io.Writer, raw json.RawMessage, _ time.Time) error {
			var v struct{ Sessions int }
			json.Unmarshal(raw, &v)
			_, err := fmt.Fprintf(w, "sessions: %d\n", v.Sessions)
			return err
		}}
	withSwitch := status
	withSwitch.Switches = []ControlSwitch{{Name: "all", Usage: "every gateway's", Render: func(w io.Writer, raw json.RawMessage, _ time.Time) error {
		_, err := fmt.Fprintf(w, "all: %s\n", raw)
		return err
	}}}
	reconnect := ControlCommand{Prog: "tunnelc", Name: "reconnect", Args: "[SERVER]", NArgs: 1, ArgsOptional: true, DefaultTun: "tunnelc0"}
	missing := filepath.Join(filepath.Dir(path), "other.sock")
	// Config files as the daemons read them: the socket is found the way
	// the daemon started with the file would place it.
	dir := filepath.Dir(path)
	file := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	withControl := file("with-control.yaml", "listen: 0.0.0.0:443\ncontrol: "+path+"\n")
	withTun := file("with-tun.yaml", "tun: no-such-tun-for-test\nsubnet: 100.64.0.0/24\n")
	plain := file("plain.yaml", "listen: 0.0.0.0:443\n")
	noSocket := file("no-socket.yaml", "control: \"\"\n")
	broken := file("broken.yaml", "tun: [\n")
	file("work.yaml", "server: vpn.example.com:443\ncontrol: "+path+"\n")
	profiled := status
	profiled.ProfileDir = dir
	cases := []struct {
		name     string
		cmd      ControlCommand
		args     []string
		exit     int
		stdout   string // exact
		errHas   string
		stdoutIn string
	}{
		{name: "message", cmd: kick, args: []string{"laptop", "--control", path}, stdout: "closed the session of laptop\n"},
		{name: "refused is exit 1", cmd: kick, args: []string{"nobody", "--control", path}, exit: ExitFailure, errHas: `no session of client "nobody"`},
		{name: "human rendering", cmd: status, args: []string{"--control", path}, stdout: "sessions: 2\n"},
		{name: "a switch is sent and renders", cmd: withSwitch, args: []string{"--all", "--control", path}, stdout: "all: {\"sessions\":5}\n"},
		{name: "a switch left out", cmd: withSwitch, args: []string{"--control", path}, stdout: "sessions: 2\n"},
		{name: "json", cmd: status, args: []string{"--control", path, "--json"}, stdout: "{\n  \"sessions\": 2\n}\n"},
		{name: "missing argument is usage", cmd: kick, args: []string{"--control", path}, exit: ExitUsage, errHas: "want NAME"},
		{name: "extra argument is usage", cmd: status, args: []string{"x", "--control", path}, exit: ExitUsage, errHas: `unexpected argument "x"`},
		{name: "optional argument given", cmd: reconnect, args: []string{"b:443", "--control", path}, stdout: "reconnecting [\"b:443\"]\n"},
		{name: "optional argument left out", cmd: reconnect, args: []string{"--control", path}, stdout: "reconnecting []\n"},
		{name: "one optional argument too many", cmd: reconnect, args: []string{"a:443", "b:443", "--control", path}, exit: ExitUsage, errHas: `unexpected argument "b:443"`},
		{name: "bad flag is usage", cmd: status, args: []string{"--bogus"}, exit: ExitUsage, errHas: "tunneld status --help"},
		{name: "empty --control is usage", cmd: status, args: []string{"--control", ""}, exit: ExitUsage, errHas: "--control"},
		{name: "no daemon is exit 3", cmd: status, args: []string{"--control", missing}, exit: ExitUnreachable, errHas: missing},
		{name: "--config: its control setting", cmd: status, args: []string{"--config", withControl}, stdout: "sessions: 2\n"},
		{name: "--config: its tun setting", cmd: status, args: []string{"--config", withTun}, exit: ExitUnreachable, errHas: "/run/tlsvpn/no-such-tun-for-test.sock"},
		{name: "--config: the default tun", cmd: status, args: []string{"--config", plain}, exit: ExitUnreachable, errHas: "/run/tlsvpn/tunneld0.sock"},
		{name: "--config: no socket", cmd: status, args: []string{"--config", noSocket}, exit: ExitFailure, errHas: "has no control socket"},
		{name: "--config: broken file", cmd: status, args: []string{"--config", broken}, exit: ExitFailure, errHas: broken},
		{name: "--config: missing file", cmd: status, args: []string{"--config", missing + ".yaml"}, exit: ExitFailure, errHas: "no such file"},
		{name: "--config and --tun is usage", cmd: status, args: []string{"--config", plain, "--tun", "x"}, exit: ExitUsage, errHas: "give the instance once"},
		{name: "--profile: the profile's file", cmd: profiled, args: []string{"--profile", "work"}, stdout: "sessions: 2\n"},
		{name: "--profile and --config is usage", cmd: profiled, args: []string{"--profile", "work", "--config", plain}, exit: ExitUsage, errHas: "give one"},
		{name: "--profile is a name", cmd: profiled, args: []string{"--profile", "../work"}, exit: ExitUsage, errHas: "want a name"},
		{name: "no --profile without profiles", cmd: status, args: []string{"--profile", "work"}, exit: ExitUsage, errHas: "unknown flag"},
		{name: "--tun picks the default path", cmd: status, args: []string{"--tun", "no-such-tun-for-test"}, exit: ExitUnreachable, errHas: "/run/tlsvpn/no-such-tun-for-test.sock"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut strings.Builder
			err := RunControl(context.Background(), c.cmd, c.args, &out, &errOut)
			if got := ExitCode(err); got != c.exit {
				t.Errorf("exit code %d (err %v), want %d", got, err, c.exit)
			}
			if c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)) {
				t.Errorf("error %v, want one containing %q", err, c.errHas)
			}
			if c.exit == 0 && out.String() != c.stdout {
				t.Errorf("stdout %q, want %q", out.String(), c.stdout)
			}
		})
	}
}

func TestRunControlHelp(t *testing.T) {
	cmd := ControlCommand{Prog: "tunneld", Name: "kick", Args: "NAME", NArgs: 1, Help: "Close the session of NAME.", Example: "  $ tunneld kick laptop\n"}
	var out strings.Builder
	err := RunControl(context.Background(), cmd, []string{"--help"}, &out, io.Discard)
	if !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("--help = %v", err)
	}
	for _, want := range []string{"Usage: tunneld kick NAME [--tun NAME | --control PATH | --config FILE] [--json]", "Close the session of NAME.", "--json", "--tun", "--control", "$ tunneld kick laptop", "Exit status: 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestControlFlagsSocket(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "/run/tlsvpn/vpn1.sock"},
		{[]string{"--control", "/tmp/x.sock"}, "/tmp/x.sock"},
		{[]string{"--control", ""}, ""},
	} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		var cf ControlFlags
		AddControlFlags(fs, &cf, "tunneld")
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if got := cf.Socket("vpn1"); got != c.want {
			t.Errorf("%v: Socket(vpn1) = %q, want %q", c.args, got, c.want)
		}
	}
}
