package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"tlsvpn/tun"
)

// TestKeepTicketsOnFailure: the client's session cache keeps a ticket
// when crypto/tls asks to forget it after a failed handshake (a busy
// server that closed the connection), so the next attempt resumes.
func TestKeepTicketsOnFailure(t *testing.T) {
	c, err := NewClient(ClientConfig{
		Dial:  func(context.Context) (net.Conn, error) { return nil, net.ErrClosed },
		TLS:   &tls.Config{},
		Setup: func(context.Context, Config) (tun.Device, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	cache, ok := c.tls.ClientSessionCache.(keepTickets)
	if !ok {
		t.Fatalf("client session cache is a %T, want keepTickets", c.tls.ClientSessionCache)
	}
	st := &tls.ClientSessionState{}
	cache.Put("k", st)
	cache.Put("k", nil) // what crypto/tls does after a failed resumption
	if got, ok := cache.Get("k"); !ok || got != st {
		t.Fatal("the ticket was forgotten after a failed handshake")
	}
}
