package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socketPath returns a short socket path in a fresh directory (unix
// socket paths are limited to 107 bytes; t.TempDir() can be long).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "sub", "d.sock")
}

// serve starts a control server with h on a fresh socket and returns its
// path; it is closed at the end of the test.
func serve(t *testing.T, h Handler) string {
	t.Helper()
	path := socketPath(t)
	s, err := Listen(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// fakeServer answers like tunneld would, from canned state.
func fakeServer(_ context.Context, cmd string, args []string) (any, error) {
	switch cmd {
	case "clients":
		return []Session{{Identity: "laptop", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, BytesIn: 10}}, nil
	case "kick":
		if len(args) == 1 && args[0] == "laptop" {
			return map[string]string{"message": "closed"}, nil
		}
		return nil, fmt.Errorf("no session of client %q", strings.Join(args, " "))
	case "panic":
		panic("boom")
	}
	return nil, fmt.Errorf("unknown command %q", cmd)
}

func TestCall(t *testing.T) {
	path := serve(t, fakeServer)
	ctx := context.Background()

	var list []Session
	if err := Call(ctx, path, "clients", nil, &list); err != nil {
		t.Fatalf("Call(clients) = %v", err)
	}
	if len(list) != 1 || list[0].Identity != "laptop" || list[0].Addresses[0] != netip.MustParseAddr("100.64.0.2") || list[0].BytesIn != 10 {
		t.Errorf("Call(clients) decoded %+v", list)
	}

	err := Call(ctx, path, "kick", []string{"nobody"}, nil)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Msg != `no session of client "nobody"` {
		t.Errorf("Call(kick nobody) = %v, want the daemon's CommandError", err)
	}

	err = Call(ctx, path, "panic", nil, nil)
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "internal error") {
		t.Errorf("Call(panic) = %v, want an internal error (and the server still up)", err)
	}
	if err := Call(ctx, path, "kick", []string{"laptop"}, nil); err != nil {
		t.Errorf("Call after a panicking command = %v", err)
	}
}

func TestCallUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	err := Call(context.Background(), path, "status", nil, nil)
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Path != path {
		t.Fatalf("Call on a missing socket = %v, want *UnreachableError", err)
	}
	for _, want := range []string{path, "--tun", "--control"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Count(err.Error(), path) != 1 {
		t.Errorf("error %q names the socket more than once", err)
	}
}

func TestCallTimeout(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	path := serve(t, func(ctx context.Context, _ string, _ []string) (any, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Call(ctx, path, "status", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("Call to a daemon that does not answer = %v, want a timeout", err)
	}
}

func TestListenMode(t *testing.T) {
	path := serve(t, fakeServer)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, want socket 0660", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o755 {
		t.Errorf("created directory mode = %v, want 0755", di.Mode().Perm())
	}
	if matches, _ := filepath.Glob(path + ".*"); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := serve(t, fakeServer)
	_, err := Listen(path, Options{})
	if !errors.Is(err, errBusy) || !strings.Contains(err.Error(), "another instance is running") {
		t.Fatalf("second Listen on a live socket = %v, want refusal", err)
	}
	// The first one still answers.
	if err := Call(context.Background(), path, "kick", []string{"laptop"}, nil); err != nil {
		t.Errorf("first server after the refused second: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := socketPath(t)
	os.MkdirAll(filepath.Dir(path), 0o755)
	// A daemon that died without cleaning up: the file stays, nothing
	// listens.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	s, err := Listen(path, Options{})
	if err != nil {
		t.Fatalf("Listen over a stale socket = %v", err)
	}
	s.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the socket file (%v)", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := socketPath(t)
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, Options{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file = %v, want refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a socket" {
		t.Error("Listen changed the file in its way")
	}
}

func TestCloseKeepsSuccessorsSocket(t *testing.T) {
	path := socketPath(t)
	s, err := Listen(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Someone removed our file and another daemon took the path.
	os.Remove(path)
	s2, err := Listen(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("closing the first server removed the second's socket: %v", err)
	}
}

func TestListenUnknownGroup(t *testing.T) {
	_, err := Listen(socketPath(t), Options{Group: "no-such-group-tlsvpn-test"})
	if err == nil || !strings.Contains(err.Error(), "--control-group no-such-group-tlsvpn-test") {
		t.Fatalf("Listen with an unknown group = %v, want an error naming the flag and group", err)
	}
}

func TestDefaultPath(t *testing.T) {
	if got := DefaultPath("tunneld0"); got != "/run/tlsvpn/tunneld0.sock" {
		t.Errorf("DefaultPath(tunneld0) = %q", got)
	}
}

func TestListenGroup(t *testing.T) {
	g, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Skipf("no group nogroup here: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("giving a socket to another group needs root")
	}
	path := socketPath(t)
	s, err := Listen(path, Options{Group: "nogroup"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if gid := fi.Sys().(*syscall.Stat_t).Gid; strconv.Itoa(int(gid)) != g.Gid || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket gid %d mode %v, want group nogroup (%s) and 0660", gid, fi.Mode().Perm(), g.Gid)
	}
}

// TestListenOptionalOff: an empty --control means no socket, not an error.
func TestListenOptionalOff(t *testing.T) {
	srv, err := ListenOptional("", Options{})
	if srv != nil || err != nil {
		t.Errorf("ListenOptional(\"\") = %v, %v; want nil, nil", srv, err)
	}
}
