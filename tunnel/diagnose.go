package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// Problem classifies a failed connection attempt. Transient problems
// (the network, a busy server) go away by themselves and are retried with
// the normal backoff; the others stay until someone changes a certificate,
// a flag or the server, so retrying often only fills the logs and the
// server's: the client retries them slowly (ClientConfig.SlowBackoff).
type Problem int

// The problems Diagnose tells apart.
const (
	ProblemTransient       Problem = iota // network, timeouts, a busy or restarting server
	ProblemUnknownCA                      // the server's certificate is not from the CA the client trusts
	ProblemServerName                     // the server's certificate does not carry the name the client checks
	ProblemServerCert                     // the server's certificate is otherwise unusable (expired, not yet valid, wrong usage)
	ProblemClientRefused                  // the server refused the client's certificate (revoked, expired, another CA)
	ProblemNotTLSVPN                      // the server does not speak TLS, or not tlsvpn's protocol or version
	ProblemRefusedOnTheWay                // something on the way refused for good: a proxy's credentials or rules
)

// String returns a short name of the problem for logs.
func (p Problem) String() string {
	switch p {
	case ProblemTransient:
		return "transient"
	case ProblemUnknownCA:
		return "server certificate from another CA"
	case ProblemServerName:
		return "server name mismatch"
	case ProblemServerCert:
		return "server certificate not valid"
	case ProblemClientRefused:
		return "client certificate refused"
	case ProblemNotTLSVPN:
		return "not a tlsvpn server"
	case ProblemRefusedOnTheWay:
		return "refused on the way"
	}
	return fmt.Sprintf("problem %d", int(p))
}

// Permanent reports whether the problem stays until someone acts.
func (p Problem) Permanent() bool { return p != ProblemTransient }

// Diagnosis explains a failed connection attempt.
type Diagnosis struct {
	Problem Problem
	// Reason says what went wrong, in words, with the facts a user needs
	// (the names a certificate holds, its issuer); empty for transient
	// problems, whose error says it.
	Reason string
	// Hint says what to do about it; may be empty.
	Hint string
}

// Diagnose classifies err, an error from Client.Connect (or a session
// that ended during its handshake), and explains it.
func Diagnose(err error) Diagnosis {
	if err == nil {
		return Diagnosis{}
	}
	var (
		pc   *PeerClosedError
		ua   x509.UnknownAuthorityError
		hn   x509.HostnameError
		ci   x509.CertificateInvalidError
		cv   *tls.CertificateVerificationError
		rh   tls.RecordHeaderError
		alpn *alpnError
		way  refusal
	)
	switch alert := remoteAlert(err); {
	case errors.As(err, &way) && way.Permanent():
		return Diagnosis{Problem: ProblemRefusedOnTheWay, Reason: way.Error(), Hint: way.Hint()}
	case errors.As(err, &way):
		return Diagnosis{Hint: way.Hint()}
	case errors.As(err, &ua):
		d := Diagnosis{Problem: ProblemUnknownCA,
			Hint: "the server is not the one --ca is for (wrong address or port, or an interception proxy), or --ca is the wrong file: check both"}
		d.Reason = "the server's certificate is not signed by the CA in --ca"
		if ua.Cert != nil {
			d.Reason = fmt.Sprintf("the server's certificate %q (issued by %q) is not signed by the CA in --ca",
				ua.Cert.Subject.CommonName, ua.Cert.Issuer.CommonName)
		}
		return d
	case errors.As(err, &hn):
		return nameMismatch(hn)
	case errors.As(err, &ci):
		d := Diagnosis{Problem: ProblemServerCert, Reason: "the server's certificate is not valid: " + ci.Error()}
		if ci.Reason == x509.Expired && ci.Cert != nil {
			now := time.Now()
			if now.After(ci.Cert.NotAfter) {
				d.Reason = fmt.Sprintf("the server's certificate %q expired at %s", ci.Cert.Subject.CommonName, ci.Cert.NotAfter.UTC().Format(time.RFC3339))
			} else {
				d.Reason = fmt.Sprintf("the server's certificate %q is not valid until %s", ci.Cert.Subject.CommonName, ci.Cert.NotBefore.UTC().Format(time.RFC3339))
			}
			d.Hint = "the server needs a new certificate ('tunneld pki issue --server'), or this host's clock is wrong"
		}
		return d
	case errors.As(err, &cv):
		return Diagnosis{Problem: ProblemServerCert, Reason: "the server's certificate did not verify: " + cv.Err.Error(),
			Hint: "check --ca and --server-name"}
	case alert == "unknown certificate authority":
		return Diagnosis{Problem: ProblemClientRefused, Reason: "the server does not know the CA of this client's certificate",
			Hint: "the client certificate comes from another CA than the server's: ask the server's operator for one ('tunneld pki issue --client')"}
	case alert == "expired certificate":
		return Diagnosis{Problem: ProblemClientRefused, Reason: "the server refused this client's certificate as expired (or the clocks disagree)",
			Hint: "ask for a new client certificate ('tunneld pki issue --client')"}
	case alert == "revoked certificate", alert == "bad certificate", alert == "certificate required",
		alert == "unsupported certificate", alert == "access denied":
		return Diagnosis{Problem: ProblemClientRefused, Reason: "the server refused this client's certificate (" + alert + ")",
			Hint: "it is revoked, expired or from another CA, or the server cannot check revocation (its log says which): ask for a new one"}
	case alert == "no application protocol":
		return Diagnosis{Problem: ProblemNotTLSVPN, Reason: fmt.Sprintf("the server does not speak %s (it refused the ALPN)", ALPN),
			Hint: "wrong port, or a server of an incompatible version"}
	case alert == "protocol version not supported":
		return Diagnosis{Problem: ProblemNotTLSVPN, Reason: "the server does not speak TLS 1.3",
			Hint: "wrong address or port: tunneld speaks TLS 1.3 only"}
	case errors.As(err, &alpn):
		return Diagnosis{Problem: ProblemNotTLSVPN, Reason: alpn.Error(),
			Hint: "wrong port, or a server of an incompatible version"}
	case errors.As(err, &rh):
		return Diagnosis{Problem: ProblemNotTLSVPN, Reason: "the server does not speak TLS (its first bytes are not a TLS record)",
			Hint: "wrong address or port (a web or SSH server?)"}
	case errors.As(err, &pc) && pc.Code == CloseUnsupported:
		return Diagnosis{Problem: ProblemNotTLSVPN, Reason: "the server does not support this client's protocol version or capabilities: " + pc.Reason,
			Hint: "update tunnelc or the server"}
	}
	return Diagnosis{Hint: transientHint(err)}
}

// refusal is an error of the dial that explains itself, such as a proxy's
// refusal (transport.ProxyError): whether retrying soon can help, and
// what to do.
type refusal interface {
	error
	Permanent() bool
	Hint() string
}

// ConnectError is a connection attempt that failed for a permanent
// problem, as Run returns it when MaxAttempts ran out: its message is the
// reason and the hint, and it wraps the error.
type ConnectError struct {
	Diagnosis
	Err error
}

func (e *ConnectError) Error() string { return e.Reason + "; " + e.Hint }
func (e *ConnectError) Unwrap() error { return e.Err }

// explain returns err as a *ConnectError if it is a permanent problem.
func explain(err error) error {
	if d := Diagnose(err); d.Problem.Permanent() {
		return &ConnectError{Diagnosis: d, Err: err}
	}
	return err
}

// nameMismatch explains a server certificate that does not hold the name
// the client checks, listing the names it holds.
func nameMismatch(hn x509.HostnameError) Diagnosis {
	var names []string
	if c := hn.Certificate; c != nil {
		names = append(names, c.DNSNames...)
		for _, ip := range c.IPAddresses {
			names = append(names, ip.String())
		}
	}
	d := Diagnosis{Problem: ProblemServerName}
	if len(names) == 0 {
		cn := ""
		if hn.Certificate != nil {
			cn = hn.Certificate.Subject.CommonName
		}
		d.Reason = fmt.Sprintf("the server's certificate %q holds no DNS name or IP address, so it is not valid for %s", cn, hn.Host)
		d.Hint = "issue the server a certificate that holds the name or address clients dial ('tunneld pki issue --server --name NAME --ip ADDR')"
		return d
	}
	d.Reason = fmt.Sprintf("the server's certificate is for %s, not %s", strings.Join(names, ", "), hn.Host)
	d.Hint = fmt.Sprintf("pass --server-name %s (or dial that name or address), or issue the server a certificate for %s ('tunneld pki issue --server --name NAME --ip ADDR')",
		names[0], hn.Host)
	return d
}

// remoteAlert returns the name of the TLS alert the peer sent that err
// reports ("bad certificate"), or "". crypto/tls reports it as a
// *net.OpError with Op "remote error" around an unexported alert type.
func remoteAlert(err error) string {
	var oe *net.OpError
	for e := err; errors.As(e, &oe); e = oe.Err {
		if oe.Op == "remote error" && oe.Err != nil {
			return strings.TrimPrefix(oe.Err.Error(), "tls: ")
		}
	}
	return ""
}

// transientHint explains a transient failure, or returns "" when the
// error says it already. A server refuses some connections before it
// reads anything (its rate, connection and handshake limits), which the
// client sees only as a closed connection.
func transientHint(err error) string {
	var pc *PeerClosedError
	switch alert := remoteAlert(err); {
	case errors.As(err, &pc) && pc.Code == ClosePolicy:
		return "the server refused this client by its policy or limits (see the reason); it retries"
	case alert == "internal error":
		return "the server refused the handshake: it is busy and keeps its reserved slots for clients that resume a session or reconnect from a known address; it retries"
	case strings.Contains(err.Error(), "tls handshake") && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return "the server closed the connection during the TLS handshake: it is refusing new connections for now (rate, connection or handshake limits: its log says which), or this is not a tlsvpn server; it retries"
	}
	return ""
}

// ConnectHint explains a failed connection attempt in words a user can
// act on, or returns "" when the error says it already. See Diagnose for
// the whole explanation.
func ConnectHint(err error) string {
	return Diagnose(err).Hint
}
