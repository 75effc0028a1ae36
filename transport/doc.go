// Package transport holds the dialers and listeners the sessions'
// transport runs over: the proxies tunnelc can reach its server through
// (an HTTP proxy's CONNECT method, RFC 9110 section 9.3.6, and SOCKS5,
// RFC 1928 with the user/password method of RFC 1929), and a listener
// that shares tunneld's port with a web server.
//
// What it hands back is the plain TCP connection (a *net.TCPConn when the
// caller dialed one), positioned after the proxy's answer, so that
// socket options and the record layer's direct writes keep working on it.
// It imports only the standard library and golang.org/x/net.
package transport
