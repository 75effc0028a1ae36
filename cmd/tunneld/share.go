package main

// tunneld's flags for sharing the listen port with a web server
// (server.Config.ShareBackend; transport.ShareListener does the work).

import (
	"net"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/server"
	"tlsvpn/transport"
)

// shareOptions are the --share-* flags.
type shareOptions struct {
	backend       string
	proxyProtocol bool
	maxConns      int
	idleTimeout   time.Duration
}

// addShareFlags defines the --share-* flags on fs.
func addShareFlags(fs *pflag.FlagSet, o *shareOptions) {
	fs.StringVar(&o.backend, "share-backend", "", "share the --listen port with a web server at HOST:PORT, e.g. 127.0.0.1:8443: connections whose TLS ClientHello does not offer tlsvpn's ALPN (browsers, curl, scanners, plain HTTP, silence) are relayed to it byte for byte, so they see the web server's own certificate and TLS; they never count against the VPN's handshake limits (off if empty; needs a restart)")
	fs.BoolVar(&o.proxyProtocol, "share-proxy-protocol", false, "send a PROXY protocol v2 header naming the real client before each relayed connection, for a web server that expects it (nginx: 'listen ... ssl proxy_protocol'); needs a restart")
	fs.IntVar(&o.maxConns, "share-max-conns", transport.DefaultShareMaxRelays, "most connections relayed to --share-backend at once; more are closed and counted (0: the default; -1: no limit)")
	fs.DurationVar(&o.idleTimeout, "share-idle-timeout", transport.DefaultShareIdleTimeout, "close a relayed connection after this long without a byte either way (0: the default)")
}

// checkShare reports the problems of the --share-* flags through bad
// (parseSettings's).
func checkShare(o shareOptions, bad func(flag, format string, args ...any)) {
	if o.backend != "" {
		if host, _, err := net.SplitHostPort(o.backend); err != nil || host == "" {
			bad("share-backend", "%q: want HOST:PORT of the web server, e.g. 127.0.0.1:8443", o.backend)
		} else if err := checkHostPort(o.backend); err != nil {
			bad("share-backend", "%q: %v", o.backend, err)
		}
	}
	if o.maxConns < -1 {
		bad("share-max-conns", "%d: want a count, 0 for the default or -1 for no limit", o.maxConns)
	}
	if o.idleTimeout < 0 {
		bad("share-idle-timeout", "%v: want a duration such as 5m", o.idleTimeout)
	}
}

// shareConfig sets the --share-* settings of c.
func shareConfig(c *server.Config, o shareOptions) {
	c.ShareBackend, c.ShareProxyProtocol = o.backend, o.proxyProtocol
	c.ShareMaxConns, c.ShareIdleTimeout = o.maxConns, o.idleTimeout
}
