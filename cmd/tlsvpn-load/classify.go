package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"syscall"

	"tlsvpn/tunnel"
)

// stageError says at which step of a connection attempt an error happened:
// "dial" (TCP connect), "tls" (TLS handshake) or "config" (HELLO sent,
// waiting for CONFIG). The same error means different things at different
// steps: an EOF during the TLS handshake is how tunneld refuses a
// connection over its pre-authentication limits, one after it is not.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

var errNoALPN = errors.New("server did not negotiate ALPN " + tunnel.ALPN)

// classify turns an error into a short reason for the failure table: the
// stage, then what kind of error it was (TLS alert name, CLOSE code and
// reason, timeout, EOF, reset, errno), never the raw text with addresses
// and ports in it, so that 10,000 failures fall into a few rows.
func classify(err error) string {
	stage := ""
	var se *stageError
	if errors.As(err, &se) {
		stage = se.stage + ": "
	}
	return stage + kind(err)
}

func kind(err error) string {
	var (
		pc    *tunnel.PeerClosedError
		pe    *tunnel.ProtocolError
		op    *net.OpError
		cverr *tls.CertificateVerificationError
		rhe   tls.RecordHeaderError
		uaerr x509.UnknownAuthorityError
		hnerr x509.HostnameError
		ne    net.Error
	)
	switch {
	case errors.As(err, &pc):
		return fmt.Sprintf("server CLOSE %s (%d): %s", tunnel.CloseCodeName(pc.Code), pc.Code, normalize(pc.Reason))
	case errors.As(err, &pe):
		return "protocol error: " + normalize(pe.Err.Error())
	case errors.Is(err, errNoALPN):
		return "ALPN " + tunnel.ALPN + " not negotiated"
	case errors.As(err, &op) && op.Op == "remote error":
		// crypto/tls reports an alert from the peer as an OpError with
		// Op "remote error" whose Err prints as "tls: <alert name>".
		return "TLS alert from server: " + strings.TrimPrefix(op.Err.Error(), "tls: ")
	case errors.As(err, &cverr), errors.As(err, &uaerr), errors.As(err, &hnerr):
		return "server certificate not accepted: " + normalize(err.Error())
	case errors.As(err, &rhe):
		return "not a TLS server (bad record header)"
	case errors.Is(err, errSilent):
		return "timeout (server silent for 3 keepalive intervals)"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ETIMEDOUT):
		return "timeout (ETIMEDOUT: TCP retransmissions unanswered)"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF (server closed the connection)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by server"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (nothing listening)"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe (server closed the connection)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "EADDRNOTAVAIL (source address missing or out of local ports)"
	case errors.Is(err, syscall.EADDRINUSE):
		return "EADDRINUSE (out of local ports)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "out of file descriptors (EMFILE/ENFILE)"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "network unreachable"
	case errors.Is(err, net.ErrClosed):
		return "connection closed locally"
	}
	return "other: " + normalize(err.Error())
}

var (
	reAddr   = regexp.MustCompile(`\[[0-9a-fA-F:.]+\](:\d+)?|\d+\.\d+\.\d+\.\d+(:\d+)?`)
	reQuoted = regexp.MustCompile(`"[^"]*"`)
)

// normalize strips what differs between otherwise equal failures
// (addresses, ports, quoted identities) and bounds the length.
func normalize(s string) string {
	s = reAddr.ReplaceAllString(s, "ADDR")
	s = reQuoted.ReplaceAllString(s, `"…"`)
	if len(s) > 140 {
		s = s[:140] + "…"
	}
	return s
}
