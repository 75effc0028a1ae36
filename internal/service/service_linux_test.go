package service

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
)

func TestListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	_, lerr := net.Listen("tcp", addr)
	if lerr == nil {
		t.Fatalf("second listen on %s succeeded", addr)
	}
	err = ListenError("--listen", addr, lerr)
	if want := "--listen " + addr + ": bind: address already in use"; err.Error() != want {
		t.Errorf("ListenError = %q, want %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("ListenError = %v, not EADDRINUSE", err)
	}
	_, lerr = net.Listen("tcp", "127.0.0.1:99999")
	if err, want := ListenError("--metrics", "127.0.0.1:99999", lerr), "--metrics 127.0.0.1:99999: address 99999: invalid port"; err.Error() != want {
		t.Errorf("ListenError = %q, want %q", err, want)
	}
}

func TestResolveError(t *testing.T) {
	dnsErr := &net.DNSError{Err: "no such host", Name: "vpn.test", Server: "127.0.0.53:53", IsNotFound: true}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{dnsErr, "lookup vpn.test on 127.0.0.53:53: no such host"},
		{context.Canceled, "resolve vpn.test: context canceled"},
		{nil, "resolve vpn.test: no address"},
	} {
		if got := ResolveError("vpn.test", tt.err); got.Error() != tt.want {
			t.Errorf("ResolveError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	var de *net.DNSError
	if !errors.As(ResolveError("vpn.test", dnsErr), &de) || !de.IsNotFound {
		t.Errorf("ResolveError hides the *net.DNSError")
	}
}
