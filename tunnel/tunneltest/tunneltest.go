// Package tunneltest runs a tunnel server and clients in one process over
// in-memory connections and in-memory TUN devices, with real TLS 1.3 and a
// throwaway CA, and builds packets to send through them.
package tunneltest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
)

// Subnet is the tunnel subnet of a Pair; the server has .1.
var Subnet = netip.MustParsePrefix("100.64.0.0/24")

// Listener is a loopback TCP listener. (net.Pipe is unbuffered: when a
// refused client and the server's alert both block writing, the handshake
// stalls until a timeout.)
type Listener struct {
	net.Listener
}

// NewListener listens on 127.0.0.1 on a free port.
func NewListener(t testing.TB) *Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &Listener{ln}
}

// Dial connects to the listener.
func (l *Listener) Dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", l.Addr().String())
}

// Pool is an in-memory tunnel.Assigner handing out Subnet's addresses from
// .2 up, stable per identity.
type Pool struct {
	mu   sync.Mutex
	next netip.Addr
	by   map[string]netip.Addr
}

// Assign implements tunnel.Assigner.
func (p *Pool) Assign(id string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.by[id]; ok {
		return a, nil
	}
	if p.by == nil {
		p.by = map[string]netip.Addr{}
		p.next = Subnet.Addr().Next().Next()
	}
	if !Subnet.Contains(p.next) {
		return netip.Addr{}, errors.New("pool exhausted")
	}
	a := p.next
	p.next = a.Next()
	p.by[id] = a
	return a, nil
}

// Server is a running in-process tunnel server.
type Server struct {
	CA       *certstest.CA
	Dev      *tuntest.ChannelDevice
	Listener *Listener
	Server   *tunnel.Server
	Stats    *tunnel.Stats
}

// ServerOptions tunes StartServer.
type ServerOptions struct {
	Keepalive time.Duration
	Routes    []netip.Prefix
	BatchSize int
	// CheckPeer is passed to the server (see tunnel.ServerConfig).
	CheckPeer func(tls.ConnectionState) error
	// WrapDev, if set, wraps the server's device (fault injection).
	WrapDev func(tun.Device) tun.Device
	// Policy and PeersChanged are passed to the server.
	Policy       func(identity string) tunnel.Policy
	PeersChanged func([]tunnel.Peer)
	// StdlibRecords, OwnAESGCM and RekeyRecords are passed to the server
	// (see tunnel.ServerConfig): the record layer of the data phase.
	StdlibRecords bool
	OwnAESGCM     bool
	RekeyRecords  uint64
	// Limits and HelloTimeout are passed to the server (admission).
	Limits       *tunnel.Limiter
	HelloTimeout time.Duration
	// Logger, if set, is the server's logger instead of the default
	// (stderr with TUNNELTEST_LOG set, else nothing).
	Logger *slog.Logger
	// Claimed and Released are passed to the server (session directory).
	Claimed, Released func(identity string)
}

// StartServer starts a server; it stops in t.Cleanup.
func StartServer(t testing.TB, opts ServerOptions) *Server {
	t.Helper()
	if opts.BatchSize == 0 {
		opts.BatchSize = 16
	}
	ca := certstest.NewCA(t)
	dev := tuntest.NewChannelDevice("srv0", 1500, opts.BatchSize, 1024)
	ln := NewListener(t)
	stats := new(tunnel.Stats)
	var sdev tun.Device = dev
	if opts.WrapDev != nil {
		sdev = opts.WrapDev(dev)
	}
	logger := opts.Logger
	if logger == nil {
		logger = testLogger(t, "server")
	}
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		TLS:           ca.ServerConfig(t, "server"),
		Identity:      certs.PeerIdentity,
		Dev:           sdev,
		Pool:          &Pool{},
		Subnet:        Subnet,
		ServerAddr:    Subnet.Addr().Next(),
		MTU:           1500,
		Routes:        opts.Routes,
		Keepalive:     opts.Keepalive,
		Stats:         stats,
		CheckPeer:     opts.CheckPeer,
		Policy:        opts.Policy,
		PeersChanged:  opts.PeersChanged,
		StdlibRecords: opts.StdlibRecords,
		OwnAESGCM:     opts.OwnAESGCM,
		RekeyRecords:  opts.RekeyRecords,
		Limits:        opts.Limits,
		HelloTimeout:  opts.HelloTimeout,
		Logger:        logger,
		Claimed:       opts.Claimed,
		Released:      opts.Released,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Serve: %v", err)
		}
	})
	return &Server{CA: ca, Dev: dev, Listener: ln, Server: srv, Stats: stats}
}

