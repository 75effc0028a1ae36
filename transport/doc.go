// Package transport holds the dialers and listeners the sessions'
// transport runs over: the proxies tunnelc can reach its server through
// (an HTTP proxy's CONNECT method, RFC 9110 section 9.3.6, with Basic or
// NTLM authentication, and SOCKS5, RFC 1928 with the user/password method
// of RFC 1929; proxy*.go), and a listener that shares tunneld's port with
// a web server (share*.go).
//
// A proxy dialer hands back the plain TCP connection (a *net.TCPConn when
// the caller dialed one), positioned after the proxy's answer, so that
// socket options and the record layer's direct writes keep working on it.
// Beside the standard library it imports github.com/Azure/go-ntlmssp
// (NTLM messages) and golang.org/x/crypto/cryptobyte (ClientHello parsing).
package transport
