package routing

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// ResolvConf is the file SetDNS manages when systemd-resolved is absent.
// It is written in place (not replaced), so a bind-mounted file, as
// `ip netns exec` sets up, keeps working.
var ResolvConf = "/etc/resolv.conf"

// The resolv.conf that SetDNS writes carries the content it replaced, as
// comment lines, so that the original comes back even after a crash
// (RestoreResolvConf, run by --cleanup), and so that a file somebody else
// rewrote in the meantime is recognized as not ours and left alone.
const (
	resolvMarker = "# tlsvpn: written by tunnelc while "
	resolvSaved  = "#tlsvpn-saved:" // base64 of the previous content, in chunks
	resolvChunk  = 64
)

// resolvConfContent returns the resolv.conf naming servers, with old
// (the content it replaces) saved in comments.
func resolvConfContent(ifname string, servers []netip.Addr, old []byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s is up; restored on exit\n", resolvMarker, ifname)
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	enc := base64.StdEncoding.EncodeToString(old)
	for len(enc) > 0 {
		n := min(len(enc), resolvChunk)
		fmt.Fprintf(&b, "%s%s\n", resolvSaved, enc[:n])
		enc = enc[n:]
	}
	if len(old) == 0 {
		b.WriteString(resolvSaved + "\n")
	}
	return []byte(b.String())
}

// savedResolvConf returns the previous content saved in a resolv.conf
// that SetDNS wrote; ours is false if content was not written by SetDNS.
func savedResolvConf(content []byte) (old []byte, ours bool, err error) {
	if !bytes.HasPrefix(content, []byte(resolvMarker)) {
		return nil, false, nil
	}
	var enc strings.Builder
	for _, line := range strings.Split(string(content), "\n") {
		if rest, ok := strings.CutPrefix(line, resolvSaved); ok {
			enc.WriteString(rest)
		}
	}
	old, err = base64.StdEncoding.DecodeString(enc.String())
	if err != nil {
		return nil, true, fmt.Errorf("saved resolv.conf content: %w", err)
	}
	return old, true, nil
}

// RestoreResolvConf puts back the content ResolvConf had before SetDNS
// rewrote it, if it still is SetDNS's (after a crash; a normal exit
// restores it already) and was written for the instance ifname or for one
// whose interface no longer exists: a tunnelc that still runs keeps its
// DNS settings whatever other instance is cleaned up. It reports whether
// it restored anything.
func RestoreResolvConf(ifname string) (bool, error) {
	content, err := os.ReadFile(ResolvConf)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	old, ours, err := savedResolvConf(content)
	if !ours || err != nil {
		return false, err
	}
	if w := resolvConfWriter(content); w != ifname && w != "" {
		if _, err := net.InterfaceByName(w); err == nil {
			return false, nil // another instance's, and it is up
		}
	}
	if err := os.WriteFile(ResolvConf, old, 0o644); err != nil {
		return false, fmt.Errorf("restore %s: %w", ResolvConf, err)
	}
	return true, nil
}

// resolvConfWriter returns the tunnel interface named in the first line
// of a resolv.conf that SetDNS wrote ("" if none).
func resolvConfWriter(content []byte) string {
	line, _, _ := bytes.Cut(content, []byte("\n"))
	rest, ok := bytes.CutPrefix(line, []byte(resolvMarker))
	if !ok {
		return ""
	}
	name, _, _ := bytes.Cut(rest, []byte(" "))
	return string(name)
}
