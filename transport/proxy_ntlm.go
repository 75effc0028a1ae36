package transport

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/Azure/go-ntlmssp"
)

// NTLM proxy authentication (MS-NLMP, NTLMv2 only, by go-ntlmssp) for a
// user written DOMAIN\user: Windows accounts are written that way, and
// such a password is never sent with Basic, which would show it to
// anyone on the way to the proxy. The exchange takes two CONNECTs on one
// connection: NEGOTIATE, the proxy's 407 with a CHALLENGE (whose body is
// skipped), then AUTHENTICATE, answered 200. Negotiate (Kerberos) is not
// spoken.

// ntlm reports whether p authenticates with NTLM.
func (p *Proxy) ntlm() bool {
	return p.scheme == SchemeHTTP && p.hasAuth && strings.Contains(p.user, `\`)
}

// AuthScheme names how p authenticates, for logs: "none", "basic",
// "ntlm" or, for SOCKS5, "password".
func (p *Proxy) AuthScheme() string {
	switch {
	case !p.hasAuth:
		return "none"
	case p.scheme == SchemeSOCKS5:
		return "password"
	case p.ntlm():
		return "ntlm"
	}
	return "basic"
}

func (p *Proxy) connectNTLM(conn net.Conn, target string) error {
	neg, err := ntlmssp.NewNegotiateMessage("", "")
	if err != nil {
		return fmt.Errorf("proxy %s: NTLM: %w", p.Addr(), err)
	}
	resp, err := p.roundTrip(conn, target, "NTLM "+base64.StdEncoding.EncodeToString(neg))
	switch {
	case err != nil:
		return err
	case resp.code/100 == 2:
		return nil // no authentication needed after all
	case resp.code != 407 || resp.ntlmChallenge == nil:
		return p.httpRefusal(target, resp)
	case resp.closes || resp.contentLength < 0 || resp.contentLength > maxRefusalBody:
		return fmt.Errorf("proxy %s: NTLM needs the connection kept open after the challenge, and the proxy does not keep it (Connection: close, or no Content-Length)", p.Addr())
	}
	if _, err := io.CopyN(io.Discard, conn, resp.contentLength); err != nil {
		return fmt.Errorf("proxy %s: reading its NTLM challenge: %w", p.Addr(), readErr(err))
	}
	auth, err := ntlmssp.NewAuthenticateMessage(resp.ntlmChallenge, p.user, p.password, nil)
	if err != nil {
		return fmt.Errorf("proxy %s: its NTLM challenge: %w", p.Addr(), err)
	}
	if resp, err = p.roundTrip(conn, target, "NTLM "+base64.StdEncoding.EncodeToString(auth)); err != nil {
		return err
	}
	if resp.code/100 == 2 {
		return nil
	}
	return p.httpRefusal(target, resp)
}
