package service

import (
	"errors"
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCongestionResolve(t *testing.T) {
	for _, name := range []string{"system", ""} {
		use, note, err := Congestion(name, true)
		if use != "" || note != "" || err != nil {
			t.Errorf("Congestion(%q) = %q, %q, %v; want the system default untouched", name, use, note, err)
		}
	}
	// reno is built into every Linux kernel and always allowed.
	if use, note, err := Congestion("reno", true); use != "reno" || note != "" || err != nil {
		t.Errorf("Congestion(reno) = %q, %q, %v; want reno", use, note, err)
	}
}

func TestCongestionUnavailable(t *testing.T) {
	use, note, err := Congestion("no-such-cc", true)
	var ue *UsageError
	if use != "" || !errors.As(err, &ue) || !strings.Contains(err.Error(), "no-such-cc") || !strings.Contains(err.Error(), "available") {
		t.Fatalf("explicit unknown algorithm: got %q, %q, %v; want a usage error naming it and what is available", use, note, err)
	}
	// As the built-in default, an unavailable algorithm falls back to the
	// system default with a warning instead of refusing to start.
	use, note, err = Congestion("no-such-cc", false)
	if use != "" || err != nil || !strings.Contains(note, "system default") {
		t.Fatalf("default unknown algorithm: got %q, %q, %v; want a fallback note", use, note, err)
	}
}

func TestTuneTCPSetsOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			var b [1]byte
			c.Read(b[:])
		}
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	// The socket under a wrapper (the shared port's connections) is
	// tuned too.
	var c net.Conn = wrapped{dialed}
	TuneTCP(c, 0, "reno")
	raw, err := dialed.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	var lowat, nodelay int
	var gerr error
	raw.Control(func(fd uintptr) {
		if cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION); gerr != nil {
			return
		}
		if lowat, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT); gerr != nil {
			return
		}
		nodelay, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	if cc = strings.TrimRight(cc, "\x00"); cc != "reno" {
		t.Errorf("congestion control = %q, want reno", cc)
	}
	if lowat != NotSentLowat {
		t.Errorf("TCP_NOTSENT_LOWAT = %d, want %d", lowat, NotSentLowat)
	}
	// Go's own default, which TuneTCP relies on rather than set again.
	if nodelay == 0 {
		t.Error("TCP_NODELAY is off: Nagle's algorithm would delay control frames")
	}
}

// wrapped hides a connection's type behind NetConn, as
// transport.SharedConn does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }
