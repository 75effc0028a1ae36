package transport

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// ntlmChallenge is a minimal NTLM CHALLENGE message (MS-NLMP 2.2.1.2):
// NTLM, Unicode, extended session security, no target name or info.
func ntlmChallenge() []byte {
	b := append([]byte("NTLMSSP\x00"), 2, 0, 0, 0) // signature, type 2
	b = append(b, 0, 0, 0, 0, 48, 0, 0, 0)         // target name: empty, at 48
	b = binary.LittleEndian.AppendUint32(b, 1|1<<9|1<<19)
	b = append(b, []byte("8bytes!!")...)   // server challenge
	b = append(b, make([]byte, 8)...)      // reserved
	b = append(b, 0, 0, 0, 0, 48, 0, 0, 0) // target info: empty
	return b
}

// ntlmProxy is a fake HTTP proxy speaking NTLM's three messages; it
// checks their types and that AUTHENTICATE names user, then relays to
// the target. closeAfterChallenge makes it close the connection after
// its 407, as a proxy that cannot do NTLM would.
func ntlmProxy(t *testing.T, user string, closeAfterChallenge bool, got chan<- []string) string {
	return fakeProxy(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var auths []string
		defer func() { got <- auths }()
		read := func() (target, auth string) {
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "\r\n" {
					return
				}
				if f := strings.Fields(line); len(f) == 3 && f[0] == "CONNECT" {
					target = f[1]
				}
				if v, ok := strings.CutPrefix(line, "Proxy-Authorization: "); ok {
					auth = strings.TrimSpace(v)
					auths = append(auths, auth)
				}
			}
		}
		msgType := func(auth string) int {
			tok, ok := strings.CutPrefix(auth, "NTLM ")
			b, err := base64.StdEncoding.DecodeString(tok)
			if !ok || err != nil || len(b) < 12 || !bytes.HasPrefix(b, []byte("NTLMSSP\x00")) {
				return -1
			}
			return int(binary.LittleEndian.Uint32(b[8:12]))
		}
		_, auth := read()
		if msgType(auth) != 1 {
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
			return
		}
		body := "<html>auth needed</html>"
		hdr := "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM " + base64.StdEncoding.EncodeToString(ntlmChallenge()) +
			"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
		if closeAfterChallenge {
			io.WriteString(c, hdr+"Connection: close\r\n\r\n"+body)
			return
		}
		io.WriteString(c, hdr+"\r\n"+body)
		target, auth := read()
		tok, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(auth, "NTLM "))
		if msgType(auth) != 3 || !bytes.Contains(tok, utf16le(user)) {
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		relay(c, target)
	})
}

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// TestHTTPConnectNTLM: a DOMAIN\user authenticates with NTLM on one
// connection (NEGOTIATE, CHALLENGE, AUTHENTICATE) and never sends Basic.
func TestHTTPConnectNTLM(t *testing.T) {
	dst := target(t)
	got := make(chan []string, 1)
	addr := ntlmProxy(t, "alice", false, got)
	p, _ := ParseProxy("http://" + addr)
	p, _ = p.WithAuth(`CORP\alice`, "s3cret")
	if p.AuthScheme() != "ntlm" {
		t.Errorf("AuthScheme = %q, want ntlm", p.AuthScheme())
	}
	conn, err := (&Dialer{Proxy: p}).DialContext(t.Context(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	checkTunnel(t, conn)
	conn.Close()
	auths := <-got
	if len(auths) != 2 {
		t.Fatalf("sent %d Proxy-Authorization headers, want 2 (NEGOTIATE, AUTHENTICATE): %q", len(auths), auths)
	}
	for _, a := range auths {
		if !strings.HasPrefix(a, "NTLM ") {
			t.Errorf("sent %q; a DOMAIN\\user must only ever send NTLM", a)
		}
	}
}

func TestHTTPConnectNTLMNeedsTheConnection(t *testing.T) {
	got := make(chan []string, 1)
	addr := ntlmProxy(t, "alice", true, got)
	p, _ := ParseProxy("http://" + addr)
	p, _ = p.WithAuth(`CORP\alice`, "s3cret")
	_, err := (&Dialer{Proxy: p}).DialContext(t.Context(), "tcp", "198.18.1.1:443")
	if err == nil || !strings.Contains(err.Error(), "NTLM needs the connection kept open") {
		t.Errorf("error %v, want one saying NTLM needs the connection kept open", err)
	}
	<-got
}

func TestHTTPConnectNTLMRefused(t *testing.T) {
	got := make(chan []string, 1)
	addr := ntlmProxy(t, "bob", false, got) // accepts only bob
	p, _ := ParseProxy("http://" + addr)
	p, _ = p.WithAuth(`CORP\alice`, "s3cret")
	_, err := (&Dialer{Proxy: p}).DialContext(t.Context(), "tcp", "198.18.1.1:443")
	var pe *ProxyError
	if !errors.As(err, &pe) || pe.Code != 407 || !strings.Contains(pe.Hint(), "did not accept the NTLM user and password") || !pe.Permanent() {
		t.Errorf("error %v, want a permanent 407 with an NTLM hint", err)
	}
	<-got
}