// Client is a running in-process tunnel client.
type Client struct {
	Client *tunnel.Client
	Dev    *tuntest.ChannelDevice
	Config tunnel.Config
	Stats  *tunnel.Stats
	Done   chan error // receives Run's result
	cancel context.CancelFunc
}

// Stop ends the client and returns Run's result.
func (c *Client) Stop() error {
	c.cancel()
	return <-c.Done
}

// StartClient connects a client with the given certificate name and waits
// until its session is set up.
func (s *Server) StartClient(t testing.TB, name string) *Client {
	t.Helper()
	return s.StartClientTLS(t, s.CA.ClientConfig(t, name, "server"))
}

// StartClientTLS is StartClient with a caller-made TLS config.
func (s *Server) StartClientTLS(t testing.TB, tlsCfg *tls.Config) *Client {
	t.Helper()
	c, err := s.TryClient(t, tlsCfg)
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	return c
}

// StartClientHello is StartClient with the client announcing advertise
// (a site gateway's networks) in its Hello.
func (s *Server) StartClientHello(t testing.TB, name string, advertise ...netip.Prefix) *Client {
	t.Helper()
	c, err := s.tryClient(t, s.CA.ClientConfig(t, name, "server"), advertise)
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	return c
}

// TryClient starts a client and waits until it is set up or has failed.
func (s *Server) TryClient(t testing.TB, tlsCfg *tls.Config) (*Client, error) {
	t.Helper()
	return s.tryClient(t, tlsCfg, nil)
}

func (s *Server) tryClient(t testing.TB, tlsCfg *tls.Config, advertise []netip.Prefix) (*Client, error) {
	t.Helper()
	dev := tuntest.NewChannelDevice("cli0", 1500, 16, 1024)
	ready := make(chan tunnel.Config, 1)
	stats := new(tunnel.Stats)
	cl, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial:  s.Listener.Dial,
		TLS:   tlsCfg,
		Hello: tunnel.Hello{Software: "tunneltest", Advertise: advertise},
		Setup: func(ctx context.Context, cfg tunnel.Config) (tun.Device, error) {
			select {
			case ready <- cfg:
			default:
			}
			return dev, nil
		},
		MinBackoff:  time.Minute, // tests that want reconnects set their own
		MaxAttempts: 1,           // a refused client returns at once
		Stats:       stats,
		Logger:      testLogger(t, "client"),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{Client: cl, Dev: dev, Stats: stats, Done: make(chan error, 1), cancel: cancel}
	go func() {
		err := cl.Run(ctx)
		dev.Close()
		c.Done <- err
	}()
	t.Cleanup(func() { cancel() })
	select {
	case c.Config = <-ready:
		return c, nil
	case err := <-c.Done:
		cancel()
		return nil, err
	case <-time.After(10 * time.Second):
		cancel()
		return nil, fmt.Errorf("client not connected after 10s")
	}
}

// UDP4 builds an IPv4/UDP packet with a valid length field (checksums are
// not computed: the in-memory devices do not check them).
func UDP4(src, dst netip.Addr, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 9)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// Expect waits for a packet on ch and fails unless it equals want.
func Expect(t testing.TB, ch <-chan []byte, want []byte) {
	t.Helper()
	select {
	case got := <-ch:
		if string(got) != string(want) {
			t.Fatalf("got packet %x, want %x", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no packet after 5s, want %x", want)
	}
}

// testLogger logs to stderr when TUNNELTEST_LOG is set, else nowhere.
func testLogger(t testing.TB, who string) *slog.Logger {
	if os.Getenv("TUNNELTEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "side", who)
}

// Eventually polls cond for up to 5 seconds, for effects that another
// goroutine records after the event the test can observe (counters). It
// fails with msg formatted with args, where an *atomic.Uint64 argument is
// replaced by its current value.
func Eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for i, a := range args {
				if c, ok := a.(*atomic.Uint64); ok {
					args[i] = c.Load()
				}
			}
			t.Fatalf(msg, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer that several goroutines may write to (a
// process's output, a logger) while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
