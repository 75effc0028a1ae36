package service

import "net"

// TCPConn returns the TCP connection c is or wraps: a wrapper says what
// it wraps with NetConn, as crypto/tls's Conn and the shared port's
// transport.SharedConn do (which replays the ClientHello it read to
// classify the connection, but leaves the socket's options to its
// owner).
func TCPConn(c net.Conn) (*net.TCPConn, bool) {
	for range 4 { // a few layers at most
		switch w := c.(type) {
		case *net.TCPConn:
			return w, true
		case interface{ NetConn() net.Conn }:
			c = w.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}
